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
});
