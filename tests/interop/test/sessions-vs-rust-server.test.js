'use strict';

// Sessions that survive a blip (issue 27): the real protoo-client@4.0.8
// against the room example (PROTOO_ROOM_BIN) with its resume window, through
// a TCP proxy (lib/blip-proxy.js) that cuts, black-holes and holds
// connections. protoo-client is unchanged: it reconnects by itself at once
// after an established connection drops (any code but 4000), keeps its
// pending requests, and emits `disconnected` then `open`.
//
// Every wait resolves on an event; the timeouts are failure guards.

const { describe, it, before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
	Clients,
	closeOf,
	once,
	requireAll,
	roomServerFromEnv,
	startServer,
	withTimeout
} = require('../lib/harness');
const { blipProxy, closeOf: closeFrame, serverFrames } = require('../lib/blip-proxy');

const server = roomServerFromEnv();
const missing = 'set PROTOO_ROOM_BIN (the built room example) or PROTOO_ROOM_CMD';

// `--message-rate 0`: the streams below are about delivery, not the
// default rate limit (past it notifications are dropped).
const SERVER_ARGS = [ '--message-rate', '0' ];
// Reconnect attempts every 20 ms: a retry never waits on protoo-client's
// default back-off (1, 2, 4, 8 s).
const QUICK_RETRY = { retries: 100, factor: 1, minTimeout: 20, maxTimeout: 20 };
// core::session::TAKEN_OVER_REASON.
const TAKEN_OVER_REASON = 'session resumed on a new connection';

let roomCounter = 0;

function freshRoom(name)
{
	roomCounter += 1;

	return `${name}-${process.pid}-${roomCounter}`;
}

/**
 * Every notification `peer` receives, in order (`seen`), and a way to wait
 * for the first one from index `from` on that satisfies `test`.
 */
function recorder(peer)
{
	const seen = [];
	const waiters = new Set();

	peer.on('notification', ({ method, data }) =>
	{
		seen.push({ method, data });
		for (const waiter of [ ...waiters ])
		{
			if (waiter.check())
				waiters.delete(waiter);
		}
	});

	return {
		seen,
		/** Resolves with the index of the first match at or after `from`. */
		until(test, { from = 0, ms = 5000, what = 'a notification' } = {})
		{
			const p = new Promise((resolve) =>
			{
				const waiter = {
					check()
					{
						const index = seen.findIndex((n, i) => i >= from && test(n));

						if (index === -1)
							return false;
						resolve(index);

						return true;
					}
				};

				if (!waiter.check())
					waiters.add(waiter);
			});

			return withTimeout(p, ms, what);
		},
		/** The notifications about peers arriving or leaving. */
		presence()
		{
			return seen.filter((n) => n.method === 'newPeer' || n.method === 'peerClosed');
		}
	};
}

/** The `newPeer` a peer of these cases hears when `id` joins. */
const newPeer = (id) => ({ method: 'newPeer', data: { id, displayName: `name of ${id}` } });

const chatFrom = (peerId) => (n) => n.method === 'chat' && n.data.peerId === peerId;

/**
 * What `peer` says about the sequence numbers (`text.seq`) it got from
 * `from`: their order, how many are missing or repeated in `[lo, hi)`.
 */
function sequence(seen, from, lo, hi)
{
	const seqs = seen.filter(chatFrom(from)).map((n) => n.data.text.seq)
		.filter((seq) => seq >= lo && seq < hi);
	const unique = new Set(seqs);
	let missingCount = 0;

	for (let seq = lo; seq < hi; seq++)
	{
		if (!unique.has(seq))
			missingCount += 1;
	}

	return { seqs, missing: missingCount, repeated: seqs.length - unique.size };
}

if (!server && requireAll())
{
	it('room server under test is configured', () =>
	{
		throw new Error(`PROTOO_INTEROP_REQUIRE=1 but no server: ${missing}`);
	});
}
else
{
	describe('sessions: protoo-client through a blip, room example with its resume window',
		{ skip: server ? false : missing, timeout: 60000 }, () =>
		{
			let srv;
			let clients;
			let proxy;

			/** A protoo-client peer in `roomId` as `peerId`, through `via` (default: the server). */
			async function connect(roomId, peerId, { via = srv.address, retry = QUICK_RETRY } = {})
			{
				const peer = clients.peer(`ws://${via}/?roomId=${roomId}&peerId=${peerId}`, retry);

				peer.peerId = peerId;
				// Before `open`: a notification may come in the same read.
				peer.record = recorder(peer);
				await once(peer, 'open');

				return peer;
			}

			const join = (peer) => peer.request('join', { displayName: `name of ${peer.peerId}` });

			before(async () =>
			{
				// The example's default window (15 s).
				srv = await startServer(server, { args: SERVER_ARGS });
			});

			after(async () =>
			{
				if (srv)
					await srv.stop();
			});

			beforeEach(async () =>
			{
				clients = new Clients();
				proxy = await blipProxy(srv.address);
			});

			afterEach(async () =>
			{
				clients.closeAll();
				await proxy.close();
			});

			it('cut: the client reconnects by itself and resumes; what was sent meanwhile arrives once, in order; nobody sees it leave', async (t) =>
			{
				const roomId = freshRoom('cut');
				const a = await connect(roomId, 'A', { via: proxy.address });
				const b = await connect(roomId, 'B');
				const c = await connect(roomId, 'C');

				for (const peer of [ a, b, c ])
				{
					await join(peer);
				}
				// Each heard of the two others once.
				const heard = { A: [ 'B', 'C' ], B: [ 'A', 'C' ], C: [ 'A', 'B' ] };

				for (const peer of [ a, b, c ])
				{
					for (const id of heard[peer.peerId])
					{
						await peer.record.until((n) => n.method === 'newPeer' && n.data.id === id,
							{ what: `newPeer ${id}` });
					}
				}

				// A request from A that the server answers only after the cut:
				// `ask` makes the server ask A `hello`, and A answers that once
				// it is back.
				let answerHello;
				const helloAsked = new Promise((resolve) =>
				{
					a.on('request', (request, accept) =>
					{
						if (request.method === 'hello')
						{
							answerHello = accept;
							resolve();
						}
					});
				});
				const asked = a.request('ask', { method: 'hello', data: { before: 'the cut' } });

				await helloAsked;

				// B streams 200 chats; the proxy cuts A (both sides reset) the
				// moment A has read 100 of them, so the rest are in flight
				// somewhere: the proxy, A's socket, the server's. Reconnects
				// wait in the proxy until released.
				const disconnected = once(a, 'disconnected');

				a.on('notification', function cutAt100({ method, data })
				{
					if (method === 'chat' && data.peerId === 'B' && data.text.seq === 99)
					{
						a.removeListener('notification', cutAt100);
						proxy.hold();
						proxy.cut();
					}
				});
				for (let seq = 0; seq < 200; seq++)
				{
					b.notify('chat', { text: { seq } });
				}
				await disconnected;
				assert.equal(a.closed, false);
				// Handled in order: once B's echo is answered, its chats went
				// out to the room.
				await b.request('echo', {});

				// While A is away: 100 more from B, 10 from C.
				for (let seq = 200; seq < 300; seq++)
				{
					b.notify('chat', { text: { seq } });
				}
				for (let seq = 0; seq < 10; seq++)
				{
					c.notify('chat', { text: { seq } });
				}
				await b.request('echo', {});
				await c.request('echo', {});

				const reopened = once(a, 'open');
				const resumedAt = a.record.until((n) => n.method === 'resumed', { what: '"resumed"' });

				proxy.release();
				await reopened;
				const index = await resumedAt;
				const { missed } = a.record.seen[index].data;

				// Everything held came before `resumed`.
				const lastAway = a.record.seen.findIndex(
					(n) => chatFrom('B')(n) && n.data.text.seq === 299);
				const lastC = a.record.seen.findIndex((n) => chatFrom('C')(n) && n.data.text.seq === 9);

				assert.ok(lastAway !== -1 && lastAway < index, 'B\'s seq 299 before "resumed"');
				assert.ok(lastC !== -1 && lastC < index, 'C\'s last chat before "resumed"');
				assert.ok(Number.isInteger(missed) && missed >= 110, `missed ${missed}`);

				// Rejoining on `open` is idempotent: the list, nobody told.
				const answer = await join(a);

				assert.deepEqual(answer.peers.map((p) => p.id).sort(), [ 'B', 'C' ]);
				// The request sent before the cut is answered after it.
				answerHello({ text: 'late' });
				assert.deepEqual(await asked, { response: { text: 'late' } });

				// After the resume: 10 more, then a marker, to A.
				for (let seq = 300; seq < 310; seq++)
				{
					b.notify('chat', { text: { seq } });
				}
				b.notify('chat', { text: { seq: 310, end: true } });
				await a.record.until((n) => chatFrom('B')(n) && n.data.text.seq === 310,
					{ what: 'B\'s end marker' });
				// A speaks: the others hear it (the room sees one A).
				await a.request('chat', { text: 'back' });
				for (const peer of [ b, c ])
				{
					await peer.record.until((n) => chatFrom('A')(n) && n.data.text === 'back',
						{ what: 'A\'s chat after the resume' });
				}

				const beforeCut = sequence(a.record.seen, 'B', 0, 100);
				const around = sequence(a.record.seen, 'B', 100, 200);
				const away = sequence(a.record.seen, 'B', 200, 300);
				const afterResume = sequence(a.record.seen, 'B', 300, 311);
				const fromC = a.record.seen.filter(chatFrom('C')).map((n) => n.data.text.seq);

				t.diagnostic(
					`around the cut (seq 100-199, in flight): ${100 - around.missing} arrived, ` +
					`${around.missing} lost, ${around.repeated} twice; while away: ` +
					`${away.missing} lost, ${away.repeated} twice; resumed {missed: ${missed}}`);
				// Read before the cut: at least once, the repeats being what the
				// client read after its last confirmation (the transport writes
				// again what the client did not confirm: at least once).
				const firstsBefore = beforeCut.seqs.filter((seq, i) => beforeCut.seqs.indexOf(seq) === i);

				assert.deepEqual(firstsBefore, Array.from({ length: 100 }, (_, i) => i));
				t.diagnostic(`read before the cut and written again: ${beforeCut.repeated}`);
				// Sent after the loss was detected: exactly once, in order.
				assert.deepEqual(away.seqs, Array.from({ length: 100 }, (_, i) => 200 + i));
				assert.deepEqual(fromC, Array.from({ length: 10 }, (_, i) => i));
				assert.deepEqual(afterResume.seqs, Array.from({ length: 11 }, (_, i) => 300 + i));
				// In flight: each at least once (written again unless the client
				// confirmed it), in order of first arrival.
				const firsts = around.seqs.filter((seq, i) => around.seqs.indexOf(seq) === i);

				assert.deepEqual(firsts, Array.from({ length: 100 }, (_, i) => 100 + i));

				// One reconnect, no replacement; nobody saw A leave or arrive.
				assert.deepEqual(a.log, [ 'open', 'disconnected', 'open' ]);
				assert.equal(proxy.accepted, 2);
				for (const peer of [ a, b, c ])
				{
					assert.deepEqual(peer.record.presence(), heard[peer.peerId].map(newPeer));
				}
				assert.deepEqual(b.log, [ 'open' ]);
				assert.deepEqual(c.log, [ 'open' ]);
			});

			it('reconnections refused for a while: protoo-client retries by itself and resumes once let through', async () =>
			{
				const roomId = freshRoom('refused');
				const a = await connect(roomId, 'A', { via: proxy.address });
				const b = await connect(roomId, 'B');

				await join(b);
				await join(a);
				// Every attempt is reset at once until `allow()`.
				const refused = new Promise((resolve) =>
				{
					a.on('failed', () =>
					{
						if (a.log.filter((event) => event === 'failed').length === 3)
							resolve();
					});
				});

				proxy.refuse();
				proxy.cut();
				await withTimeout(refused, 5000, 'three refused attempts');
				for (let seq = 0; seq < 5; seq++)
				{
					b.notify('chat', { text: { seq } });
				}
				await b.request('echo', {});
				const resumedAt = a.record.until((n) => n.method === 'resumed', { what: '"resumed"' });

				proxy.allow();
				const { missed } = a.record.seen[await resumedAt].data;

				// The 5 held, and what the lost connection's client had not
				// confirmed (written again).
				assert.ok(missed >= 5, `missed ${missed}`);
				assert.deepEqual(sequence(a.record.seen, 'B', 0, 5).seqs, [ 0, 1, 2, 3, 4 ]);
				assert.deepEqual(a.log.slice(0, 2), [ 'open', 'disconnected' ]);
				assert.equal(a.log[a.log.length - 1], 'open');
				assert.deepEqual(b.record.presence(), [ newPeer('A') ]);
			});

			it('a clean close (protoo-client close()) ends the peer at once, window or not', async () =>
			{
				const roomId = freshRoom('clean');
				const a = await connect(roomId, 'A', { via: proxy.address });
				const b = await connect(roomId, 'B');

				await join(b);
				await join(a);
				const started = Date.now();

				a.close();
				// Within the 5 s guard, far less than the 15 s window.
				await b.record.until((n) => n.method === 'peerClosed' && n.data.peerId === 'A',
					{ what: 'peerClosed A' });
				assert.ok(Date.now() - started < 5000);
			});

			it('takeover: a black-holed socket the server still thinks open; the client reconnects, the old socket gets 4000', async () =>
			{
				const roomId = freshRoom('blackhole');
				const a = await connect(roomId, 'A', { via: proxy.address });
				const b = await connect(roomId, 'B');

				await join(b);
				await join(a);
				const [ old ] = proxy.pairs;

				// Nobody learns: the server keeps the old socket. Then A's side
				// is reset: A learns, reconnects at once (new connection,
				// forwarded), and the server hears of it only from there.
				proxy.blackhole();
				// The server's frames on the old socket, once it writes a close.
				const oldClosed = withTimeout(new Promise((resolve) =>
				{
					old.server.on('data', () =>
					{
						const frames = serverFrames(Buffer.concat(old.swallowed));
						const close = frames.find((frame) => frame.opcode === 0x8);

						if (close)
							resolve(closeFrame(close));
					});
				}), 5000, 'the close frame on the old socket');
				const resumedAt = a.record.until((n) => n.method === 'resumed', { what: '"resumed"' });
				const reopened = once(a, 'open');

				proxy.cutClient(old);
				await reopened;
				const { missed } = a.record.seen[await resumedAt].data;

				// Nothing was sent to A meanwhile; what the old socket's client
				// had not confirmed (the `join` answer, say) is written again.
				assert.ok(Number.isInteger(missed) && missed <= 2, `missed ${missed}`);
				assert.deepEqual(await oldClosed, { code: 4000, reason: TAKEN_OVER_REASON });
				assert.deepEqual((await join(a)).peers.map((p) => p.id), [ 'B' ]);
				await b.request('chat', { text: 'still here?' });
				await a.record.until((n) => chatFrom('B')(n) && n.data.text === 'still here?',
					{ what: 'B\'s chat on the new connection' });
				await a.request('chat', { text: 'yes' });
				await b.record.until((n) => chatFrom('A')(n) && n.data.text === 'yes',
					{ what: 'A\'s chat on the new connection' });
				assert.deepEqual(a.log, [ 'open', 'disconnected', 'open' ]);
				assert.deepEqual(b.record.presence(), [ newPeer('A') ]);
			});

			it('takeover by a second client (another tab): the first closes for good (4000), the room sees nothing', async () =>
			{
				const roomId = freshRoom('second-tab');
				const first = await connect(roomId, 'X');
				const b = await connect(roomId, 'B');

				await join(b);
				await join(first);
				const firstClosed = once(first, 'close');
				const second = await connect(roomId, 'X');

				await firstClosed;
				assert.deepEqual(first.log, [ 'open', 'close' ]);
				await second.record.until((n) => n.method === 'resumed', { what: '"resumed"' });
				assert.deepEqual((await join(second)).peers.map((p) => p.id), [ 'B' ]);
				await b.request('chat', { text: 'to the second tab' });
				await second.record.until((n) => chatFrom('B')(n) && n.data.text === 'to the second tab',
					{ what: 'B\'s chat' });
				assert.deepEqual(b.record.presence(), [ newPeer('X') ]);

				// On the wire: 4000 with the takeover's reason.
				const wireRoom = freshRoom('second-tab-wire');
				const url = `ws://${srv.address}/?roomId=${wireRoom}&peerId=Y`;
				const one = clients.ws(url);

				await once(one, 'open');
				const oneClosed = closeOf(one);
				const two = clients.ws(url);

				await once(two, 'open');
				assert.deepEqual(await oneClosed, { code: 4000, reason: TAKEN_OVER_REASON });
			});

			it('join twice: the list again, and no second newPeer', async () =>
			{
				const roomId = freshRoom('join-twice');
				const b = await connect(roomId, 'B');
				const a = await connect(roomId, 'A');

				await join(b);
				assert.deepEqual((await join(a)).peers, [ { id: 'B', displayName: 'name of B' } ]);
				assert.deepEqual(
					(await a.request('join', { displayName: 'another name' })).peers,
					[ { id: 'B', displayName: 'name of B' } ]);
				await a.request('chat', { text: 'marker' });
				await b.record.until((n) => chatFrom('A')(n) && n.data.text === 'marker', { what: 'the marker' });
				assert.deepEqual(b.record.presence(), [ newPeer('A') ]);
				// A newcomer lists A once, with the name it joined with first.
				const c = await connect(roomId, 'C');

				assert.deepEqual(
					(await join(c)).peers.sort((x, y) => x.id.localeCompare(y.id)),
					[ { id: 'A', displayName: 'name of A' }, { id: 'B', displayName: 'name of B' } ]);
			});
		});

	describe('sessions: no window (--resume-window 0, protoo\'s behaviour)',
		{ skip: server ? false : missing, timeout: 30000 }, () =>
		{
			let srv;
			let clients;
			let proxy;

			before(async () =>
			{
				srv = await startServer(server, { args: [ ...SERVER_ARGS, '--resume-window', '0' ] });
			});

			after(async () =>
			{
				if (srv)
					await srv.stop();
			});

			beforeEach(async () =>
			{
				clients = new Clients();
				proxy = await blipProxy(srv.address);
			});

			afterEach(async () =>
			{
				clients.closeAll();
				await proxy.close();
			});

			it('a cut peer leaves at once; the same peerId again replaces (1006 is not resumed)', async () =>
			{
				const roomId = freshRoom('no-window');
				const a = await clients.open(
					`ws://${proxy.address}/?roomId=${roomId}&peerId=A`, QUICK_RETRY);
				const b = await clients.open(`ws://${srv.address}/?roomId=${roomId}&peerId=B`);
				const aSeen = recorder(a);
				const bSeen = recorder(b);

				await b.request('join', { displayName: 'B' });
				await a.request('join', { displayName: 'A' });
				proxy.hold();
				proxy.cut();
				const gone = await bSeen.until((n) => n.method === 'peerClosed' && n.data.peerId === 'A',
					{ what: 'peerClosed A' });
				const reopened = once(a, 'open');

				proxy.release();
				await reopened;
				await a.request('join', { displayName: 'A' });
				await bSeen.until((n) => n.method === 'newPeer' && n.data.id === 'A',
					{ from: gone, what: 'newPeer A after it came back' });
				assert.deepEqual(aSeen.seen.filter((n) => n.method === 'resumed'), []);

				// A second connection with A's id replaces the first.
				const aClosed = once(a, 'close');
				const again = await clients.open(`ws://${srv.address}/?roomId=${roomId}&peerId=A`);

				await aClosed;
				await again.request('join', { displayName: 'A' });
				const closedAgain = await bSeen.until(
					(n) => n.method === 'peerClosed' && n.data.peerId === 'A', { from: gone + 1, what: 'peerClosed A' });

				await bSeen.until((n) => n.method === 'newPeer' && n.data.id === 'A',
					{ from: closedAgain, what: 'newPeer A after the replacement' });
			});
		});

	describe('sessions: beyond the window (--resume-window 1)',
		{ skip: server ? false : missing, timeout: 30000 }, () =>
		{
			let srv;
			let clients;
			let proxy;

			before(async () =>
			{
				srv = await startServer(server, { args: [ ...SERVER_ARGS, '--resume-window', '1' ] });
			});

			after(async () =>
			{
				if (srv)
					await srv.stop();
			});

			beforeEach(async () =>
			{
				clients = new Clients();
				proxy = await blipProxy(srv.address);
			});

			afterEach(async () =>
			{
				clients.closeAll();
				await proxy.close();
			});

			it('the session ends as today: the others get peerClosed after the window, the client comes back as new', async () =>
			{
				const roomId = freshRoom('expired');
				const a = await clients.open(
					`ws://${proxy.address}/?roomId=${roomId}&peerId=A`, QUICK_RETRY);
				const b = await clients.open(`ws://${srv.address}/?roomId=${roomId}&peerId=B`);
				const aSeen = recorder(a);
				const bSeen = recorder(b);

				await b.request('join', { displayName: 'B' });
				await a.request('join', { displayName: 'A' });

				// A's reconnects wait in the proxy until the window is over.
				const disconnected = once(a, 'disconnected');
				const started = Date.now();

				proxy.hold();
				proxy.cut();
				await disconnected;
				const gone = await bSeen.until((n) => n.method === 'peerClosed' && n.data.peerId === 'A',
					{ what: 'peerClosed A', ms: 10000 });
				const elapsed = Date.now() - started;

				assert.ok(elapsed >= 1000, `peerClosed after ${elapsed} ms, within the 1 s window`);

				// The held reconnect goes through now: a new peer, no resume.
				const reopened = once(a, 'open');

				proxy.release();
				await reopened;
				const answer = await a.request('join', { displayName: 'A again' });

				assert.deepEqual(answer.peers.map((p) => p.id), [ 'B' ]);
				await bSeen.until((n) => n.method === 'newPeer' && n.data.id === 'A',
					{ from: gone, what: 'newPeer A after it came back' });
				// `resumed` would have come before the join's answer.
				assert.deepEqual(aSeen.seen.filter((n) => n.method === 'resumed'), []);
			});
		});
}
