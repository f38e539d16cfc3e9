'use strict';

// A mediasoup-demo client's signalling, on the real protoo-client, for the
// sfu_room suite: what mediasoup-demo's app/src/RoomClient.js sends and
// answers, without the media (no mediasoup-client, no WebRTC): it creates a
// send and a receive transport, connects them, joins with the router's RTP
// capabilities as its own, produces with plausible RTP parameters, and
// accepts every `newConsumer` request, recording them.
//
// Every wait resolves on an event; timeouts are failure guards only.

const { EVENT_TIMEOUT, Inbox, once, withTimeout } = require('./harness');

/** A list that can be awaited until it satisfies a condition. */
class Recorder
{
	constructor()
	{
		this.items = [];
		this._waiters = [];
	}

	push(item)
	{
		this.items.push(item);

		for (const waiter of [ ...this._waiters ])
		{
			if (waiter.done(this.items))
			{
				this._waiters.splice(this._waiters.indexOf(waiter), 1);
				waiter.resolve(this.items);
			}
		}
	}

	/** Resolves with the items once `done(items)` holds. */
	until(done, what, ms = EVENT_TIMEOUT)
	{
		if (done(this.items))
			return Promise.resolve(this.items);

		const p = new Promise((resolve) => this._waiters.push({ done, resolve }));

		return withTimeout(p, ms, what).catch((error) =>
		{
			throw new Error(`${error.message}; have ${JSON.stringify(this.items)}`);
		});
	}

	/** Resolves with the first item matching `where`, present or to come. */
	first(where, what, ms)
	{
		return this.until((items) => items.some(where), what, ms)
			.then((items) => items.find(where));
	}
}

let ssrc = 1000;

/** RTP parameters as mediasoup-client sends them for a track of `kind`. */
function rtpParameters(kind)
{
	ssrc += 2;

	const codec = kind === 'audio'
		? { mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2,
			parameters: { useinbandfec: 1 }, rtcpFeedback: [] }
		: { mimeType: 'video/VP8', payloadType: 101, clockRate: 90000, parameters: {},
			rtcpFeedback: [ { type: 'nack' }, { type: 'nack', parameter: 'pli' } ] };

	return {
		mid              : String(ssrc),
		codecs           : [ codec ],
		headerExtensions : [],
		encodings        : [ { ssrc } ],
		rtcp             : { cname: `cname-${ssrc}`, reducedSize: true }
	};
}

const DTLS = {
	role         : 'client',
	fingerprints : [ { algorithm: 'sha-256', value: 'AA:BB:CC:DD' } ]
};

/**
 * One client of the SFU room: a protoo-client peer with `requests` (every
 * request the server sent it, in order), `notifications` (every
 * notification) and an `inbox` (Inbox of the harness).
 */
class SfuPeer
{
	/**
	 * @param {Clients} clients - the test's protoo-client peers
	 * @param {ServerProcess} server - the sfu_room process
	 * @param {object} query - the URL query (roomId, peerId, ...)
	 */
	constructor(clients, server, query)
	{
		this.id = query.peerId;
		this.displayName = `name of ${query.peerId}`;
		this.peer = clients.peer(server.url(query));
		this.requests = new Recorder();
		this.notifications = new Recorder();
		this.inbox = new Inbox(this.peer);
		this.consumers = new Map();

		this.peer.on('request', (request, accept, reject) =>
		{
			this.requests.push({ method: request.method, data: request.data });

			if (request.method === 'newConsumer')
			{
				this.consumers.set(request.data.id, request.data);
				accept();
			}
			else
			{
				reject(404, 'unexpected request');
			}
		});
		this.peer.on('notification', (notification) =>
		{
			this.notifications.push({ method: notification.method, data: notification.data });
		});
	}

	request(method, data = {})
	{
		return this.peer.request(method, data);
	}

	/** The `newConsumer` requests received so far. */
	get newConsumers()
	{
		return this.requests.items.filter((r) => r.method === 'newConsumer').map((r) => r.data);
	}

	/** The notifications of `method` received so far (their data). */
	seen(method)
	{
		return this.notifications.items.filter((n) => n.method === method).map((n) => n.data);
	}

	/** Resolves with the first notification `method` whose data matches `where`. */
	notified(method, where = () => true, ms)
	{
		return this.notifications.first(
			(n) => n.method === method && where(n.data), `${this.id}: notification "${method}"`, ms)
			.then((n) => n.data);
	}

	/** Resolves with the first `newConsumer` request whose data matches `where`. */
	asked(where = () => true, ms)
	{
		return this.requests.first(
			(r) => r.method === 'newConsumer' && where(r.data), `${this.id}: request "newConsumer"`, ms)
			.then((r) => r.data);
	}

	/** Opens, loads the router's capabilities, creates and connects both transports. */
	async setUp()
	{
		if (!this.peer.connected)
			await once(this.peer, 'open');

		this.rtpCapabilities = await this.request('getRouterRtpCapabilities');
		this.sendTransport = await this.request('createWebRtcTransport', {
			forceTcp         : false,
			producing        : true,
			consuming        : false,
			sctpCapabilities : { numStreams: { OS: 1024, MIS: 1024 } }
		});
		this.recvTransport = await this.request('createWebRtcTransport', {
			forceTcp         : false,
			producing        : false,
			consuming        : true,
			sctpCapabilities : { numStreams: { OS: 1024, MIS: 1024 } }
		});

		for (const transport of [ this.sendTransport, this.recvTransport ])
		{
			await this.request('connectWebRtcTransport', {
				transportId    : transport.id,
				dtlsParameters : DTLS
			});
		}

		return this;
	}

	/** `join`; resolves with the answer ({peers}). */
	join(displayName = this.displayName)
	{
		this.displayName = displayName;

		return this.request('join', {
			displayName,
			device           : { flag: 'node', name: 'protoo-client', version: '4.0.8' },
			rtpCapabilities  : this.rtpCapabilities,
			sctpCapabilities : { numStreams: { OS: 1024, MIS: 1024 } }
		});
	}

	/** `produce` a track of `kind` on the send transport; resolves with its id. */
	async produce(kind)
	{
		const { id } = await this.request('produce', {
			transportId   : this.sendTransport.id,
			kind,
			rtpParameters : rtpParameters(kind),
			appData       : { source: kind === 'audio' ? 'mic' : 'webcam' }
		});

		return id;
	}

	close()
	{
		this.peer.close();
	}
}

module.exports = { DTLS, Recorder, SfuPeer, rtpParameters };
