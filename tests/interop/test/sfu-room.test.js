'use strict';

// The sfu_room example (PROTOO_SFU_BIN): mediasoup-demo's server/lib/Room.js
// signalling on protoo-rs, its media layer an in-memory stand-in. The real
// protoo-client drives it the way mediasoup-demo's client does
// (lib/sfu-peer.js); the broadcaster REST API is driven with fetch on the
// same port.
//
// Every wait resolves on an event, except `watch()`: a deliberate 300 ms look
// for requests that must NOT come (duplicates after the expected ones have
// all arrived), and the polling of GET /stats for a room's teardown.

const { describe, it, before, after, beforeEach, afterEach, test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const {
	Clients,
	INTEROP_DIR,
	closeOf,
	handshake,
	once,
	rejection,
	requireAll,
	startServer,
	withTimeout
} = require('../lib/harness');
const { DTLS, SfuPeer, rtpParameters } = require('../lib/sfu-peer');

const BIN = process.env.PROTOO_SFU_BIN;
const MISSING = 'set PROTOO_SFU_BIN (the built sfu_room example)';
const DEVICE = { flag: 'node', name: 'protoo-client', version: '4.0.8' };

/** The deliberate wait for what must not come (see the top). */
function watch()
{
	return new Promise((resolve) => setTimeout(resolve, 300));
}

if (!BIN && requireAll())
{
	test('sfu_room server under test is configured', () =>
	{
		throw new Error(`PROTOO_INTEROP_REQUIRE=1 but no server: ${MISSING}`);
	});
}
else
{
	describe('sfu_room: mediasoup-demo signalling on protoo-rs', { skip: BIN ? false : MISSING }, () =>
	{
		let server;
		let clients;
		let roomCounter = 0;

		before(async () =>
		{
			server = await startServer({
				name    : `sfu_room (${BIN})`,
				command : [ path.resolve(INTEROP_DIR, BIN || '') ]
			});
		});

		after(async () =>
		{
			if (server)
				assert.deepEqual(await server.stop(), { code: 0, signal: null });
		});

		beforeEach(() =>
		{
			clients = new Clients();
		});

		afterEach(() => clients.closeAll());

		const freshRoom = (name) => `${name}-${process.pid}-${++roomCounter}`;

		const connect = (roomId, peerId, extra = {}) =>
			new SfuPeer(clients, server, { roomId, peerId, ...extra });

		/** A peer that has set up its transports and joined; `answer` is the join's. */
		async function joined(roomId, peerId, extra)
		{
			const peer = connect(roomId, peerId, extra);

			await peer.setUp();
			peer.answer = await peer.join();

			return peer;
		}

		/** A round trip: whatever the server queued to `peer` before has arrived. */
		const settle = (peer) => peer.request('getRouterRtpCapabilities');

		/** An HTTP request to the server; resolves with {status, data}. */
		async function http(method, url, body)
		{
			const response = await withTimeout(fetch(`http://${server.address}${url}`, {
				method,
				headers : body ? { 'content-type': 'application/json' } : {},
				body    : body ? JSON.stringify(body) : undefined
			}), 5000, `${method} ${url}`);
			const text = await response.text();
			let data = text;

			try
			{
				data = JSON.parse(text);
			}
			catch (error)
			{
				// not JSON: kept as text
			}

			return { status: response.status, data };
		}

		/** Polls GET /stats until `done(stats)` holds (5 s at most). */
		async function statsUntil(done, what)
		{
			const deadline = Date.now() + 5000;
			let stats;

			for (;;)
			{
				stats = (await http('GET', '/stats')).data;

				if (done(stats))
					return stats;

				if (Date.now() > deadline)
					throw new Error(`timed out waiting for ${what}; last /stats: ${JSON.stringify(stats)}`);

				await new Promise((resolve) => setTimeout(resolve, 20));
			}
		}

		const roomIn = (stats, id) => stats.rooms.find((room) => room.id === id);

		it('two peers: join, produce, newConsumer answered, pause, close, changeDisplayName, leave', async () =>
		{
			const room = freshRoom('two');
			const a = await joined(room, 'a');

			assert.deepEqual(a.answer, { peers: [] });
			assert.equal(a.seen('mediasoup-version').length, 1);

			const b = await joined(room, 'b');

			assert.deepEqual(b.answer, { peers: [ { id: 'a', displayName: 'name of a', device: DEVICE } ] });
			assert.deepEqual(await a.notified('newPeer'), { id: 'b', displayName: 'name of b', device: DEVICE });

			// a produces: b is asked, answers, and the server resumes the consumer
			// (then sends its score).
			const audio = await a.produce('audio');
			const offer = await b.asked((c) => c.producerId === audio);

			assert.equal(offer.peerId, 'a');
			assert.equal(offer.kind, 'audio');
			assert.equal(offer.type, 'simple');
			assert.equal(offer.producerPaused, false);
			assert.equal(typeof offer.id, 'string');
			assert.equal(offer.rtpParameters.codecs[0].mimeType, 'audio/opus');
			assert.deepEqual(offer.appData, { source: 'mic', peerId: 'a' });
			await b.notified('consumerScore', (d) => d.consumerId === offer.id);

			// b produces: a is asked.
			const video = await b.produce('video');
			const offerToA = await a.asked((c) => c.producerId === video);

			assert.equal(offerToA.peerId, 'b');
			assert.equal(offerToA.kind, 'video');

			// The producer's pause and resume reach its consumer.
			await a.request('pauseProducer', { producerId: audio });
			await b.notified('consumerPaused', (d) => d.consumerId === offer.id);
			await a.request('resumeProducer', { producerId: audio });
			await b.notified('consumerResumed', (d) => d.consumerId === offer.id);

			// The consumer's own requests, stats and ICE restart.
			await b.request('pauseConsumer', { consumerId: offer.id });
			await b.request('resumeConsumer', { consumerId: offer.id });
			await b.request('setConsumerPreferredLayers', { consumerId: offer.id, spatialLayer: 1, temporalLayer: 1 });
			await b.request('setConsumerPriority', { consumerId: offer.id, priority: 2 });
			await b.request('requestConsumerKeyFrame', { consumerId: offer.id });
			assert.ok(Array.isArray(await b.request('getConsumerStats', { consumerId: offer.id })));
			assert.ok(Array.isArray(await a.request('getProducerStats', { producerId: audio })));
			assert.ok(Array.isArray(await a.request('getTransportStats', { transportId: a.sendTransport.id })));

			const ice = await a.request('restartIce', { transportId: a.sendTransport.id });

			assert.equal(typeof ice.usernameFragment, 'string');
			assert.notDeepEqual(ice, a.sendTransport.iceParameters);

			// closeProducer: the consumer closes and its peer is told.
			await a.request('closeProducer', { producerId: audio });
			assert.deepEqual(
				await b.notified('consumerClosed', (d) => d.consumerId === offer.id), { consumerId: offer.id });

			// changeDisplayName: the others are told, not the sender.
			await a.request('changeDisplayName', { displayName: 'Alice' });
			assert.deepEqual(
				await b.notified('peerDisplayNameChanged'),
				{ peerId: 'a', displayName: 'Alice', oldDisplayName: 'name of a' });

			await settle(a);
			await settle(b);
			assert.deepEqual(a.seen('peerDisplayNameChanged'), []);
			// Each was asked for the other's producer only.
			assert.deepEqual(a.newConsumers.map((c) => c.producerId), [ video ]);
			assert.deepEqual(b.newConsumers.map((c) => c.producerId), [ audio ]);

			// a leaves: b is told, and b's producer is no longer consumed by a.
			a.close();
			assert.deepEqual(await b.notified('peerClosed'), { peerId: 'a' });
		});

		it('answers errors as mediasoup-demo does: not joined, joined twice, unknown ids, bad data', async () =>
		{
			const room = freshRoom('errors');

			assert.deepEqual(await handshake(clients, server.url({ roomId: room })), { status: 400 });
			assert.deepEqual(await handshake(clients, server.url({ peerId: 'x' })), { status: 400 });

			const a = connect(room, 'a');

			await a.setUp();

			let error = await rejection(a.produce('audio'));

			assert.equal(error.code, 500);
			assert.match(error.message, /not yet joined/);

			await a.join();
			error = await rejection(a.join());
			assert.equal(error.code, 500);
			assert.match(error.message, /already joined/);

			error = await rejection(a.request('connectWebRtcTransport', { transportId: 'nope', dtlsParameters: DTLS }));
			assert.equal(error.code, 500);
			assert.match(error.message, /transport with id "nope" not found/);

			error = await rejection(a.request('closeProducer', { producerId: 'nope' }));
			assert.match(error.message, /producer with id "nope" not found/);

			error = await rejection(a.request('resumeConsumer', { consumerId: 'nope' }));
			assert.match(error.message, /consumer with id "nope" not found/);

			// Data that does not parse: 400 with serde's message.
			error = await rejection(a.request('produce', {
				transportId   : a.sendTransport.id,
				kind          : 'smell',
				rtpParameters : rtpParameters('audio')
			}));
			assert.equal(error.code, 400);
			// A missing id is not found, as in Room.js.
			error = await rejection(a.request('closeProducer', {}));
			assert.equal(error.code, 500);
			assert.match(error.message, /producer with id "" not found/);

			// A method Room.js does not know.
			error = await rejection(a.request('nonsense'));
			assert.equal(error.code, 404);
		});

		it('three peers, joined-only: a peer that has not joined is neither told nor asked nor listed', async () =>
		{
			const room = freshRoom('three');
			const a = await joined(room, 'a');
			// c is connected and has its transports, but has not joined.
			const c = connect(room, 'c');

			await c.setUp();

			const b = await joined(room, 'b');

			assert.deepEqual(b.answer.peers.map((p) => p.id), [ 'a' ]);
			await a.notified('newPeer', (d) => d.id === 'b');

			const audio = await a.produce('audio');

			await b.asked((x) => x.producerId === audio);
			await b.notified('consumerScore');
			await a.request('changeDisplayName', { displayName: 'Alice' });
			await b.notified('peerDisplayNameChanged');
			await settle(c);
			assert.deepEqual(c.newConsumers, []);
			assert.deepEqual(c.notifications.items.map((n) => n.method), [ 'mediasoup-version' ]);

			// A peer that leaves without having joined is not announced: its
			// close handshake completes before c leaves, then only c's leave is.
			const d = clients.ws(server.url({ roomId: room, peerId: 'd' }));

			await once(d, 'open');

			const dClosed = closeOf(d);

			d.close(1000);
			await dClosed;

			// c joins now: it lists a (with its new name) and b, is asked for a's
			// producer, and a and b are told.
			const answer = await c.join();

			assert.deepEqual(
				answer.peers.sort((x, y) => x.id.localeCompare(y.id)),
				[
					{ id: 'a', displayName: 'Alice', device: DEVICE },
					{ id: 'b', displayName: 'name of b', device: DEVICE }
				]);
			assert.equal((await c.asked((x) => x.producerId === audio)).peerId, 'a');
			await a.notified('newPeer', (x) => x.id === 'c');
			await b.notified('newPeer', (x) => x.id === 'c');

			c.close();
			assert.deepEqual(await a.notified('peerClosed'), { peerId: 'c' });
			assert.deepEqual(await b.notified('peerClosed'), { peerId: 'c' });
			assert.deepEqual(a.seen('peerClosed'), [ { peerId: 'c' } ]);
			assert.deepEqual(b.seen('peerClosed'), [ { peerId: 'c' } ]);
		});

		it('replacement: the same peerId again closes the old peer (4000); the others see peerClosed, then newPeer', async () =>
		{
			const room = freshRoom('replace');
			const a = await joined(room, 'a');
			const b = await joined(room, 'b');
			const audio = await a.produce('audio');
			const offer = await b.asked((x) => x.producerId === audio);
			const again = connect(room, 'a');

			// protoo-client gets a final close (4000), no reconnection.
			await once(a.peer, 'close');
			assert.ok(!a.peer.log.includes('disconnected'), a.peer.log.join());

			await again.setUp();

			const answer = await again.join();

			assert.deepEqual(answer.peers.map((p) => p.id), [ 'b' ]);
			await b.notified('newPeer', (x) => x.id === 'a');

			const order = b.notifications.items
				.filter((n) => [ 'peerClosed', 'newPeer' ].includes(n.method))
				.map((n) => `${n.method} ${n.data.peerId || n.data.id}`);

			assert.deepEqual(order, [ 'peerClosed a', 'newPeer a' ]);
			// The old peer's producer went with it.
			await b.notified('consumerClosed', (x) => x.consumerId === offer.id);
			await settle(again);
			assert.deepEqual(again.seen('peerClosed'), []);

			// On the wire: the replaced connection is closed with 4000.
			const raw = clients.ws(server.url({ roomId: room, peerId: 'x' }));

			await once(raw, 'open');

			const closing = closeOf(raw);

			await connect(room, 'x').setUp();
			assert.equal((await closing).code, 4000);
		});

		it('12 peers joining while 4 produce: every peer is asked exactly once per producer of another peer', async () =>
		{
			const room = freshRoom('race');
			const producers = [];

			for (let i = 0; i < 4; i++)
			{
				producers.push(await joined(room, `p${i}`));
			}

			const joiners = Array.from({ length: 12 }, (_, i) => connect(room, `j${i}`));

			await Promise.all(joiners.map((j) => j.setUp()));

			// All at once: 12 joins, and an audio and a video track from each producer.
			const [ , produced ] = await Promise.all([
				Promise.all(joiners.map((j) => j.join())),
				Promise.all(producers.map(async (p) =>
					({ peer: p.id, ids: await Promise.all([ p.produce('audio'), p.produce('video') ]) })))
			]);
			const owner = new Map();

			for (const { peer, ids } of produced)
			{
				for (const id of ids)
				{
					owner.set(id, peer);
				}
			}

			const everyone = [ ...producers, ...joiners ];
			const expected = (peer) =>
				[ ...owner ].filter(([ , o ]) => o !== peer.id).map(([ id ]) => id).sort();

			for (const peer of everyone)
			{
				const want = expected(peer).length;

				await peer.requests.until(
					(items) => items.filter((r) => r.method === 'newConsumer').length >= want,
					`${peer.id}: ${want} newConsumer requests`);
			}

			await watch();

			for (const peer of everyone)
			{
				assert.deepEqual(
					peer.newConsumers.map((c) => c.producerId).sort(), expected(peer),
					`${peer.id} is asked once per producer of another peer`);

				for (const offer of peer.newConsumers)
				{
					assert.equal(offer.peerId, owner.get(offer.producerId));
				}
			}
		});

		it('broadcasters over REST on the same port: newPeer, newConsumer, consume, DELETE -> peerClosed', async () =>
		{
			const room = freshRoom('broadcast');
			const base = `/rooms/${room}/broadcasters`;
			const a = await joined(room, 'a');
			const audio = await a.produce('audio');

			let response = await http('GET', `/rooms/${room}`);

			assert.equal(response.status, 200);
			assert.deepEqual(response.data, a.rtpCapabilities);

			response = await http('POST', base, { displayName: 'x', device: { name: 'y' } });
			assert.equal(response.status, 400, JSON.stringify(response.data));
			response = await http('POST', base, { id: 'bc', displayName: 'x', device: {} });
			assert.equal(response.status, 400, JSON.stringify(response.data));

			const broadcaster = {
				id              : 'bc',
				displayName     : 'Broadcaster',
				device          : { name: 'ffmpeg', version: '6.1' },
				rtpCapabilities : a.rtpCapabilities
			};

			response = await http('POST', base, broadcaster);
			assert.equal(response.status, 200, JSON.stringify(response.data));
			assert.deepEqual(response.data, {
				peers : [
					{ id: 'a', displayName: 'name of a', device: DEVICE, producers: [ { id: audio, kind: 'audio' } ] }
				]
			});
			assert.deepEqual(
				await a.notified('newPeer', (x) => x.id === 'bc'),
				{ id: 'bc', displayName: 'Broadcaster', device: { flag: 'broadcaster', name: 'ffmpeg', version: '6.1' } });
			response = await http('POST', base, broadcaster);
			assert.equal(response.status, 500, 'the same id twice');

			// A plain transport and a producer on it: the joined peer is asked.
			response = await http('POST', `${base}/bc/transports`, { type: 'plain', comedia: true, rtcpMux: false });
			assert.equal(response.status, 200, JSON.stringify(response.data));
			assert.equal(response.data.ip, '127.0.0.1');
			assert.equal(typeof response.data.port, 'number');
			assert.equal(response.data.rtcpPort, response.data.port + 1);

			const plain = response.data.id;

			response = await http('POST', `${base}/bc/transports/${plain}/producers`,
				{ kind: 'video', rtpParameters: rtpParameters('video') });
			assert.equal(response.status, 200, JSON.stringify(response.data));

			const video = response.data.id;
			const offer = await a.asked((x) => x.producerId === video);

			assert.equal(offer.peerId, 'bc');
			assert.equal(offer.kind, 'video');

			// A WebRTC transport: connect it, and consume a's audio on it.
			response = await http('POST', `${base}/bc/transports`, { type: 'webrtc' });
			assert.equal(response.status, 200, JSON.stringify(response.data));
			assert.ok(response.data.iceParameters && response.data.iceCandidates && response.data.dtlsParameters);

			const webrtc = response.data.id;

			response = await http('POST', `${base}/bc/transports/${webrtc}/connect`, { dtlsParameters: DTLS });
			assert.equal(response.status, 200, JSON.stringify(response.data));
			response = await http('POST', `${base}/bc/transports/${plain}/connect`, { dtlsParameters: DTLS });
			assert.equal(response.status, 500, 'a plain transport is not connected this way');
			response = await http('POST', `${base}/bc/transports/${webrtc}/consume?producerId=${audio}`);
			assert.equal(response.status, 200, JSON.stringify(response.data));
			assert.equal(response.data.producerId, audio);
			assert.equal(response.data.kind, 'audio');
			assert.equal(response.data.type, 'simple');
			assert.equal(typeof response.data.id, 'string');

			response = await http('POST', `${base}/nope/transports`, { type: 'webrtc' });
			assert.equal(response.status, 500);
			response = await http('POST', `${base}/bc/transports`, { type: 'carrier-pigeon' });
			assert.equal(response.status, 400);

			// A newcomer lists the broadcaster and is asked for its producer.
			const b = await joined(room, 'b');

			assert.deepEqual(b.answer.peers.map((p) => p.id).sort(), [ 'a', 'bc' ]);
			assert.equal((await b.asked((x) => x.producerId === video)).peerId, 'bc');
			b.close();
			await a.notified('peerClosed', (x) => x.peerId === 'b');

			// DELETE: the broadcaster's transports close (so does its producer's
			// consumer) and the joined peers are told.
			response = await http('DELETE', `${base}/bc`);
			assert.equal(response.status, 200);
			assert.deepEqual(await a.notified('peerClosed', (x) => x.peerId === 'bc'), { peerId: 'bc' });
			await a.notified('consumerClosed', (x) => x.consumerId === offer.id);
			response = await http('DELETE', `${base}/bc`);
			assert.equal(response.status, 500, 'already deleted');
		});

		it('consumerReplicas of the room\'s first connection is honoured', async () =>
		{
			const room = freshRoom('replicas');
			const a = await joined(room, 'a', { consumerReplicas: '2' });
			// A later connection's value does not change the room.
			const b = await joined(room, 'b', { consumerReplicas: '7' });
			const audio = await a.produce('audio');

			await b.requests.until(
				(items) => items.filter((r) => r.method === 'newConsumer').length >= 3, 'b: 3 newConsumer');
			await watch();

			const offers = b.newConsumers;

			assert.equal(offers.length, 3);
			assert.ok(offers.every((o) => o.producerId === audio && o.peerId === 'a'));
			assert.equal(new Set(offers.map((o) => o.id)).size, 3);
		});

		it('a room closes its router when it closes; a REST broadcaster holds its room open', async () =>
		{
			const room = freshRoom('teardown');
			const a = await joined(room, 'a');
			let stats = await http('GET', '/stats');

			assert.equal(stats.status, 200);
			assert.deepEqual(roomIn(stats.data, room), { id: room, peers: 1, broadcasters: 0 });

			a.close();
			await statsUntil(
				(s) => !roomIn(s, room) && s.routers === s.rooms.length, 'the room and its router closed');

			// A room made by a broadcaster, left by its only peer, stays open
			// until the broadcaster is deleted.
			const held = freshRoom('held');
			const response = await http('POST', `/rooms/${held}/broadcasters`,
				{ id: 'solo', displayName: 'Solo', device: { name: 'gstreamer' } });

			assert.equal(response.status, 200, JSON.stringify(response.data));
			assert.deepEqual(response.data, { peers: [] });

			const c = await joined(held, 'c');

			assert.deepEqual(c.answer.peers.map((p) => p.id), [ 'solo' ]);
			c.close();
			stats = await statsUntil((s) => roomIn(s, held)?.peers === 0, 'c gone from the held room');
			assert.deepEqual(roomIn(stats, held), { id: held, peers: 0, broadcasters: 1 });
			assert.equal((await http('DELETE', `/rooms/${held}/broadcasters/solo`)).status, 200);
			await statsUntil(
				(s) => !roomIn(s, held) && s.routers === s.rooms.length, 'the held room and its router closed');
		});
	});
}
