'use strict';

// Shared helpers of the interop suites: free ports, starting and stopping the
// server under test, awaiting events with failure guards, protoo-client peers.
//
// Timeouts here are failure guards only: every wait resolves on an event.

const { spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');
const readline = require('readline');
const protooClient = require('protoo-client');
const WebSocket = require('ws');

const INTEROP_DIR = path.resolve(__dirname, '..');
const ANCHOR = path.join(INTEROP_DIR, 'anchor', 'room-server.js');
// The ready line; anywhere in a stdout line, so a log prefix does no harm.
const LISTENING = /listening on ws:\/\/([^\s/]+)\//;

// Failure guards (ms).
const START_TIMEOUT = 20000;
const STOP_TIMEOUT = 5000;
const EVENT_TIMEOUT = 5000;

// Every child process we start, so that nothing outlives the test process even
// when a test fails or the runner aborts.
const children = new Set();

function killChildren()
{
	for (const child of children)
	{
		try
		{
			child.kill('SIGKILL');
		}
		catch (error)
		{
			// already gone
		}
	}
}

process.on('exit', killChildren);

// 'exit' does not run when a signal ends the process (the test runner
// cancelling a file, Ctrl-C): kill the children, then end as the signal would.
for (const [ signal, status ] of [ [ 'SIGINT', 130 ], [ 'SIGTERM', 143 ], [ 'SIGHUP', 129 ] ])
{
	process.once(signal, () =>
	{
		killChildren();
		process.exit(status);
	});
}

/** Resolve with `promise`, or reject after `ms` with a message naming `what`. */
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

/** The next `event` of `emitter` (its arguments: the first one, or all as an array). */
function once(emitter, event, { ms = EVENT_TIMEOUT, all = false } = {})
{
	let listener;
	const p = new Promise((resolve) =>
	{
		listener = (...args) => resolve(all ? args : args[0]);
		emitter.once(event, listener);
	});

	return withTimeout(p, ms, `"${event}"`).catch((error) =>
	{
		emitter.removeListener(event, listener);
		throw error;
	});
}

/** The name of whichever of `events` `emitter` emits first. */
function onceAny(emitter, events, { ms = EVENT_TIMEOUT } = {})
{
	const listeners = new Map();
	const p = new Promise((resolve) =>
	{
		for (const event of events)
		{
			const listener = () => resolve(event);

			listeners.set(event, listener);
			emitter.once(event, listener);
		}
	});

	return withTimeout(p, ms, events.map((e) => `"${e}"`).join(' or ')).finally(() =>
	{
		for (const [ event, listener ] of listeners)
		{
			emitter.removeListener(event, listener);
		}
	});
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
function freePort()
{
	return new Promise((resolve, reject) =>
	{
		const server = net.createServer();

		server.unref();
		server.on('error', reject);
		server.listen(0, '127.0.0.1', () =>
		{
			const { port } = server.address();

			server.close(() => resolve(port));
		});
	});
}

/**
 * How to start the room server under test, from the environment:
 * PROTOO_ROOM_BIN (path of the built room example) or PROTOO_ROOM_CMD (a
 * command line split on white space, run in tests/interop), or `null`.
 */
function roomServerFromEnv()
{
	if (process.env.PROTOO_ROOM_BIN)
	{
		return {
			name    : `room example (${process.env.PROTOO_ROOM_BIN})`,
			command : [ path.resolve(INTEROP_DIR, process.env.PROTOO_ROOM_BIN) ]
		};
	}

	if (process.env.PROTOO_ROOM_CMD)
	{
		const command = process.env.PROTOO_ROOM_CMD.trim().split(/\s+/);

		return { name: `room server (${process.env.PROTOO_ROOM_CMD})`, command };
	}

	return null;
}

/** The Node anchor (protoo-server@4.0.8 implementing the room contract). */
function anchorServer()
{
	return { name: 'Node anchor (protoo-server 4.0.8)', command: [ process.execPath, ANCHOR ] };
}

/**
 * The redis-server binary for the cluster suites: PROTOO_REDIS_SERVER (a path,
 * absolute or relative to tests/interop, or a name looked up on PATH), else
 * `redis-server` from PATH. `null` when it cannot be found.
 */
function redisServerFromEnv()
{
	const name = process.env.PROTOO_REDIS_SERVER || 'redis-server';
	const candidates = name.includes(path.sep)
		? [ path.resolve(INTEROP_DIR, name) ]
		: (process.env.PATH || '').split(path.delimiter).filter(Boolean)
			.map((dir) => path.join(dir, name));

	for (const candidate of candidates)
	{
		try
		{
			fs.accessSync(candidate, fs.constants.X_OK);

			if (fs.statSync(candidate).isFile())
				return candidate;
		}
		catch (error)
		{
			// not there
		}
	}

	return null;
}

/** Whether a missing env var must fail instead of skip (set by `cargo xtask ci`). */
function requireAll()
{
	return process.env.PROTOO_INTEROP_REQUIRE === '1';
}

/**
 * A running server process. `url(query)` builds a WebSocket URL.
 */
class ServerProcess
{
	constructor(child, address, output)
	{
		this.child = child;
		this.address = address;
		this.output = output;
		this.port = Number(address.slice(address.lastIndexOf(':') + 1));
		this.exited = new Promise((resolve) =>
		{
			if (child.exitCode !== null || child.signalCode !== null)
				resolve({ code: child.exitCode, signal: child.signalCode });
			else
				child.once('exit', (code, signal) => resolve({ code, signal }));
		});
	}

	url(query = {})
	{
		const qs = new URLSearchParams(query).toString();

		return `ws://${this.address}/${qs ? `?${qs}` : ''}`;
	}

	/** SIGKILL: the abrupt end of every connection. */
	async kill()
	{
		this.child.kill('SIGKILL');

		return withTimeout(this.exited, STOP_TIMEOUT, 'the killed server to exit');
	}

	/** SIGTERM, then SIGKILL if it has not exited in time. Resolves with the exit status. */
	async stop()
	{
		if (this.child.exitCode !== null || this.child.signalCode !== null)
			return this.exited;

		this.child.kill('SIGTERM');

		try
		{
			return await withTimeout(this.exited, STOP_TIMEOUT, 'the server to exit on SIGTERM');
		}
		catch (error)
		{
			this.child.kill('SIGKILL');
			await this.exited;
			throw error;
		}
	}
}

/**
 * Run `startOnce(port)` on a free port, picked anew for each attempt if the
 * process exits first (the port was taken meanwhile); with `port` (a restart
 * on the same port), retry on that port.
 */
async function onAPort(port, attempts, startOnce)
{
	let lastError;

	for (let attempt = 1; attempt <= attempts; attempt++)
	{
		const p = port !== null ? port : await freePort();

		try
		{
			return await startOnce(p);
		}
		catch (error)
		{
			lastError = error;

			if (!error.exitedEarly)
				throw error;

			if (port !== null)
				await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
		}
	}

	throw lastError;
}

/**
 * Spawn `program` with `args` and wait until `ready(line)` returns something
 * for a line of its stdout; resolves with `make(child, value, output)`. Both
 * pipes are drained for the process's whole life, its last output kept for
 * failure messages; it joins `children`, so it never outlives the test
 * process; an exit first rejects with `exitedEarly` set.
 */
function spawnReady({ name, program, args, port, waitingFor, ready, make })
{
	const child = spawn(program, args, { cwd: INTEROP_DIR, stdio: [ 'ignore', 'pipe', 'pipe' ] });

	children.add(child);
	child.once('exit', () => children.delete(child));

	const output = { text: '' };
	const keep = (chunk) =>
	{
		output.text = (output.text + chunk).slice(-16384);
	};

	child.stderr.setEncoding('utf8');
	child.stderr.on('data', keep);

	const lines = readline.createInterface({ input: child.stdout });

	const readiness = new Promise((resolve, reject) =>
	{
		lines.on('line', (line) =>
		{
			keep(`${line}\n`);

			const value = ready(line);

			if (value !== null)
				resolve(value);
		});
		child.once('error', (error) => reject(error));
		child.once('exit', (code, signal) =>
		{
			const error = new Error(
				`${name} exited (code ${code}, signal ${signal}) before ${waitingFor} ` +
				`on 127.0.0.1:${port}; output:\n${output.text}`);

			error.exitedEarly = true;
			reject(error);
		});
	});

	return withTimeout(readiness, START_TIMEOUT, `${name}: ${waitingFor}`)
		.then((value) => make(child, value, output))
		.catch((error) =>
		{
			child.kill('SIGKILL');
			throw error;
		});
}

/**
 * Start `server.command` with `--listen 127.0.0.1:PORT` plus `args`, and wait
 * for its `listening on ws://ADDR/` line (see `onAPort` for the port).
 */
function startServer(server, { args = [], port = null, attempts = 5 } = {})
{
	const [ program, ...programArgs ] = server.command;

	return onAPort(port, attempts, (p) => spawnReady({
		name       : server.name,
		program,
		args       : [ ...programArgs, '--listen', `127.0.0.1:${p}`, ...args ],
		port       : p,
		waitingFor : 'listening',
		ready      : (line) =>
		{
			const match = LISTENING.exec(line);

			return match ? match[1] : null;
		},
		make : (child, address, output) => new ServerProcess(child, address, output)
	}));
}

// redis-server prints this on stdout once it accepts connections.
const REDIS_READY = /Ready to accept connections/;

/** A running redis-server; `url` is `redis://127.0.0.1:PORT`. */
class RedisProcess extends ServerProcess
{
	get url()
	{
		return `redis://${this.address}`;
	}
}

/**
 * Start redis-server (`bin`) on 127.0.0.1, no persistence, and wait for its
 * "Ready to accept connections" line (see `onAPort` for the port).
 */
function startRedis(bin, { port = null, attempts = 5 } = {})
{
	return onAPort(port, attempts, (p) => spawnReady({
		name    : 'redis-server',
		program : bin,
		args    : [ '--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
			'--daemonize', 'no', '--logfile', '' ],
		port       : p,
		waitingFor : 'it was ready',
		ready      : (line) => (REDIS_READY.test(line) ? true : null),
		make       : (child, _ready, output) => new RedisProcess(child, `127.0.0.1:${p}`, output)
	}));
}

/**
 * protoo-client peers of one test; `closeAll()` closes them (call it in
 * afterEach) so that no connection or retry timer outlives its test.
 */
class Clients
{
	constructor()
	{
		this._peers = new Set();
		this._sockets = new Set();
	}

	/**
	 * A protoo-client Peer on `url`, with small retry timeouts. Records every
	 * event in `peer.log` (an array of event names) for later assertions.
	 */
	peer(url, retry = { retries: 0 })
	{
		const transport = new protooClient.WebSocketTransport(url, { retry });
		const peer = new protooClient.Peer(transport);

		peer.log = [];

		for (const event of [ 'open', 'failed', 'disconnected', 'close' ])
		{
			peer.on(event, () => peer.log.push(event));
		}

		this._peers.add(peer);

		return peer;
	}

	/** A connected protoo-client Peer. */
	async open(url, retry)
	{
		const peer = this.peer(url, retry);

		await once(peer, 'open');

		return peer;
	}

	/**
	 * A raw `ws` client (no protoo-client in between). `protocols` defaults to
	 * `protoo`; pass `[]` to send no Sec-WebSocket-Protocol header.
	 */
	ws(url, protocols = 'protoo', options = {})
	{
		const socket = new WebSocket(url, protocols, options);

		socket.on('error', () => {});
		this._sockets.add(socket);

		return socket;
	}

	closeAll()
	{
		for (const peer of this._peers)
		{
			peer.close();
		}

		for (const socket of this._sockets)
		{
			socket.terminate();
		}

		this._peers.clear();
		this._sockets.clear();
	}
}

/**
 * Collects the notifications a protoo-client peer receives; `next(method)`
 * resolves with the next unseen one of that method.
 */
class Inbox
{
	constructor(peer)
	{
		this._items = [];
		this._waiters = [];

		peer.on('notification', (notification) =>
		{
			this._items.push(notification);
			this._wake();
		});
	}

	get all()
	{
		return this._items;
	}

	next(method, { ms = EVENT_TIMEOUT, where = () => true } = {})
	{
		const p = new Promise((resolve) =>
		{
			this._waiters.push({ method, where, resolve });
			this._wake();
		});

		return withTimeout(p, ms, `notification "${method}"`);
	}

	_wake()
	{
		for (const waiter of [ ...this._waiters ])
		{
			const index = this._items.findIndex(
				(n) => n.method === waiter.method && waiter.where(n.data));

			if (index === -1)
				continue;

			const [ item ] = this._items.splice(index, 1);

			this._waiters.splice(this._waiters.indexOf(waiter), 1);
			waiter.resolve(item.data);
		}
	}
}

/** A request that must fail: resolves with the error (code, message). */
async function rejection(promise)
{
	try
	{
		const data = await promise;

		throw Object.assign(
			new Error(`expected a rejection, got ${JSON.stringify(data)}`), { unexpected: true });
	}
	catch (error)
	{
		if (error.unexpected)
			throw error;

		return error;
	}
}

/**
 * Open a raw `ws` connection and report how the handshake ended:
 * `{ status }` for an HTTP response instead of 101, `{ open: true, protocol }`
 * when upgraded, `{ error }` when the client refused the 101.
 */
function handshake(clients, url, protocols)
{
	const socket = clients.ws(url, protocols);

	return withTimeout(new Promise((resolve) =>
	{
		socket.on('unexpected-response', (req, res) =>
		{
			resolve({ status: res.statusCode });
			res.resume();
			req.destroy();
		});
		socket.on('open', () => resolve({ open: true, protocol: socket.protocol }));
		// e.g. "Server sent no subprotocol": the 101 did not select `protoo`.
		socket.on('error', (error) => resolve({ error: error.message }));
	}), EVENT_TIMEOUT, `the handshake of ${url}`);
}

/** The close code and reason a raw `ws` client sees. */
function closeOf(socket, ms = EVENT_TIMEOUT)
{
	return withTimeout(new Promise((resolve) =>
	{
		socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
	}), ms, 'the WebSocket close');
}

/**
 * A TCP proxy in front of `target` ("host:port") whose connections can be cut
 * abruptly (TCP RST both ways) with `drop()`, without stopping the server.
 * `hold()` makes new connections wait (accepted, not yet forwarded) until
 * `release()`.
 */
async function tcpProxy(target)
{
	const host = target.slice(0, target.lastIndexOf(':'));
	const port = Number(target.slice(target.lastIndexOf(':') + 1));
	const pairs = new Set();
	const held = [];
	const connections = [];
	let holding = false;

	const forward = (downstream) =>
	{
		const upstream = net.connect(port, host);
		const pair = { downstream, upstream };

		pairs.add(pair);
		upstream.on('error', () => {});
		downstream.pipe(upstream);
		upstream.pipe(downstream);

		const end = () =>
		{
			pairs.delete(pair);
			downstream.destroy();
			upstream.destroy();
		};

		downstream.on('close', end);
		upstream.on('close', end);
	};

	const server = net.createServer((downstream) =>
	{
		connections.push(downstream);
		downstream.on('error', () => {});

		if (holding)
		{
			downstream.pause();
			held.push(downstream);
		}
		else
		{
			forward(downstream);
		}
	});

	await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));

	return {
		address : `127.0.0.1:${server.address().port}`,
		connections,
		hold()
		{
			holding = true;
		},
		release()
		{
			holding = false;

			for (const downstream of held.splice(0))
			{
				if (!downstream.destroyed)
					forward(downstream);
			}
		},
		drop()
		{
			for (const { downstream, upstream } of pairs)
			{
				downstream.resetAndDestroy();
				upstream.resetAndDestroy();
			}

			pairs.clear();
		},
		close()
		{
			this.drop();

			for (const downstream of held.splice(0))
			{
				downstream.destroy();
			}

			return new Promise((resolve) => server.close(resolve));
		}
	};
}

module.exports = {
	ANCHOR,
	EVENT_TIMEOUT,
	INTEROP_DIR,
	Clients,
	Inbox,
	anchorServer,
	children,
	closeOf,
	freePort,
	handshake,
	once,
	onceAny,
	redisServerFromEnv,
	rejection,
	requireAll,
	roomServerFromEnv,
	startRedis,
	startServer,
	tcpProxy,
	withTimeout
};
