'use strict';

// Direction 1: the real protoo-client@4.0.8 (and, where the wire itself is
// asserted, a raw `ws` client) against a server implementing the room contract
// (README.md, "The room contract"). Every case of protoo's own suite
// (versatica/protoo test/__tests__/test-client-server.js) is ported, with the
// server side driven through the room contract, plus the extra cases of
// issue 6.
//
// The same suite runs against the room example (our server) and against the
// Node anchor (protoo-server itself), so every expectation here is protoo's
// behaviour, not a quirk of our implementation.

const { describe, it, before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const {
	Clients,
	Inbox,
	closeOf,
	handshake,
	once,
	onceAny,
	rejection,
	startServer,
	tcpProxy,
	withTimeout
} = require('./harness');

// The server under test runs with this limit so that the size cases are cheap.
const MAX_MESSAGE_SIZE = 65536;
// `--resume-window 0`: protoo's semantics, which these cases pin down (a
// peer whose connection drops leaves at once; the same peerId again
// replaces the peer). The room example's default window (15 s) changes
// both; test/sessions-vs-rust-server.test.js covers it.
const SERVER_ARGS = [ '--max-message-size', String(MAX_MESSAGE_SIZE), '--resume-window', '0' ];
const CLOSED_REASON = 'closed by protoo-server';
// Still 4000 (protoo-client does not reconnect), told apart from other closes.
const REPLACED_REASON = 'replaced by a new connection';
// protoo-client retry options: quick retries so reconnection cases are fast.
const QUICK_RETRY = { retries: 100, factor: 1, minTimeout: 20, maxTimeout: 20 };

let roomCounter = 0;

/** A room id no other case uses. */
function freshRoom(name)
{
	roomCounter += 1;

	return `${name}-${process.pid}-${roomCounter}`;
}

/** Both peers `join` so that the cases hold whichever peers the app notifies. */
async function joinAll(...peers)
{
	for (const peer of peers)
	{
		await peer.request('join', { displayName: `name of ${peer.peerId}` });
	}
}

// protoo-client picks each request id at random in [0, 1e7]. When two
// requests in flight share an id, the server answers both, the client matches
// both answers to the later request (settling it with the earlier one's
// answer) and the earlier request's promise never settles. With n in flight
// that happens about once in 2e7 / n^2 runs: once in 2000 for 100, once in
// 500 for 201, once in 50 for ten rounds of 200. So the cases below with many
// requests in flight do not await every response.

/**
 * Sends `broadcast` with each of `datas` at once (pipelined) and does not
 * await the responses (see above). `failure` rejects as soon as any of these
 * requests fails; `answered()` is how many were answered so far (for failure
 * messages).
 */
function broadcastAll(sender, datas)
{
	let answered = 0;
	let failed = null;
	const failure = new Promise((resolve, reject) =>
	{
		failed = reject;
	});

	datas.forEach((data, index) =>
	{
		sender.request('broadcast', data).then(
			() =>
			{
				answered += 1;
			},
			(error) => failed(new Error(`broadcast ${index} failed: ${error.message}`)));
	});

	return { failure, answered: () => answered };
}

/**
 * Sends `count` `echo {i}` requests at once and resolves with the response of
 * each, `null` for the requests whose id another one of them shares (see
 * above: their responses are not told apart by the client; `shared` counts
 * them). The ids are read where protoo-client hands each request to its
 * transport (`peer._transport`, protoo-client 4.0.8), synchronously within
 * `peer.request()`.
 */
async function echoInFlight(peer, count)
{
	const transport = peer._transport;
	const ids = new Array(count);
	let pending;

	transport.send = function(message)
	{
		if (message.request && message.method === 'echo')
			ids[message.data.i] = message.id;

		return Object.getPrototypeOf(transport).send.call(this, message);
	};

	try
	{
		pending = Array.from({ length: count }, (_, i) => peer.request('echo', { i }));
	}
	finally
	{
		delete transport.send;
	}

	assert.equal(ids.filter((id) => id !== undefined).length, count, 'the ids of the echo requests');

	const uses = new Map();

	for (const id of ids)
	{
		uses.set(id, (uses.get(id) || 0) + 1);
	}

	const replies = await Promise.all(pending.map((p, i) =>
	{
		if (uses.get(ids[i]) === 1)
			return p;

		p.catch(() => {});

		return null;
	}));

	return { replies, shared: replies.filter((r) => r === null).length };
}

/**
 * @param {{name: string, command: string[]}|null} server - how to start it;
 *   `null` skips the suite with `skipReason`.
 */
function defineRoomSuite(server, { skipReason } = {})
{
	const title = server ? `protoo-client against ${server.name}` : 'protoo-client against the room server';

	describe(title, { skip: server ? false : skipReason, timeout: 60000 }, () =>
	{
		let srv;
		let clients;

		/** A connected protoo-client peer in `roomId` as `peerId`. */
		async function connect(roomId, peerId, retry)
		{
			const peer = await clients.open(srv.url({ roomId, peerId }), retry);

			peer.peerId = peerId;

			return peer;
		}

		before(async () =>
		{
			srv = await startServer(server, { args: SERVER_ARGS });
		});

		after(async () =>
		{
			if (srv)
				await srv.stop();
		});

		// Fresh per case; `afterEach` closes what the case opened.
		beforeEach(() =>
		{
			clients = new Clients();
		});

		afterEach(() =>
		{
			clients.closeAll();
		});

		describe('ported from protoo test-client-server.js', () =>
		{
			it('client connects to server (open)', async () =>
			{
				const peer = clients.peer(srv.url({ roomId: freshRoom('open'), peerId: 'A' }));

				assert.equal(peer.closed, false);
				assert.equal(peer.connected, false);

				await once(peer, 'open');

				assert.equal(peer.connected, true);
				assert.deepEqual(await peer.request('echo', { hello: 'world' }), { hello: 'world' });

				peer.close();

				assert.equal(peer.closed, true);
				assert.equal(peer.connected, false);
			});

			it('abrupt server-side drop (server process killed): client "disconnected", then reconnects', async () =>
			{
				// A server of its own, killed and restarted on the same port.
				let own = await startServer(server, { args: SERVER_ARGS });

				try
				{
					const peer = clients.peer(
						own.url({ roomId: freshRoom('kill'), peerId: 'A' }), QUICK_RETRY);

					await once(peer, 'open');

					const disconnected = once(peer, 'disconnected');

					await own.kill();
					await disconnected;

					assert.equal(peer.closed, false);
					assert.equal(peer.connected, false);

					const reopened = once(peer, 'open', { ms: 15000 });

					own = await startServer(server, { args: SERVER_ARGS, port: own.port, attempts: 20 });
					await reopened;

					assert.equal(peer.connected, true);
					assert.deepEqual(await peer.request('echo', { again: true }), { again: true });

					peer.close();

					assert.equal(peer.closed, true);
					assert.equal(peer.connected, false);
				}
				finally
				{
					await own.stop().catch(() => own.kill());
				}
			});

			it('graceful shutdown (SIGTERM): the server exits 0 and its clients see the end', async () =>
			{
				const own = await startServer(server, { args: SERVER_ARGS });

				try
				{
					const peer = clients.peer(own.url({ roomId: freshRoom('term'), peerId: 'A' }));

					await once(peer, 'open');

					// 4000 ("close") or another code ("disconnected", then a
					// reconnection attempt that fails): the contract leaves the
					// code to the server.
					const ended = onceAny(peer, [ 'close', 'disconnected' ]);

					assert.deepEqual(await own.stop(), { code: 0, signal: null });
					await ended;
				}
				finally
				{
					await own.stop().catch(() => own.kill());
				}
			});

			it('abrupt drop of the TCP connection (RST): client reconnects, server drops and re-admits the peer', async () =>
			{
				const roomId = freshRoom('rst');
				const proxy = await tcpProxy(srv.address);

				try
				{
					const observer = await connect(roomId, 'B');
					const observed = new Inbox(observer);
					const peer = clients.peer(
						`ws://${proxy.address}/?roomId=${roomId}&peerId=A`, QUICK_RETRY);

					peer.peerId = 'A';
					await once(peer, 'open');
					await joinAll(observer, peer);

					const disconnected = once(peer, 'disconnected');
					const reopened = once(peer, 'open');
					const gone = observed.next('peerClosed', { where: (d) => d.peerId === 'A' });

					// The reconnection waits in the proxy until the server has
					// noticed the dead connection and told the room.
					proxy.hold();
					proxy.drop();

					await disconnected;
					assert.equal(peer.closed, false);
					assert.equal(peer.connected, false);
					assert.deepEqual(await gone, { peerId: 'A' });

					proxy.release();
					await reopened;
					assert.equal(peer.connected, true);

					// Back in the room under the same peerId. "open" is the 101;
					// the server admits the peer into its room just after it,
					// so one answered request from the peer marks it admitted.
					const inbox = new Inbox(peer);

					await peer.request('echo', { ready: true });
					await observer.request('chat', { text: 'welcome back' });
					assert.deepEqual(
						await inbox.next('chat', { where: (d) => d.text === 'welcome back' }),
						{ peerId: 'B', text: 'welcome back' });
					assert.equal(proxy.connections.length, 2);
				}
				finally
				{
					await proxy.close();
				}
			});

			it('server rejects connection request (1 retry): "failed" per attempt, then "close"', async () =>
			{
				// No roomId: the room app rejects the connection request (400).
				const peer = clients.peer(srv.url({ peerId: 'A' }), { retries: 1, minTimeout: 20, maxTimeout: 20 });
				const attempts = [];
				const closed = once(peer, 'close');

				// State at each "failed" (asserted below: a throw inside a
				// protoo-client listener would be swallowed).
				peer.on('failed', (attempt) =>
					attempts.push({ attempt, closed: peer.closed, connected: peer.connected }));

				await closed;

				assert.deepEqual(attempts, [
					{ attempt: 1, closed: false, connected: false },
					{ attempt: 2, closed: false, connected: false }
				]);
				assert.equal(peer.closed, true);
				assert.equal(peer.connected, false);
				assert.deepEqual(peer.log, [ 'failed', 'failed', 'close' ]);
			});

			it('client sends request to server, server accepts (data arrives unchanged)', async () =>
			{
				const peer = await connect(freshRoom('req'), 'A');

				assert.deepEqual(await peer.request('echo', { foo: 'bar' }), { foo: 'bar' });

				// No data: protoo-client sends {} and the response data is {}.
				assert.deepEqual(await peer.request('echo'), {});

				// Awkward JSON survives the round trip exactly.
				const data =
				{
					text    : 'h\u00e9llo "quoted" \\ back\u0000slash \u2028 \ud83d\ude00 \t\n',
					numbers : [ 0, -1, 2.5, 1e21, 123456789012, -0.000001 ],
					nested  : { a: [ {}, [], null, true, false ], 'k\u00eay': { deep: [ [ [ 'x' ] ] ] } },
					empty   : ''
				};

				assert.deepEqual(await peer.request('echo', data), data);

				// Many in flight at once: every response matches its request
				// (but a pair that protoo-client gave the same id: see
				// echoInFlight).
				const { replies, shared } = await withTimeout(
					echoInFlight(peer, 100), 20000, 'the echo responses');

				assert.ok(shared <= 2, `${shared} of 100 requests share their id with another`);
				assert.deepEqual(
					replies,
					Array.from({ length: 100 }, (_, i) => (replies[i] === null ? null : { i })));
			});

			it('client sends request to server and server rejects it (code and reason arrive)', async () =>
			{
				const peer = await connect(freshRoom('reject'), 'A');
				const error = await rejection(peer.request('fail', { code: 503, reason: 'WHO KNOWS!' }));

				assert.equal(error.code, 503);
				assert.equal(error.message, 'WHO KNOWS!');

				const unknown = await rejection(peer.request('no-such-method', {}));

				assert.equal(unknown.code, 404);
				assert.equal(typeof unknown.message, 'string');

				// The connection stays usable after rejections.
				assert.deepEqual(await peer.request('echo', { still: 'here' }), { still: 'here' });
			});

			it('client sends request to server and the server handler fails (500)', async () =>
			{
				const peer = await connect(freshRoom('crash'), 'A');
				const error = await rejection(peer.request('crash', {}));

				assert.equal(error.code, 500);
				assert.equal(typeof error.message, 'string');
				assert.deepEqual(await peer.request('echo', { after: 'crash' }), { after: 'crash' });
			});

			it('client sends notification to server (relayed by the room as chat)', async () =>
			{
				const roomId = freshRoom('notify');
				const a = await connect(roomId, 'A');
				const b = await connect(roomId, 'B');

				await joinAll(a, b);

				const inbox = new Inbox(b);

				await a.notify('chat', { text: 'hello by notification' });

				assert.deepEqual(
					await inbox.next('chat'), { peerId: 'A', text: 'hello by notification' });

				// An unknown notification is ignored; the connection stays up.
				await a.notify('no-such-notification', { x: 1 });
				assert.deepEqual(await a.request('echo', { ok: 1 }), { ok: 1 });
			});

			it('server sends request to client, client accepts', async () =>
			{
				const peer = await connect(freshRoom('ask'), 'A');
				const seen = [];

				peer.once('request', (request, accept) =>
				{
					seen.push({ method: request.method, data: request.data });
					accept({ text: 'hi!' });
				});

				const data = await peer.request('ask', { method: 'hello', data: { foo: 'bar' } });

				assert.deepEqual(seen, [ { method: 'hello', data: { foo: 'bar' } } ]);
				assert.deepEqual(data, { response: { text: 'hi!' } });
			});

			it('server sends request to client and client rejects it (code and reason reach the server)', async () =>
			{
				const peer = await connect(freshRoom('ask-reject'), 'A');

				peer.once('request', (request, accept, reject) => reject(503, 'WHO KNOWS!'));

				const error = await rejection(
					peer.request('ask', { method: 'hello', data: { foo: 'bar' } }));

				assert.equal(error.code, 503);
				assert.equal(error.message, 'WHO KNOWS!');
			});

			it('server sends request to client and client throws (500 reaches the server)', async () =>
			{
				const peer = await connect(freshRoom('ask-throw'), 'A');

				peer.once('request', () =>
				{
					throw new Error('BOOM!!!');
				});

				const error = await rejection(
					peer.request('ask', { method: 'hello', data: { foo: 'bar' } }));

				assert.equal(error.code, 500);
				assert.match(error.message, /BOOM!!!/);
			});

			it('server sends notification to client', async () =>
			{
				const roomId = freshRoom('server-notify');
				const a = await connect(roomId, 'A');
				const b = await connect(roomId, 'B');

				await joinAll(a, b);

				const inbox = new Inbox(a);

				// `chat` request: the server notifies the others chat {peerId,text}.
				await b.request('chat', { text: 'hi A' });
				assert.deepEqual(await inbox.next('chat'), { peerId: 'B', text: 'hi A' });

				// `broadcast`: the others get `chat` with the request data unchanged.
				await b.request('broadcast', { foo: 'bar', list: [ 1, { two: 2 } ] });
				assert.deepEqual(await inbox.next('chat'), { foo: 'bar', list: [ 1, { two: 2 } ] });
			});

			it('server closes the peer (kick): client "close" without reconnecting, room told peerClosed', async () =>
			{
				const roomId = freshRoom('kick');
				const a = await connect(roomId, 'A', QUICK_RETRY);
				const b = await connect(roomId, 'B');

				await joinAll(a, b);

				const observed = new Inbox(b);
				const closed = once(a, 'close');

				a.request('kick').catch(() => {});
				await closed;

				assert.equal(a.closed, true);
				assert.equal(a.connected, false);
				// 4000: protoo-client gives up at once: no "disconnected", no retry.
				assert.deepEqual(a.log, [ 'open', 'close' ]);
				assert.deepEqual(
					await observed.next('peerClosed', { where: (d) => d.peerId === 'A' }),
					{ peerId: 'A' });

				// A new peer joining sees B only.
				const c = await connect(roomId, 'C');
				const joined = await c.request('join', { displayName: 'C' });

				assert.deepEqual(joined.peers.map((p) => p.id), [ 'B' ]);
			});
		});

		describe('joins, leaves and the wire (beyond protoo\'s suite)', () =>
		{
			it('join: the newcomer gets the joined peers, the others get newPeer', async () =>
			{
				const roomId = freshRoom('join');
				const a = await connect(roomId, 'A');
				const b = await connect(roomId, 'B');
				const aInbox = new Inbox(a);

				assert.deepEqual(await a.request('join', { displayName: 'Alice' }), { peers: [] });
				assert.deepEqual(
					await b.request('join', { displayName: 'Bob' }),
					{ peers: [ { id: 'A', displayName: 'Alice' } ] });
				assert.deepEqual(
					await aInbox.next('newPeer', { where: (d) => d.id === 'B' }),
					{ id: 'B', displayName: 'Bob' });

				// B leaves: A is told.
				b.close();
				assert.deepEqual(
					await aInbox.next('peerClosed', { where: (d) => d.peerId === 'B' }),
					{ peerId: 'B' });
			});

			it('rooms are separate; a peer that closes leaves its room (its peerId can be reused)', async () =>
			{
				const r1 = freshRoom('sep');
				const r2 = freshRoom('sep');
				const a1 = await connect(r1, 'A');
				const b1 = await connect(r1, 'B');
				const a2 = await connect(r2, 'A');
				const inbox1 = new Inbox(a1);
				const inbox2 = new Inbox(a2);

				await joinAll(a1, b1, a2);
				await b1.request('chat', { text: 'room one only' });
				assert.deepEqual(await inbox1.next('chat'), { peerId: 'B', text: 'room one only' });
				// a2 got nothing of room one: a round trip on it, then check.
				await a2.request('echo', {});
				assert.equal(inbox2.all.filter((n) => n.method === 'chat').length, 0);

				// a2 leaves (r2 is empty and goes), then the same ids again.
				const left = once(a2, 'close');

				a2.close();
				await left;

				const again = await connect(r2, 'A');

				assert.deepEqual(await again.request('join', { displayName: 'A again' }), { peers: [] });
			});

			it('missing subprotocol -> HTTP 403 (and a wrong one too)', async () =>
			{
				const url = srv.url({ roomId: freshRoom('proto'), peerId: 'A' });

				assert.deepEqual(await handshake(clients, url, []), { status: 403 });
				assert.deepEqual(await handshake(clients, url, [ 'not-protoo' ]), { status: 403 });
				// The right one is accepted and echoed back.
				assert.deepEqual(
					await handshake(clients, url, [ 'protoo' ]), { open: true, protocol: 'protoo' });
			});

			it('a rejected connection request carries the status the app chose (400)', async () =>
			{
				const roomId = freshRoom('status');

				assert.deepEqual(await handshake(clients, srv.url({ peerId: 'A' }), 'protoo'), { status: 400 });
				assert.deepEqual(await handshake(clients, srv.url({ roomId }), 'protoo'), { status: 400 });
				assert.deepEqual(await handshake(clients, srv.url({}), 'protoo'), { status: 400 });
				assert.deepEqual(
					await handshake(clients, srv.url({ roomId, peerId: '' }), 'protoo'), { status: 400 });
			});

			it('raw wire: kick closes with 4000 "closed by protoo-server"', async () =>
			{
				const socket = clients.ws(srv.url({ roomId: freshRoom('wire'), peerId: 'A' }));

				await once(socket, 'open');

				const closed = closeOf(socket);

				socket.send(JSON.stringify({ request: true, id: 1, method: 'kick', data: {} }));

				assert.deepEqual(await closed, { code: 4000, reason: CLOSED_REASON });
			});

			it('broadcast from one peer to 50 protoo-client peers: every message once and in order', async () =>
			{
				const RECEIVERS = 50;
				const MESSAGES = 200;
				const roomId = freshRoom('fanout');
				const receivers = await Promise.all(
					Array.from({ length: RECEIVERS }, (_, i) => connect(roomId, `r${i}`)));

				// Every receiver joined: the sender's join lists them all, so all
				// of them are in the room before the first broadcast. One after
				// another: 50 joins in flight would share an id once in 8000
				// runs (see broadcastAll).
				for (const r of receivers)
				{
					await r.request('join', { displayName: r.peerId });
				}

				const sender = await connect(roomId, 'sender');
				const { peers } = await sender.request('join', { displayName: 'sender' });

				assert.equal(peers.length, RECEIVERS);

				// What each receiver got so far: for the message of a failure.
				const got = new Map(receivers.map((r) => [ r.peerId, 0 ]));
				const done = receivers.map((receiver) => new Promise((resolve, reject) =>
				{
					receiver.on('notification', ({ method, data }) =>
					{
						if (method !== 'chat')
							return;

						const expected = got.get(receiver.peerId);

						if (data.seq === 'end')
						{
							if (expected === MESSAGES)
								resolve();
							else
								reject(new Error(`${receiver.peerId}: end after ${expected} messages`));

							return;
						}

						if (data.seq !== expected)
						{
							reject(new Error(
								`${receiver.peerId}: got seq ${data.seq}, expected ${expected}`));

							return;
						}

						got.set(receiver.peerId, expected + 1);
					});
				}));

				// All sent at once (pipelined), then a marker: in-order delivery
				// of the marker after exactly MESSAGES messages means each came
				// once. The responses are not awaited one by one (see
				// broadcastAll); a failed request fails the case at once.
				const datas = Array.from({ length: MESSAGES }, (_, seq) => ({ seq, pad: 'x'.repeat(64) }));
				const { failure, answered } = broadcastAll(sender, [ ...datas, { seq: 'end' } ]);

				try
				{
					await withTimeout(
						Promise.race([ Promise.all(done), failure ]),
						20000, 'every receiver to get every broadcast');
				}
				catch (error)
				{
					error.message += ` (answered ${answered()} of ${MESSAGES + 1}, received ` +
						`${JSON.stringify(Object.fromEntries(got))})`;
					throw error;
				}
			});

			it('a peer is in its room when its client opens: 20 open one after another, the first broadcasts 200 at once', async () =>
			{
				// No join, no answered request first: the client's open alone
				// must mean it is in the room (as with protoo-server). Ten
				// rounds, each in a room of its own.
				const PEERS = 20;
				const MESSAGES = 200;

				for (let round = 0; round < 10; round++)
				{
					const roomId = freshRoom('open-order');
					const peers = [];

					for (let i = 0; i < PEERS; i++)
					{
						peers.push(await connect(roomId, `p${i}`));
					}

					const [ sender, ...receivers ] = peers;
					// What each receiver got so far: for the message of a failure.
					const got = new Map(receivers.map((r) => [ r.peerId, 0 ]));
					const done = receivers.map((receiver) => new Promise((resolve, reject) =>
					{
						receiver.on('notification', ({ method, data }) =>
						{
							if (method !== 'chat')
								return;

							const expected = got.get(receiver.peerId);

							if (data.seq !== expected)
							{
								reject(new Error(
									`round ${round}, ${receiver.peerId}: got seq ${data.seq}, expected ${expected}`));

								return;
							}
							got.set(receiver.peerId, expected + 1);
							if (expected + 1 === MESSAGES)
								resolve();
						});
					}));
					// The responses are not awaited one by one (see
					// broadcastAll); a failed request fails the case at once.
					const { failure, answered } = broadcastAll(
						sender, Array.from({ length: MESSAGES }, (_, seq) => ({ seq })));

					try
					{
						await withTimeout(
							Promise.race([ Promise.all(done), failure ]),
							20000, 'every peer to get every broadcast');
					}
					catch (error)
					{
						error.message += ` (round ${round}, answered ${answered()} of ${MESSAGES}, ` +
							`received ${JSON.stringify(Object.fromEntries(got))})`;
						throw error;
					}
					for (const peer of peers)
					{
						peer.close();
					}
				}
			});

			it('duplicate peerId: the old peer is closed (4000, no reconnect), the new one works', async () =>
			{
				const roomId = freshRoom('dup');
				const old = await connect(roomId, 'X', QUICK_RETRY);
				const other = await connect(roomId, 'B');

				await joinAll(old, other);

				const oldClosed = once(old, 'close');
				const fresh = await connect(roomId, 'X');

				await oldClosed;
				assert.equal(old.closed, true);
				assert.deepEqual(old.log, [ 'open', 'close' ]);

				// The new X works and is the one in the room.
				assert.deepEqual(await fresh.request('echo', { fresh: true }), { fresh: true });
				await fresh.request('join', { displayName: 'new X' });

				const inbox = new Inbox(fresh);

				await other.request('chat', { text: 'to the new X' });
				assert.deepEqual(
					await inbox.next('chat', { where: (d) => d.text === 'to the new X' }),
					{ peerId: 'B', text: 'to the new X' });

				// On the wire: the replaced connection gets 4000, with the
				// replacement's reason.
				const wireRoom = freshRoom('dup-wire');
				const first = clients.ws(srv.url({ roomId: wireRoom, peerId: 'Y' }));

				await once(first, 'open');

				const firstClosed = closeOf(first);
				const second = clients.ws(srv.url({ roomId: wireRoom, peerId: 'Y' }));

				await once(second, 'open');
				// protoo-server says nothing more than it does for any close;
				// protoo-rs tells the replacement apart (same code).
				const replacedReason = server.name.startsWith('Node anchor') ? CLOSED_REASON : REPLACED_REASON;

				assert.deepEqual(await firstClosed, { code: 4000, reason: replacedReason });
			});

			it(`message size limit (${MAX_MESSAGE_SIZE} bytes): just under passes, over closes 1009`, async () =>
			{
				const roomId = freshRoom('size');

				// protoo-client (its Node transport fragments messages over
				// 16 KiB): a request just under the limit is answered.
				const peer = await connect(roomId, 'A');
				const overhead = JSON.stringify(
					{ request: true, id: 12345678, method: 'echo', data: { pad: '' } }).length;
				const pad = 'p'.repeat(MAX_MESSAGE_SIZE - overhead - 16);
				const echoed = await peer.request('echo', { pad });

				assert.equal(echoed.pad.length, pad.length);

				// Raw: exactly the limit passes (one unfragmented frame).
				const exact = clients.ws(srv.url({ roomId, peerId: 'exact' }));

				await once(exact, 'open');

				const head = '{"request":true,"id":7,"method":"echo","data":{"pad":"';
				const tail = '"}}';
				const exactText = head + 'e'.repeat(MAX_MESSAGE_SIZE - head.length - tail.length) + tail;

				assert.equal(Buffer.byteLength(exactText), MAX_MESSAGE_SIZE);

				const reply = once(exact, 'message');

				exact.send(exactText);

				const response = JSON.parse((await reply).toString());

				assert.equal(response.id, 7);
				assert.equal(response.ok, true);
				assert.equal(response.data.pad.length, MAX_MESSAGE_SIZE - head.length - tail.length);

				// One byte over, one frame: closed with 1009.
				const over = clients.ws(srv.url({ roomId, peerId: 'over' }));

				await once(over, 'open');

				const overClosed = closeOf(over);

				over.send(head + 'o'.repeat(MAX_MESSAGE_SIZE - head.length - tail.length + 1) + tail);
				assert.equal((await overClosed).code, 1009);

				// Over the limit in fragments no single one of which is: 1009 too.
				const fragmented = clients.ws(srv.url({ roomId, peerId: 'fragmented' }));

				await once(fragmented, 'open');

				const fragmentedClosed = closeOf(fragmented);
				const half = Math.ceil((MAX_MESSAGE_SIZE + 1) / 2);

				fragmented.send(head + 'f'.repeat(half - head.length), { fin: false });
				fragmented.send('f'.repeat(MAX_MESSAGE_SIZE + 1 - half - tail.length) + tail, { fin: true });
				assert.equal((await fragmentedClosed).code, 1009);

				// The others in the room are unaffected.
				assert.deepEqual(await peer.request('echo', { still: 'fine' }), { still: 'fine' });
			});
		});
	});
}

module.exports = { defineRoomSuite, MAX_MESSAGE_SIZE };
