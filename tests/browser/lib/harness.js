'use strict';

// Shared helpers of the browser tests: the room example under test, headless
// Chromium through puppeteer-core, and waits on the page's DOM contract.
//
// Timeouts here are failure guards only: every wait resolves on an event or
// a DOM state.

const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const puppeteer = require('puppeteer-core');

const BROWSER_DIR = path.resolve(__dirname, '..');
// The ready line of the room example.
const LISTENING = /^listening on ws:\/\/([^\s/]+)\/$/;

// Failure guards (ms).
const START_TIMEOUT = 20000;
const STOP_TIMEOUT = 5000;
const WAIT_TIMEOUT = 10000;

// Every process we start, so that nothing outlives the test process.
const children = new Set();

function killChildren()
{
	for (const pid of children)
	{
		try
		{
			process.kill(pid, 'SIGKILL');
		}
		catch (error)
		{
			// already gone
		}
	}
}

process.on('exit', killChildren);
for (const [ signal, status ] of [ [ 'SIGINT', 130 ], [ 'SIGTERM', 143 ], [ 'SIGHUP', 129 ] ])
{
	process.once(signal, () =>
	{
		killChildren();
		process.exit(status);
	});
}

function withTimeout(promise, ms, what)
{
	let timer;
	const guard = new Promise((resolve, reject) =>
	{
		timer = setTimeout(
			() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
	});

	return Promise.race([ promise, guard ]).finally(() => clearTimeout(timer));
}

/** The room example binary (PROTOO_ROOM_BIN), or null. */
function roomBinary()
{
	return process.env.PROTOO_ROOM_BIN ?
		path.resolve(BROWSER_DIR, process.env.PROTOO_ROOM_BIN) : null;
}

/** Chromium's path: PROTOO_CHROMIUM, else Debian's /usr/bin/chromium, or null. */
function chromiumPath()
{
	const candidate = process.env.PROTOO_CHROMIUM || '/usr/bin/chromium';

	return fs.existsSync(candidate) ? candidate : null;
}

/**
 * Why the suite cannot run here (no room binary, no Chromium), or null.
 * With PROTOO_BROWSER_REQUIRE=1 (set by `cargo xtask ci`) that is a failure,
 * not a skip.
 */
function missing()
{
	let why = null;

	if (!roomBinary())
		why = 'PROTOO_ROOM_BIN is not set (cargo xtask ci sets it)';
	else if (!chromiumPath())
		why = 'no Chromium at /usr/bin/chromium (cargo xtask ci installs Debian\'s chromium)';
	if (why && process.env.PROTOO_BROWSER_REQUIRE === '1')
		throw new Error(why);

	return why;
}

/** A running room example. */
class RoomServer
{
	constructor(child, address)
	{
		this.child = child;
		this.address = address;
		this.port = Number(address.slice(address.lastIndexOf(':') + 1));
		this.exited = new Promise((resolve) =>
		{
			if (child.exitCode !== null || child.signalCode !== null)
				resolve();
			else
				child.once('exit', () => resolve());
		});
	}

	/** The page's URL with `query`. */
	url(query = {})
	{
		const qs = new URLSearchParams(query).toString();

		return `http://${this.address}/${qs ? `?${qs}` : ''}`;
	}

	/** SIGKILL by pid: every connection ends abruptly. */
	async kill()
	{
		try
		{
			process.kill(this.child.pid, 'SIGKILL');
		}
		catch (error)
		{
			// already gone
		}
		await withTimeout(this.exited, STOP_TIMEOUT, 'the room example to exit');
		children.delete(this.child.pid);
	}
}

/**
 * Starts the room example on `listen` (default 127.0.0.1:0) with `args`,
 * reads its address.
 */
async function startRoom(listen = '127.0.0.1:0', args = [])
{
	const child = spawn(roomBinary(), [ '--listen', listen, ...args ], {
		stdio : [ 'ignore', 'pipe', 'inherit' ]
	});

	children.add(child.pid);
	const lines = readline.createInterface({ input: child.stdout });
	const address = await withTimeout(new Promise((resolve, reject) =>
	{
		child.once('error', reject);
		child.once('exit', (code, signal) =>
			reject(new Error(`the room example exited (${code ?? signal}) before listening`)));
		lines.on('line', (line) =>
		{
			const match = LISTENING.exec(line);

			if (match)
				resolve(match[1]);
		});
	}), START_TIMEOUT, 'the room example to print its address');

	return new RoomServer(child, address);
}

/** Headless Chromium (Debian's), closed and killed by pid with `close()`. */
async function launchBrowser()
{
	const args = [ '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run' ];

	// Chromium's sandbox cannot start as root (containers, CI).
	if (typeof process.getuid === 'function' && process.getuid() === 0)
		args.push('--no-sandbox');
	const browser = await puppeteer.launch({
		executablePath : chromiumPath(),
		headless       : true,
		args
	});
	const pid = browser.process()?.pid;

	if (pid)
		children.add(pid);

	return {
		browser,
		async close()
		{
			try
			{
				await withTimeout(browser.close(), STOP_TIMEOUT, 'Chromium to close');
			}
			finally
			{
				if (pid)
				{
					try
					{
						process.kill(pid, 'SIGKILL');
					}
					catch (error)
					{
						// closed
					}
					children.delete(pid);
				}
			}
		}
	};
}

/**
 * A page of the room: records every `#status` value and every WebSocket the
 * page opens, then loads `url`.
 */
async function openRoomPage(browser, url, { width = 960, height = 640, refuseFirst = false } = {})
{
	const page = await browser.newPage();

	page.setDefaultTimeout(WAIT_TIMEOUT);
	await page.setViewport({ width, height });
	page.errors = [];
	page.on('pageerror', (error) => page.errors.push(error));
	// With `refuseFirst`, the page's first WebSocket goes to its URL without
	// the query: the room server really refuses it (400, no roomId). The
	// following ones go where the page says.
	await page.evaluateOnNewDocument((refuse) =>
	{
		window.__sockets = 0;
		const Native = window.WebSocket;

		window.WebSocket = class extends Native
		{
			constructor(target, ...rest)
			{
				const first = window.__sockets === 0 && refuse;
				const url = first ? String(target).split('?')[0] : target;

				super(url, ...rest);
				window.__sockets += 1;
			}
		};
		window.__statuses = [];
		document.addEventListener('DOMContentLoaded', () =>
		{
			const status = document.getElementById('status');
			const record = () =>
			{
				const value = status.textContent;

				if (window.__statuses[window.__statuses.length - 1] !== value)
					window.__statuses.push(value);
			};

			record();
			new MutationObserver(record).observe(status, { childList: true, characterData: true, subtree: true });
		});
	}, refuseFirst);
	await page.goto(url, { waitUntil: 'load' });

	return page;
}

// DOM waits re-check on every DOM change: the default, once a frame, never
// runs in a page that is not in front.
const POLL = { polling: 'mutation' };

/** Waits until `#status` reads `state`. */
function waitStatus(page, state)
{
	return page.waitForFunction(
		(s) => document.getElementById('status').textContent === s, POLL, state);
}

/** Waits until `#peers` lists exactly `ids` among the others (each once). */
function waitPeers(page, ids)
{
	return page.waitForFunction((wanted) =>
	{
		const self = window.protooRoom && window.protooRoom.peerId;
		const listed = [ ...document.querySelectorAll('#peers [data-peer-id]') ]
			.map((el) => el.getAttribute('data-peer-id'))
			.filter((id) => id !== self);

		return listed.length === wanted.length &&
			wanted.every((id) => listed.filter((other) => other === id).length === 1);
	}, POLL, ids);
}

/** Waits for a message from `from` whose text is `text`. */
function waitMessage(page, from, text)
{
	return page.waitForFunction((f, t) =>
		[ ...document.querySelectorAll('#messages [data-from]') ]
			.some((el) => el.getAttribute('data-from') === f && el.textContent.includes(t)),
	POLL, from, text);
}

/** Where screenshots go (printed by the tests): target/browser by default. */
function screenshotDir()
{
	const dir = process.env.PROTOO_SCREENSHOT_DIR ?
		path.resolve(process.env.PROTOO_SCREENSHOT_DIR) :
		path.resolve(BROWSER_DIR, '..', '..', 'target', 'browser');

	fs.mkdirSync(dir, { recursive: true });

	return dir;
}

module.exports = {
	launchBrowser,
	missing,
	openRoomPage,
	screenshotDir,
	startRoom,
	waitMessage,
	waitPeers,
	waitStatus,
	withTimeout
};
