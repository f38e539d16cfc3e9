'use strict';

// Direction 2: a peer program (our rust_peer example, or the JavaScript
// stand-in) against the real protoo-server@4.0.8 (lib/node-server.js).
// The program follows the script of README.md ("The rust_peer contract") and
// prints one JSON line per event; this suite asserts on those lines and on
// what the server saw.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('child_process');
const readline = require('readline');
const { INTEROP_DIR, children, withTimeout } = require('./harness');
const { startNodeServer } = require('./node-server');

const RUN_TIMEOUT = 15000;

/** The lines the program prints, in the order of each half of the script. */
const CLIENT_SIDE =
[
	{ event: 'open' },
	{ event: 'response', method: 'hello', ok: true, data: { text: 'hi!', received: { foo: 'bar' } } },
	{ event: 'response', method: 'reject-me', ok: false, errorCode: 503, errorReason: 'WHO KNOWS!' },
	{ event: 'response', method: 'throw-me', ok: false, errorCode: 500, errorReason: 'Error: BOOM!!!' },
	{ event: 'response', method: 'ready', ok: true, data: {} }
];
const SERVER_SIDE =
[
	{ event: 'request', method: 'add', data: { a: 2, b: 3 } },
	{ event: 'request', method: 'deny', data: {} },
	{ event: 'request', method: 'boom', data: {} },
	{ event: 'notification', method: 'bye', data: { reason: 'done' } }
];
const CLOSED = { event: 'closed', code: 4000, reason: 'closed by protoo-server' };

/** Whether `line` has every field of `expected` (extra fields are allowed). */
function matches(line, expected)
{
	return Object.entries(expected).every(([ key, value ]) =>
	{
		try
		{
			assert.deepStrictEqual(line[key], value);

			return true;
		}
		catch (error)
		{
			return false;
		}
	});
}

/** Run the program to its exit; resolves with `{ code, signal, lines, stderr }`. */
function runPeer(command, url)
{
	const [ program, ...args ] = command;
	const child = spawn(program, [ ...args, '--url', url ],
		{ cwd: INTEROP_DIR, stdio: [ 'ignore', 'pipe', 'pipe' ] });

	children.add(child);

	const lines = [];
	let stderr = '';

	child.stderr.setEncoding('utf8');
	child.stderr.on('data', (chunk) =>
	{
		stderr = (stderr + chunk).slice(-16384);
	});
	readline.createInterface({ input: child.stdout }).on('line', (text) =>
	{
		if (text.trim() === '')
			return;

		try
		{
			lines.push(JSON.parse(text));
		}
		catch (error)
		{
			lines.push({ event: 'unparsable', text });
		}
	});

	const exited = new Promise((resolve, reject) =>
	{
		child.once('error', reject);
		child.once('close', (code, signal) =>
		{
			children.delete(child);
			resolve({ code, signal, lines, stderr });
		});
	});

	return withTimeout(exited, RUN_TIMEOUT, `${program} to exit`).catch((error) =>
	{
		child.kill('SIGKILL');
		error.message += `\nlines so far: ${JSON.stringify(lines)}\nstderr: ${stderr}`;
		throw error;
	});
}

/**
 * @param {{name: string, command: string[]}|null} peer - the program; `null`
 *   skips with `skipReason`.
 */
function definePeerSuite(peer, { skipReason } = {})
{
	const title = peer ? `${peer.name} against protoo-server 4.0.8` : 'rust_peer against protoo-server 4.0.8';

	describe(title, { skip: peer ? false : skipReason, timeout: 30000 }, () =>
	{
		let server;

		after(async () =>
		{
			if (server)
				await server.close();
		});

		it('requests both ways (accept / reject / failing handler), notifications both ways, 4000 close', async () =>
		{
			server = await startNodeServer();

			let scriptError = null;

			server.events.on('error', (error) =>
			{
				scriptError = error;
			});

			const run = await runPeer(peer.command, server.url('rust'));
			const context = `\nlines: ${JSON.stringify(run.lines, null, 1)}\nstderr: ${run.stderr}`;

			assert.equal(scriptError, null);

			// The program: exit 0 after the close, every line an expected one.
			assert.equal(run.code, 0, `exit status${context}`);

			const expected = [ ...CLIENT_SIDE, ...SERVER_SIDE, CLOSED ];

			for (const line of run.lines)
			{
				assert.ok(
					expected.some((e) => matches(line, e)), `unexpected line ${JSON.stringify(line)}${context}`);
			}

			// Each expected line exactly once; each half of the script in order;
			// the close last.
			const positions = expected.map((e) =>
			{
				const found = run.lines
					.map((line, index) => (matches(line, e) ? index : -1))
					.filter((index) => index !== -1);

				assert.equal(found.length, 1, `${JSON.stringify(e)} seen ${found.length} times${context}`);

				return found[0];
			});
			const clientPositions = positions.slice(0, CLIENT_SIDE.length);
			const serverPositions = positions.slice(CLIENT_SIDE.length, -1);

			assert.deepEqual(clientPositions, [ ...clientPositions ].sort((a, b) => a - b), `client-side order${context}`);
			assert.deepEqual(serverPositions, [ ...serverPositions ].sort((a, b) => a - b), `server-side order${context}`);
			assert.equal(positions.at(-1), run.lines.length - 1, `"closed" must be the last line${context}`);

			// The server: one connection as peerId "rust"; the requests and the
			// notification arrived as sent, in order.
			const { seen } = server;

			assert.deepEqual(seen.connections.map((c) => c.peerId), [ 'rust' ]);
			assert.deepEqual(seen.requests, [
				{ method: 'hello', data: { foo: 'bar' } },
				{ method: 'reject-me', data: {} },
				{ method: 'throw-me', data: {} },
				{ method: 'ready', data: {} }
			]);
			assert.deepEqual(seen.notifications, [ { method: 'note', data: { n: 1 } } ]);
			assert.deepEqual(seen.notificationsBeforeReady, seen.notifications);

			// Its requests to the peer: accepted, rejected, failed.
			assert.deepEqual(seen.results.add, { ok: true, data: { sum: 5 } });
			assert.deepEqual(seen.results.deny, { ok: false, code: 403, message: 'denied' });
			assert.equal(seen.results.boom.ok, false);
			assert.equal(seen.results.boom.code, 500);
			assert.match(seen.results.boom.message, /BOOM!!!/);
			assert.equal(seen.closed, true);
		});
	});
}

module.exports = { definePeerSuite, CLIENT_SIDE, SERVER_SIDE, CLOSED };
