#!/usr/bin/env node
'use strict';

// The Node anchor: the room contract of `examples/room/main.rs` implemented on the
// real protoo-server@4.0.8. The benchmarks run it side by side with our room
// example, and the interop suite runs against it as a reference, which shows
// that the suite's expectations are protoo's own semantics.
//
//   node anchor/room-server.js --listen 127.0.0.1:PORT [--max-message-size BYTES]
//                              [--ping-interval SECS] [--max-queue BYTES]
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

const http = require('http');
const protoo = require('protoo-server');

const DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024;

function usage(message)
{
	process.stderr.write(
		`${message}\n` +
		'usage: room-server.js --listen HOST:PORT [--max-message-size BYTES] ' +
		'[--ping-interval SECS] [--max-queue BYTES]\n');
	process.exit(2);
}

function parseArgs(argv)
{
	const options =
	{
		listen         : null,
		maxMessageSize : DEFAULT_MAX_MESSAGE_SIZE,
		pingInterval   : null,
		maxQueue       : null
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
			default:
				usage(`unknown argument ${arg}`);
		}
	}

	if (!options.listen)
		usage('--listen HOST:PORT is required');

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

		// Set on shutdown: peers then leave without telling the others (that
		// would be n² notifications to peers that are closing anyway).
		this._closing = false;
	}

	get rooms()
	{
		return this._rooms;
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

		// Same peerId again: the old peer goes (4000) and the new one takes its
		// place. Closing the old one may empty and remove the room, so the room
		// is looked up after that.
		const existing = this._rooms.get(roomId);
		const old = existing && existing.getPeer(peerId);

		if (old)
			old.close();

		const room = this._getOrCreateRoom(roomId);
		const transport = accept();
		let peer;

		try
		{
			peer = room.createPeer(peerId, transport);
		}
		catch (error)
		{
			process.stderr.write(`createPeer failed: ${error}\n`);
			this._removeRoomIfEmpty(roomId, room);

			return;
		}

		peer.data.joined = false;
		peer.data.displayName = null;

		peer.on('request', (request, accept2, reject2) =>
			this._onRequest(room, peer, request, accept2, reject2));
		peer.on('notification', (notification) =>
			this._onNotification(room, peer, notification));
		peer.on('close', () =>
		{
			if (this._closing)
				return;

			for (const other of room.peers)
			{
				if (other !== peer)
					other.notify('peerClosed', { peerId: peer.id }).catch(ignore);
			}

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
	}

	_others(room, peer)
	{
		return room.peers.filter((other) => other !== peer);
	}

	_onRequest(room, peer, request, accept, reject)
	{
		const data = request.data;

		switch (request.method)
		{
			case 'join':
			{
				const displayName =
					typeof data.displayName === 'string' ? data.displayName : peer.id;
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
				this._chat(room, peer, data.text);
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
				for (const other of this._others(room, peer))
				{
					other.notify('chat', data).catch(ignore);
				}

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

	_onNotification(room, peer, notification)
	{
		if (notification.method === 'chat')
			this._chat(room, peer, notification.data.text);
	}

	_chat(room, peer, text)
	{
		for (const other of this._others(room, peer))
		{
			other.notify('chat', { peerId: peer.id, text }).catch(ignore);
		}
	}
}

function main()
{
	const options = parseArgs(process.argv.slice(2));

	if (options.maxQueue !== null)
	{
		process.stderr.write(
			'note: --max-queue has no equivalent in protoo-server (its queues are unbounded); ignored\n');
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

	let stopping = false;

	const shutdown = () =>
	{
		if (stopping)
			return;

		stopping = true;
		app.closeAll();
		wsServer.stop();
		httpServer.close(() => process.exit(0));
		// Close frames are written by now; do not wait for slow peers.
		setTimeout(() => process.exit(0), 500).unref();
	};

	process.on('SIGTERM', shutdown);
	process.on('SIGINT', shutdown);
}

main();
