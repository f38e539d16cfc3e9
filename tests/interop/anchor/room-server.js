#!/usr/bin/env node
'use strict';

// The Node anchor: the room contract of `examples/room/main.rs` implemented on the
// real protoo-server@4.0.8. The benchmarks run it side by side with our room
// example, and the interop suite runs against it as a reference, which shows
// that the suite's expectations are protoo's own semantics.
//
//   node anchor/room-server.js --listen 127.0.0.1:PORT [--max-message-size BYTES]
//                              [--ping-interval SECS] [--max-queue BYTES]
//                              [--message-rate N] [--byte-rate N] [--resume-window SECS]
//                              [--redis redis://HOST:PORT [--redis-prefix P]]
//
// Prints `listening on ws://ADDR/` on stdout once ready (ADDR is the bound
// address, so `--listen 127.0.0.1:0` works too). SIGTERM / SIGINT: every peer
// is closed (4000) and the process exits 0. Logs go to stderr only.
//
// Contract (see /tests/interop/README.md): URL `ws://HOST:PORT/?roomId=R&peerId=P`,
// missing either -> HTTP 400; subprotocol `protoo` required (403, by
// protoo-server itself). Rooms are created on demand and removed when empty.
// The same peerId again in a room closes the old peer (4000) and admits the new.
// Requests: join, chat, echo, broadcast, ask, fail, crash, kick; anything else
// -> 404. Notification `chat {text}` -> `chat {peerId,text}` to the others.
// A peer that leaves -> `peerClosed {peerId}` to the others.
//
// With `--redis`, several processes on the same Redis (and prefix) form one
// cluster: rooms span them (anchor/cluster.js says how). Without it, nothing
// here touches Redis.

const http = require('http');
const protoo = require('protoo-server');

const DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024;
const DEFAULT_REDIS_PREFIX = 'protoo';

function usage(message)
{
	process.stderr.write(
		`${message}\n` +
		'usage: room-server.js --listen HOST:PORT [--max-message-size BYTES] ' +
		'[--ping-interval SECS] [--max-queue BYTES] [--message-rate N] [--byte-rate N] ' +
		'[--resume-window SECS] ' +
		'[--redis redis://HOST:PORT [--redis-prefix P]]\n');
	process.exit(2);
}

function parseArgs(argv)
{
	const options =
	{
		listen         : null,
		maxMessageSize : DEFAULT_MAX_MESSAGE_SIZE,
		pingInterval   : null,
		maxQueue       : null,
		rateLimited    : false,
		resumeWindow   : false,
		redis          : null,
		redisPrefix    : null
	};

	for (let i = 0; i < argv.length; i++)
	{
		const arg = argv[i];
		let [ name, value ] = arg.split(/=(.*)/s, 2);

		if (value === undefined)
		{
			if (arg === '--help' || arg === '-h')
				usage('room-server.js: the protoo-server anchor of the room contract');

			value = argv[++i];
		}
		if (value === undefined)
			usage(`missing value for ${name}`);

		switch (name)
		{
			case '--listen':
				options.listen = value;
				break;
			case '--max-message-size':
				options.maxMessageSize = positiveInt(name, value);
				break;
			case '--ping-interval':
				options.pingInterval = nonNegativeNumber(name, value);
				break;
			case '--max-queue':
				options.maxQueue = positiveInt(name, value);
				break;
			// Our room example's rate limits; 0 (off) is what protoo-server does.
			case '--message-rate':
			case '--byte-rate':
				options.rateLimited = nonNegativeInt(name, value) > 0 || options.rateLimited;
				break;
			// Our room example's session window; 0 (none) is what
			// protoo-server does.
			case '--resume-window':
				options.resumeWindow = nonNegativeInt(name, value) > 0;
				break;
			case '--redis':
				if (!/^rediss?:\/\/./.test(value))
					usage(`--redis: expected redis://HOST:PORT, got ${value}`);
				options.redis = value;
				break;
			case '--redis-prefix':
				if (!value)
					usage('--redis-prefix: expected a non-empty prefix');
				options.redisPrefix = value;
				break;
			default:
				usage(`unknown argument ${arg}`);
		}
	}

	if (!options.listen)
		usage('--listen HOST:PORT is required');

	if (options.redisPrefix !== null && options.redis === null)
		usage('--redis-prefix needs --redis');

	const match = /^\[?([^\]]*?)\]?:(\d+)$/.exec(options.listen);

	if (!match)
		usage(`--listen: expected HOST:PORT, got ${options.listen}`);

	options.host = match[1];
	options.port = Number(match[2]);

	return options;
}

function positiveInt(name, value)
{
	const n = Number(value);

	if (!Number.isSafeInteger(n) || n <= 0)
		usage(`${name}: expected a positive integer, got ${value}`);

	return n;
}

function nonNegativeInt(name, value)
{
	const n = Number(value);

	if (!Number.isSafeInteger(n) || n < 0)
		usage(`${name}: expected a non-negative integer, got ${value}`);

	return n;
}

function nonNegativeNumber(name, value)
{
	const n = Number(value);

	if (!Number.isFinite(n) || n < 0)
		usage(`${name}: expected a number of seconds, got ${value}`);

	return n;
}

// A notification or request to a peer that closed meanwhile rejects: that is
// expected here and must not become an unhandled rejection.
function ignore() {}

class RoomApp
{
	constructor()
	{
		// roomId -> protoo.Room
		this._rooms = new Map();

		// The Cluster (anchor/cluster.js) with --redis, else null.
		this._cluster = null;

		// Set on shutdown: peers then leave without telling the others (that
		// would be n² notifications to peers that are closing anyway).
		this._closing = false;
	}

	get rooms()
	{
		return this._rooms;
	}

	set cluster(cluster)
	{
		this._cluster = cluster;
	}

	// The cluster's calls into the app (see anchor/cluster.js).

	localRooms()
	{
		return this._rooms;
	}

	/** A broadcast from another node: notify the local members but `except`. */
	deliver(roomId, except, method, data)
	{
		const room = this._rooms.get(roomId);

		if (!room)
			return;

		for (const peer of room.peers)
		{
			if (!except.includes(peer.id))
				peer.notify(method, data).catch(ignore);
		}
	}

	/** What the room is told about a member lost with its node. */
	lostMessage(roomId, peerId)
	{
		return { method: 'peerClosed', data: { peerId } };
	}

	onConnectionRequest(info, accept, reject)
	{
		let roomId;
		let peerId;

		try
		{
			const url = new URL(info.request.url, 'ws://localhost');

			roomId = url.searchParams.get('roomId');
			peerId = url.searchParams.get('peerId');
		}
		catch (error)
		{
			reject(400, 'invalid request URL');

			return;
		}

		if (!roomId || !peerId)
		{
			reject(400, 'roomId and peerId are required');

			return;
		}

		if (!this._cluster)
		{
			this._admit(roomId, peerId, accept, null);

			return;
		}

		// Cluster: take the presence field first; a peer with this id on
		// another node is closed there (and its departure announced) before
		// this connection is accepted. websocket-node lets accept() wait.
		const presence = this._cluster.presence(peerId, false, null);

		this._cluster.claim(roomId, peerId, presence)
			.then(() =>
			{
				if (!this._closing)
					this._admit(roomId, peerId, accept, presence);
			})
			.catch((error) => process.stderr.write(`admission failed: ${error.stack}\n`));
	}

	_admit(roomId, peerId, accept, presence)
	{
		// Same peerId again: the old peer goes (4000) and the new one takes its
		// place. Closing the old one may empty and remove the room, so the room
		// is looked up after that.
		const existing = this._rooms.get(roomId);
		const old = existing && existing.getPeer(peerId);

		if (old)
			old.close();

		const room = this._getOrCreateRoom(roomId);
		let peer;

		try
		{
			peer = room.createPeer(peerId, accept());
		}
		catch (error)
		{
			process.stderr.write(`createPeer failed: ${error}\n`);

			if (this._cluster)
				this._cluster.memberRemoved(roomId, peerId, presence);

			this._removeRoomIfEmpty(roomId, room);

			return;
		}

		peer.data.joined = false;
		peer.data.displayName = null;
		peer.data.presence = presence;

		if (this._cluster)
			this._cluster.memberAdded(roomId);

		peer.on('request', (request, accept2, reject2) =>
			this._onRequest(roomId, room, peer, request, accept2, reject2));
		peer.on('notification', (notification) =>
			this._onNotification(roomId, room, peer, notification));
		peer.on('close', () =>
		{
			if (this._closing)
				return;

			// Presence first: a join handled after the others got peerClosed
			// must not list this peer.
			if (this._cluster)
				this._cluster.memberRemoved(roomId, peer.id, peer.data.presence);

			this._broadcast(roomId, room, peer, 'peerClosed', { peerId: peer.id });
			this._removeRoomIfEmpty(roomId, room);
		});
	}

	closeAll()
	{
		this._closing = true;

		for (const room of this._rooms.values())
		{
			room.close();
		}

		this._rooms.clear();
	}

	_getOrCreateRoom(roomId)
	{
		let room = this._rooms.get(roomId);

		if (!room)
		{
			room = new protoo.Room();
			this._rooms.set(roomId, room);
		}

		return room;
	}

	_removeRoomIfEmpty(roomId, room)
	{
		if (room.peers.length > 0 || this._rooms.get(roomId) !== room)
			return;

		this._rooms.delete(roomId);
		room.close();

		if (this._cluster)
			this._cluster.roomRemoved(roomId);
	}

	_others(room, peer)
	{
		return room.peers.filter((other) => other !== peer);
	}

	/**
	 * Notify every member of the room but `peer`: the local ones here (one
	 * `peer.notify` each), the others through the cluster (published once).
	 */
	_broadcast(roomId, room, peer, method, data)
	{
		for (const other of this._others(room, peer))
		{
			other.notify(method, data).catch(ignore);
		}

		if (this._cluster)
			this._cluster.publish(roomId, [ peer.id ], method, data);
	}

	_onRequest(roomId, room, peer, request, accept, reject)
	{
		const data = request.data;

		switch (request.method)
		{
			case 'join':
			{
				const displayName =
					typeof data.displayName === 'string' ? data.displayName : peer.id;

				if (this._cluster)
				{
					this._joinCluster(roomId, room, peer, displayName, accept);

					break;
				}

				const peers = this._others(room, peer)
					.filter((other) => other.data.joined)
					.map((other) => ({ id: other.id, displayName: other.data.displayName }));

				peer.data.joined = true;
				peer.data.displayName = displayName;
				accept({ peers });

				for (const other of this._others(room, peer))
				{
					other.notify('newPeer', { id: peer.id, displayName }).catch(ignore);
				}

				break;
			}

			case 'chat':
			{
				this._chat(roomId, room, peer, data.text);
				accept({});

				break;
			}

			case 'echo':
			{
				accept(data);

				break;
			}

			case 'broadcast':
			{
				this._broadcast(roomId, room, peer, 'chat', data);
				accept({});

				break;
			}

			case 'ask':
			{
				if (typeof data.method !== 'string')
				{
					reject(400, 'ask: method must be a string');

					break;
				}

				peer.request(data.method, data.data)
					.then((response) => accept({ response }))
					.catch((error) =>
					{
						const code = typeof error.code === 'number' ? error.code : 500;

						reject(code, error.message);
					});

				break;
			}

			case 'fail':
			{
				const code = Number.isInteger(data.code) ? data.code : 500;
				const reason = typeof data.reason === 'string' ? data.reason : 'failed';

				reject(code, reason);

				break;
			}

			case 'crash':
			{
				// protoo-server answers 500 with String(error).
				throw new Error('crash requested');
			}

			case 'kick':
			{
				accept({});
				peer.close();

				break;
			}

			default:
			{
				reject(404, `unknown method ${request.method}`);
			}
		}
	}

	/**
	 * `join` in a cluster: the presence says joined (written before the read,
	 * on the same connection), the list comes from Redis (the local list
	 * while Redis is unreachable), then the others are told.
	 */
	async _joinCluster(roomId, room, peer, displayName, accept)
	{
		const previous = peer.data.presence;
		const presence = this._cluster.presence(peer.id, true, displayName);

		peer.data.joined = true;
		peer.data.displayName = displayName;
		peer.data.presence = presence;
		this._cluster.presenceSet(roomId, peer.id, previous, presence);

		let peers = await this._cluster.listed(roomId);

		if (peers === null)
		{
			peers = this._others(room, peer)
				.filter((other) => other.data.joined)
				.map((other) => ({ id: other.id, displayName: other.data.displayName }));
		}

		if (peer.closed)
			return;

		accept({ peers: peers.filter((other) => other.id !== peer.id) });
		this._broadcast(roomId, room, peer, 'newPeer', { id: peer.id, displayName });
	}

	_onNotification(roomId, room, peer, notification)
	{
		if (notification.method === 'chat')
			this._chat(roomId, room, peer, notification.data.text);
	}

	_chat(roomId, room, peer, text)
	{
		this._broadcast(roomId, room, peer, 'chat', { peerId: peer.id, text });
	}
}

async function main()
{
	const options = parseArgs(process.argv.slice(2));

	if (options.maxQueue !== null)
	{
		process.stderr.write(
			'note: --max-queue has no equivalent in protoo-server (its queues are unbounded); ignored\n');
	}

	if (options.rateLimited)
	{
		process.stderr.write(
			'note: --message-rate / --byte-rate have no equivalent in protoo-server (no rate limits); ignored\n');
	}

	if (options.resumeWindow)
	{
		process.stderr.write(
			'note: --resume-window has no equivalent in protoo-server (a lost peer closes at once); ignored\n');
	}

	const httpServer = http.createServer((req, res) =>
	{
		res.writeHead(426, { 'content-type': 'text/plain' });
		res.end('WebSocket (subprotocol protoo) only\n');
	});

	const wsOptions =
	{
		maxReceivedFrameSize   : options.maxMessageSize,
		maxReceivedMessageSize : options.maxMessageSize
	};

	if (options.pingInterval !== null)
	{
		wsOptions.keepalive = options.pingInterval > 0;
		wsOptions.keepaliveInterval = Math.max(1, Math.round(options.pingInterval * 1000));
	}

	const wsServer = new protoo.WebSocketServer(httpServer, wsOptions);
	const app = new RoomApp();
	let cluster = null;
	let stopping = false;

	const shutdown = () =>
	{
		if (stopping)
			return;

		stopping = true;

		// In a cluster, tell the other nodes first (bounded: Redis may be down).
		const left = cluster ? cluster.leave() : Promise.resolve();

		left.then(() =>
		{
			app.closeAll();
			wsServer.stop();
			httpServer.close(() => process.exit(0));
			// Close frames are written by now; do not wait for slow peers.
			setTimeout(() => process.exit(0), 500).unref();
		});
	};

	process.on('SIGTERM', shutdown);
	process.on('SIGINT', shutdown);

	if (options.redis)
	{
		// Loaded only with --redis: without it nothing here touches Redis.
		const { Cluster } = require('./cluster');

		cluster = new Cluster(
			{ url: options.redis, prefix: options.redisPrefix || DEFAULT_REDIS_PREFIX, app });
		// Resolves once Redis answered (node-redis retries until it does).
		await cluster.start();
		app.cluster = cluster;

		if (stopping)
			return;
	}

	wsServer.on('connectionrequest', (info, accept, reject) =>
		app.onConnectionRequest(info, accept, reject));

	httpServer.on('error', (error) =>
	{
		process.stderr.write(`room-server: ${error.message}\n`);
		process.exit(1);
	});

	httpServer.listen(options.port, options.host, () =>
	{
		const address = httpServer.address();
		const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

		process.stdout.write(`listening on ws://${host}:${address.port}/\n`);
	});
}

main().catch((error) =>
{
	process.stderr.write(`room-server: ${error.stack || error}\n`);
	process.exit(1);
});
