'use strict';

// The anchor's command-line interface, as the benchmarks use it: it prints
// `listening on ws://ADDR/`, answers echo, and exits 0 on SIGTERM / SIGINT,
// closing its peers with 4000 (protoo-client does not reconnect).

const { describe, it, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { Clients, anchorServer, once, startServer } = require('../lib/harness');

describe('anchor/room-server.js', { timeout: 30000 }, () =>
{
	const clients = new Clients();

	afterEach(() => clients.closeAll());

	for (const signal of [ 'SIGTERM', 'SIGINT' ])
	{
		it(`listens, echoes, and exits 0 on ${signal}`, async () =>
		{
			const srv = await startServer(anchorServer());

			try
			{
				assert.match(srv.address, /^127\.0\.0\.1:\d+$/);

				const peer = await clients.open(srv.url({ roomId: 'r', peerId: 'p' }));

				assert.deepEqual(await peer.request('echo', { n: 42, s: 'x' }), { n: 42, s: 'x' });

				const closed = once(peer, 'close');

				srv.child.kill(signal);
				await closed;
				assert.deepEqual(peer.log, [ 'open', 'close' ]);
				assert.deepEqual(await srv.exited, { code: 0, signal: null });
			}
			finally
			{
				await srv.stop().catch(() => srv.kill());
			}
		});
	}

	it('rejects bad arguments with exit code 2', async () =>
	{
		const { spawnSync } = require('child_process');
		const { ANCHOR } = require('../lib/harness');
		const result = spawnSync(process.execPath, [ ANCHOR, '--bogus', '1' ], { timeout: 10000 });

		assert.equal(result.status, 2);
		assert.match(result.stderr.toString(), /unknown argument --bogus/);
	});

	it('rejects --redis-prefix without --redis, and a --redis that is not a redis:// URL (exit 2)', () =>
	{
		const { spawnSync } = require('child_process');
		const { ANCHOR } = require('../lib/harness');

		for (const [ args, message ] of [
			[ [ '--redis-prefix', 'p' ], /--redis-prefix needs --redis/ ],
			[ [ '--redis', '127.0.0.1:6379' ], /--redis: expected redis:\/\/HOST:PORT/ ]
		])
		{
			const result = spawnSync(
				process.execPath, [ ANCHOR, '--listen', '127.0.0.1:0', ...args ], { timeout: 10000 });

			assert.equal(result.status, 2);
			assert.match(result.stderr.toString(), message);
		}
	});

	it('with --redis and no Redis: says so, keeps retrying, and exits 0 on SIGTERM', async () =>
	{
		const { spawn } = require('child_process');
		const readline = require('readline');
		const { ANCHOR, children, freePort, withTimeout } = require('../lib/harness');
		// A port nothing listens on.
		const port = await freePort();
		const child = spawn(
			process.execPath,
			[ ANCHOR, '--listen', '127.0.0.1:0', '--redis', `redis://127.0.0.1:${port}` ],
			{ stdio: [ 'ignore', 'ignore', 'pipe' ] });

		children.add(child);

		try
		{
			const lines = readline.createInterface({ input: child.stderr });
			const exited = new Promise((resolve) =>
				child.once('exit', (code, signal) => resolve({ code, signal })));

			await withTimeout(new Promise((resolve) => lines.on('line', (line) =>
			{
				if (/cannot reach Redis/.test(line))
					resolve();
			})), 10000, 'the anchor to report that Redis is unreachable');
			child.kill('SIGTERM');
			assert.deepEqual(
				await withTimeout(exited, 5000, 'the anchor to exit on SIGTERM'), { code: 0, signal: null });
		}
		finally
		{
			child.kill('SIGKILL');
			children.delete(child);
		}
	});
});
