'use strict';

// Sessions across processes (issue 27, items 6 and 7): the real
// protoo-client@4.0.8 against two room examples (PROTOO_ROOM_BIN, built with
// its `redis` feature) on a redis-server the suite starts, behind a
// round-robin TCP balancer (lib/balancer.js):
//
// - a client whose connection is cut comes back through the balancer on the
//   other node, and its session moves there: what was sent while it was
//   away arrives once, in order, then `resumed`; nobody sees it leave;
// - a rolling deploy: one node drains (SIGTERM: its connections closed with
//   1012 over --drain-period) while a stream of chats goes on; every client
//   of it comes back on the other node, no chat is lost or repeated, nobody
//   sees anyone leave, and the drained node exits once its sessions moved.
//
// Every process is stopped by pid at the end. Waits resolve on events; the
// timeouts are failure guards.

const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
	Clients,
	once,
	redisServerFromEnv,
	requireAll,
	roomServerFromEnv,
	startRedis,
	startServer,
	withTimeout
} = require('../lib/harness');
const { balancer } = require('../lib/balancer');

const server = roomServerFromEnv();
const redisBin = redisServerFromEnv();
const missing = 'set PROTOO_ROOM_BIN (the room example built with --features redis) or PROTOO_ROOM_CMD';
const noRedis = 'redis-server not found: install it (Debian: apt-get install redis-server) or set PROTOO_REDIS_SERVER';

// A resume window long enough for any reconnect here; a short drain.
const SERVER_ARGS = [ '--message-rate', '0', '--resume-window', '15', '--drain-period', '1' ];
// Reconnect attempts every 20 ms, not protoo-client's 1, 2, 4 s back-off.
const QUICK_RETRY = { retries: 200, factor: 1, minTimeout: 20, maxTimeout: 20 };

let roomCounter = 0;

function freshRoom(name)
{
	roomCounter += 1;

	return `${name}-${process.pid}-${roomCounter}`;
}

/** Records what `peer` gets; `until(test)` waits for a matching one. */
function recorder(peer)
{
	const seen = [];
	const waiters = new Set();

	peer.on('notification', (notification) =>
	{
		seen.push(notification);
		for (const waiter of [ ...waiters ])
		{
			if (waiter())
				waiters.delete(waiter);
		}
	});

	return {
		seen,
		until(test, what, ms = 10000)
		{
			return withTimeout(new Promise((resolve) =>
			{
				const waiter = () =>
				{
					const found = seen.find(test);

					if (found)
						resolve(found);

					return Boolean(found);
				};

				if (!waiter())
					waiters.add(waiter);
			}), ms, what);
		},
		presence()
		{
			return seen.filter((n) => n.method === 'newPeer' || n.method === 'peerClosed');
		}
	};
}

const chatSeq = (from) => (n) => n.method === 'chat' && n.data.peerId === from;

/** The sequence numbers `seen` got from `from`, and what is missing or repeated in [0, count). */
function sequence(seen, from, count)
{
	const seqs = seen.filter(chatSeq(from)).map((n) => n.data.text.seq);
	const unique = new Set(seqs);
	let missing = 0;

	for (let seq = 0; seq < count; seq++)
	{
		if (!unique.has(seq))
			missing += 1;
	}

	return { seqs, missing, repeated: seqs.length - unique.size };
}

if ((!server || !redisBin) && requireAll())
{
	it('room server and redis-server are configured', () =>
	{
		throw new Error(`PROTOO_INTEROP_REQUIRE=1 but ${!server ? missing : noRedis}`);
	});
}
else
{
	describe('sessions across nodes: two room examples on Redis behind a balancer',
		{ skip: !server ? missing : !redisBin ? noRedis : false, timeout: 90000 }, () =>
		{
			let redis;
			let nodes;
			let lb;
			let clients;

			beforeEach(async () =>
			{
				redis = await startRedis(redisBin);
				const prefix = `protoo-sessions-${process.pid}-${Date.now()}`;
				const args = [ '--redis', redis.url, '--redis-prefix', prefix, ...SERVER_ARGS ];

				nodes = await Promise.all([ 0, 1 ].map(() => startServer(server, { args })));
				lb = await balancer(nodes.map((node) => node.address));
				clients = new Clients();
			});

			afterEach(async () =>
			{
				clients.closeAll();
				await lb.close();
				for (const node of nodes)
				{
					await node.stop().catch(() => node.kill());
				}
				await redis.stop().catch(() => redis.kill());
			});

			/** A protoo-client peer as `peerId` in `roomId`, through `via` ("host:port"). */
			async function connect(via, roomId, peerId)
			{
				const peer = clients.peer(`ws://${via}/?roomId=${roomId}&peerId=${peerId}`, QUICK_RETRY);

				peer.peerId = peerId;
				peer.record = recorder(peer);
				await once(peer, 'open');
				await peer.request('join', { displayName: `name of ${peerId}` });

				return peer;
			}

			it('a client cut from one node resumes on the other: its session moves, what was sent meanwhile arrives once, in order', async (t) =>
			{
				const roomId = freshRoom('move');

				lb.set([ nodes[0].address ]);
				const a = await connect(lb.address, roomId, 'A');
				const b = await connect(nodes[1].address, roomId, 'B');
				const c = await connect(nodes[0].address, roomId, 'C');

				await a.record.until((n) => n.method === 'newPeer' && n.data.id === 'C', 'newPeer C');
				await b.record.until((n) => n.method === 'newPeer' && n.data.id === 'C', 'newPeer C');

				// A's connection is reset; the balancer now sends to node 1 only.
				lb.set([ nodes[1].address ]);
				const disconnected = once(a, 'disconnected');

				lb.cut();
				await disconnected;
				for (let seq = 0; seq < 50; seq++)
				{
					b.notify('chat', { text: { seq } });
				}
				await b.request('echo', {});
				const reopened = once(a, 'open');
				const resumed = a.record.until((n) => n.method === 'resumed', '"resumed"');

				await reopened;
				const { data: { missed } } = await resumed;

				// Then newer ones.
				b.notify('chat', { text: { seq: 50 } });
				await a.record.until((n) => chatSeq('B')(n) && n.data.text.seq === 50, 'B\'s seq 50');
				await a.request('chat', { text: 'back' });
				await b.record.until((n) => chatSeq('A')(n) && n.data.text === 'back', 'A\'s chat at B');
				await c.record.until((n) => chatSeq('A')(n) && n.data.text === 'back', 'A\'s chat at C');

				const got = sequence(a.record.seen, 'B', 51);
				const resumedAt = a.record.seen.findIndex((n) => n.method === 'resumed');
				const lastHeld = a.record.seen.findIndex((n) => chatSeq('B')(n) && n.data.text.seq === 49);

				t.diagnostic(`moved: resumed {missed: ${missed}}, ${got.missing} lost, ${got.repeated} twice`);
				assert.deepEqual(got.seqs, Array.from({ length: 51 }, (_, i) => i));
				assert.ok(lastHeld < resumedAt, 'what was held came before "resumed"');
				assert.equal(lb.routed.at(-1), nodes[1].address, 'A came back on node 1');
				// Nobody saw A leave or arrive again.
				assert.deepEqual(b.record.presence().map((n) => n.method), [ 'newPeer' ]);
				assert.deepEqual(c.record.presence(), []);
				assert.deepEqual(a.log, [ 'open', 'disconnected', 'open' ]);
			});

			it('a rolling deploy: one node drains during a stream of chats; every client resumes on the other, none lost, nobody leaves, the node exits', async (t) =>
			{
				const roomId = freshRoom('drain');
				const receivers = [];

				for (let i = 0; i < 6; i++)
				{
					receivers.push(await connect(lb.address, roomId, `R${i}`));
				}
				const onDrained = receivers.filter((_, i) => lb.routed[i] === nodes[0].address);

				assert.equal(onDrained.length, 3, 'the balancer spread them');
				const sender = await connect(nodes[1].address, roomId, 'S');

				for (const receiver of receivers)
				{
					await receiver.record.until((n) => n.method === 'newPeer' && n.data.id === 'S', 'newPeer S');
				}
				const COUNT = 300;
				let seq = 0;
				const stream = (async () =>
				{
					while (seq < COUNT)
					{
						sender.notify('chat', { text: { seq } });
						seq += 1;
						if (seq % 10 === 0)
							await sender.request('echo', {});
					}
				})();

				// Deploy node 0 after a third of the stream: the balancer takes
				// it out of the rotation, then it is told to stop.
				await receivers[0].record.until((n) => chatSeq('S')(n) && n.data.text.seq >= 100, 'seq 100');
				const started = Date.now();

				lb.remove(nodes[0].address);
				nodes[0].child.kill('SIGTERM');
				const resumedAll = Promise.all(onDrained.map((r) => r.record.until(
					(n) => n.method === 'resumed', `${r.peerId} resumed`, 20000)));

				try
				{
					await resumedAll;
				}
				catch (error)
				{
					error.message += `\n--- node 0:\n${nodes[0].output.text.slice(-3000)}\n--- node 1:\n${nodes[1].output.text.slice(-3000)}`;
					throw error;
				}
				const resumeMs = Date.now() - started;
				const exit = await withTimeout(nodes[0].exited, 20000, 'the drained node to exit');
				const exitMs = Date.now() - started;

				await stream;
				for (const receiver of receivers)
				{
					await receiver.record.until((n) => chatSeq('S')(n) && n.data.text.seq === COUNT - 1,
						`${receiver.peerId} got the last chat`);
				}
				let lost = 0;
				let repeated = 0;

				for (const receiver of receivers)
				{
					const got = sequence(receiver.record.seen, 'S', COUNT);

					lost += got.missing;
					repeated += got.repeated;
				}
				t.diagnostic(`drain: every session resumed after ${resumeMs} ms, node exited after ${exitMs} ms; ` +
					`${lost} lost, ${repeated} twice over ${receivers.length} x ${COUNT} chats`);
				assert.deepEqual(exit, { code: 0, signal: null });
				for (const receiver of receivers)
				{
					assert.deepEqual(sequence(receiver.record.seen, 'S', COUNT).seqs,
						Array.from({ length: COUNT }, (_, i) => i), `${receiver.peerId}'s stream`);
					// Nobody left or arrived but the joins.
					assert.ok(receiver.record.presence().every((n) => n.method === 'newPeer'),
						`${receiver.peerId} saw no peerClosed`);
				}
				assert.ok(sender.record.presence().every((n) => n.method === 'newPeer'));
				for (const receiver of onDrained)
				{
					assert.deepEqual(receiver.log, [ 'open', 'disconnected', 'open' ]);
				}
			});
		});
}
