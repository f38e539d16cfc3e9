'use strict';

// The room example's page in headless Chromium: three people chat, one
// leaves, one leaves for good (the server kicks it), the connection state
// follows a server restart; and the real protoo-client inside the page
// against the Rust server for the protocol itself.

const assert = require('node:assert/strict');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');
const {
	launchBrowser,
	missing,
	openRoomPage,
	screenshotDir,
	startRoom,
	waitMessage,
	waitPeers,
	waitStatus
} = require('../lib/harness');

const skip = missing();

describe('the room page in Chromium', { skip: skip || false }, () =>
{
	let server;
	let chromium;

	before(async () =>
	{
		// `--resume-window 0`: these cases are about protoo's semantics (a
		// peer whose socket ends leaves at once); sessions.test.js covers
		// the page across a blip with the default window.
		server = await startRoom('127.0.0.1:0', [ '--resume-window', '0' ]);
		chromium = await launchBrowser();
	});

	after(async () =>
	{
		await chromium?.close();
		await server?.kill();
	});

	const open = (query, viewport) =>
		openRoomPage(chromium.browser, server.url(query), viewport);

	test('three people join, chat, one leaves, one is kicked', async (t) =>
	{
		const room = 'book-club';
		const alice = await open({ roomId: room, peerId: 'alice', displayName: 'Alice Martin' });
		const bob = await open({ roomId: room, peerId: 'bob', displayName: 'Bob Chen' });
		const carol = await open({ roomId: room, peerId: 'carol', displayName: 'Carol Díaz' });

		for (const page of [ alice, bob, carol ])
		{
			await waitStatus(page, 'open');
		}
		await waitPeers(alice, [ 'bob', 'carol' ]);
		await waitPeers(bob, [ 'alice', 'carol' ]);
		await waitPeers(carol, [ 'alice', 'bob' ]);
		assert.equal(
			await alice.$eval('#peers [data-peer-id="carol"]', (el) => el.textContent), 'CDCarol Díaz');
		// Before the first open the page said connecting, then open.
		assert.deepEqual(await alice.evaluate(() => window.__statuses), [ 'connecting', 'open' ]);

		// Chat: Enter in #chat-input sends; everyone else sees it.
		const lines = [
			[ alice, 'alice', 'Has everyone finished chapter 3?' ],
			[ bob, 'bob', 'Almost! The ending surprised me.' ],
			[ carol, 'carol', 'Yes, ¡qué final! Same time next week?' ],
			[ alice, 'alice', 'Thursday at 7 works for me.' ]
		];

		for (const [ page, id, text ] of lines)
		{
			await page.type('#chat-input', text);
			await page.keyboard.press('Enter');
			for (const other of [ alice, bob, carol ])
			{
				await waitMessage(other, id, text);
			}
		}
		assert.equal(await alice.$eval('#chat-input', (el) => el.value), '');
		// Each page shows every line once, named and timed.
		const shown = await bob.$$eval('#messages [data-from]', (els) => els.map((el) => [
			el.getAttribute('data-from'),
			el.querySelector('.author').textContent,
			Boolean(el.querySelector('time[datetime]'))
		]));

		assert.deepEqual(shown, [
			[ 'alice', 'Alice Martin', true ],
			[ 'bob', 'You', true ],
			[ 'carol', 'Carol Díaz', true ],
			[ 'alice', 'Alice Martin', true ]
		]);

		const shot = path.join(screenshotDir(), 'three-peers.png');

		await alice.screenshot({ path: shot });
		t.diagnostic(`screenshot of three peers chatting: ${shot}`);

		// Carol closes her tab: she disappears from the others.
		await carol.close();
		await waitPeers(alice, [ 'bob' ]);
		await waitPeers(bob, [ 'alice' ]);

		// Bob leaves for good: his page sends `kick`, the server closes it
		// with 4000, the page shows closed and does not reconnect.
		await bob.click('#leave');
		await waitStatus(bob, 'closed');
		await waitPeers(alice, []);
		const state = await bob.evaluate(() => ({
			closed   : window.protooRoom.peer.closed,
			sockets  : window.__sockets,
			statuses : window.__statuses,
			disabled : document.getElementById('chat-input').disabled
		}));

		assert.deepEqual(state, {
			closed   : true,
			sockets  : 1,
			statuses : [ 'connecting', 'open', 'closed' ],
			disabled : true
		});
		// protoo-client would reconnect in the same task as the close; a
		// round trip later there is still one socket and no peer bob.
		assert.equal(await bob.evaluate(() => window.__sockets), 1);
		assert.equal(await alice.$('#peers [data-peer-id="bob"]'), null);

		for (const page of [ alice, bob ])
		{
			assert.deepEqual(page.errors, []);
			await page.close();
		}
	});

	test('names and chat text are shown as text, never as markup', async () =>
	{
		const mallory = await open({
			roomId      : 'markup',
			peerId      : 'mallory',
			displayName : '<img src=x id=injected-name>'
		});
		const victim = await open({ roomId: 'markup', peerId: 'victim', displayName: 'Vic' });

		await waitPeers(victim, [ 'mallory' ]);
		const text = '<b id="injected-bold">bold</b><script>window.pwned = 1</script> & more';

		await waitStatus(mallory, 'open');
		await mallory.type('#chat-input', text);
		await mallory.keyboard.press('Enter');
		await waitMessage(victim, 'mallory', text);
		const seen = await victim.evaluate(() => ({
			name      : document.querySelector('#peers [data-peer-id="mallory"] .name').textContent,
			author    : document.querySelector('#messages [data-from="mallory"] .author').textContent,
			elements  : document.querySelectorAll('#injected-name, #injected-bold, #messages script, #peers img').length,
			pwned     : 'pwned' in window
		}));

		assert.deepEqual(seen, {
			name     : '<img src=x id=injected-name>',
			author   : '<img src=x id=injected-name>',
			elements : 0,
			pwned    : false
		});
		await mallory.close();
		await victim.close();
	});

	test('usable at phone width', async () =>
	{
		const phone = await open({ roomId: 'phone', peerId: 'p1', displayName: 'Pat' }, { width: 360, height: 640 });
		const desk = await open({ roomId: 'phone', peerId: 'd1', displayName: 'Dee' });

		await waitStatus(phone, 'open');
		await waitPeers(phone, [ 'd1' ]);
		await phone.type('#chat-input', 'typed on a phone');
		await phone.keyboard.press('Enter');
		await waitMessage(desk, 'p1', 'typed on a phone');
		const layout = await phone.evaluate(() =>
		{
			const box = (id) => document.getElementById(id).getBoundingClientRect();
			const input = box('chat-input');

			return {
				overflow    : document.documentElement.scrollWidth > window.innerWidth,
				inputInView : input.left >= 0 && input.right <= window.innerWidth &&
					input.bottom <= window.innerHeight && input.width > 150,
				statusInView : box('status').right <= window.innerWidth,
				peersInView  : box('peers').top < window.innerHeight / 2
			};
		});

		assert.deepEqual(layout, {
			overflow     : false,
			inputInView  : true,
			statusInView : true,
			peersInView  : true
		});
		await phone.screenshot({ path: path.join(screenshotDir(), 'phone.png') });
		await phone.close();
		await desk.close();
	});

	test('the page is served with its content types and a strict CSP', async () =>
	{
		const expected = {
			'/'                 : 'text/html; charset=utf-8',
			'/app.js'           : 'text/javascript; charset=utf-8',
			'/app.css'          : 'text/css; charset=utf-8',
			'/protoo-client.js' : 'text/javascript; charset=utf-8',
			'/favicon.svg'      : 'image/svg+xml'
		};

		for (const [ file, type ] of Object.entries(expected))
		{
			const response = await fetch(`http://${server.address}${file}`);

			assert.equal(response.status, 200, file);
			assert.equal(response.headers.get('content-type'), type, file);
			const csp = response.headers.get('content-security-policy');

			assert.match(csp, /default-src 'none'/, file);
			assert.match(csp, /script-src 'self';/, file);
			assert.match(csp, /connect-src 'self';/, file);
			assert.doesNotMatch(csp, /unsafe|\*|https?:/, file);
			assert.equal(response.headers.get('x-content-type-options'), 'nosniff', file);
		}
		// Only the page's own files exist; a WebSocket URL without upgrade
		// headers is refused as before.
		const other = await fetch(`http://${server.address}/elsewhere`);

		assert.equal(other.status, 400);
	});

	test('the page asks nothing but its server', async () =>
	{
		const page = await chromium.browser.newPage();
		const requests = [];

		page.on('request', (request) => requests.push(request.url()));
		await page.goto(server.url({ roomId: 'solo', peerId: 'solo' }), { waitUntil: 'load' });
		await waitStatus(page, 'open');
		const origin = `http://${server.address}`;
		const ws = `ws://${server.address}/`;

		for (const url of requests)
		{
			assert.ok(url.startsWith(`${origin}/`) || url.startsWith(ws), url);
		}
		assert.ok(requests.some((url) => url.endsWith('/protoo-client.js')));

		// The CSP holds in the browser: no connection elsewhere, no inline
		// script, even when the page itself tries.
		const violations = await page.evaluate(() => new Promise((resolve) =>
		{
			const seen = [];

			document.addEventListener('securitypolicyviolation', (event) =>
			{
				seen.push(event.effectiveDirective);
				if (seen.length === 2)
					resolve(seen.sort());
			});
			fetch('http://127.0.0.1:9/').catch(() => {});
			const script = document.createElement('script');

			script.textContent = 'window.inlineRan = true';
			document.body.append(script);
		}));

		assert.deepEqual(violations, [ 'connect-src', 'script-src-elem' ]);
		assert.equal(await page.evaluate(() => 'inlineRan' in window), false);
		await page.close();
	});

	test('defaults: a random peer id in the default room', async () =>
	{
		const first = await openRoomPage(chromium.browser, `http://${server.address}/`);
		const second = await openRoomPage(chromium.browser, `http://${server.address}/`);

		await waitStatus(first, 'open');
		await waitStatus(second, 'open');
		const ids = await Promise.all([ first, second ].map((page) =>
			page.evaluate(() => [ window.protooRoom.roomId, window.protooRoom.peerId ])));

		assert.equal(ids[0][0], ids[1][0]);
		assert.notEqual(ids[0][1], ids[1][1]);
		assert.match(ids[0][1], /^[0-9a-f]{8}$/);
		await waitPeers(first, [ ids[1][1] ]);
		await first.close();
		await second.close();
	});
});

describe('the connection state', { skip: skip || false }, () =>
{
	let chromium;
	let server;

	before(async () =>
	{
		chromium = await launchBrowser();
	});

	after(async () =>
	{
		await chromium?.close();
		await server?.kill();
	});

	test('connecting through failed attempts until the first open', async () =>
	{
		server = await startRoom();
		const page = await openRoomPage(
			chromium.browser,
			server.url({ roomId: 'late', peerId: 'lee' }),
			{ refuseFirst: true });

		// protoo-client reports the refused attempt as failed and retries a
		// second later, this time with the room's query.
		await waitStatus(page, 'open');
		assert.deepEqual(
			await page.evaluate(() => [ window.__statuses, window.__sockets ]),
			[ [ 'connecting', 'open' ], 2 ]);
		await page.close();
		await server.kill();
		server = null;
	});

	test('disconnected while the server is down, open and rejoined after', async () =>
	{
		server = await startRoom();
		const query = { roomId: 'r', peerId: 'ann', displayName: 'Ann' };
		const ann = await openRoomPage(chromium.browser, server.url(query));
		const ben = await openRoomPage(chromium.browser, server.url({ ...query, peerId: 'ben', displayName: 'Ben' }));

		await waitPeers(ann, [ 'ben' ]);
		const { port } = server;

		await server.kill();
		await waitStatus(ann, 'reconnecting…');
		server = await startRoom(`127.0.0.1:${port}`);
		// Both reconnect on their own (protoo-client's retry) and join again.
		await waitStatus(ann, 'open');
		await waitStatus(ben, 'open');
		await waitPeers(ann, [ 'ben' ]);
		const statuses = await ann.evaluate(() => window.__statuses);

		assert.deepEqual(statuses, [ 'connecting', 'open', 'reconnecting…', 'open' ]);
		await ann.close();
		await ben.close();
	});
});
