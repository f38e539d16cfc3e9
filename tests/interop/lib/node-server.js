'use strict';

// The Node side of direction 2: a protoo-server@4.0.8 app, run in-process by
// the test on 127.0.0.1:0, that plays the script the rust_peer binary follows
// (README.md, "The rust_peer contract") and records what it saw.

const http = require('http');
const { EventEmitter } = require('events');
const protoo = require('protoo-server');

/**
 * Start the app. Resolves with `{ port, url(peerId), seen, events, close() }`.
 *
 * `seen` (filled as things happen):
 *   connections:   [{ url, peerId }]
 *   requests:      [{ method, data }] received from the peer, in order
 *   notifications: [{ method, data }] received from the peer, in order
 *   notificationsBeforeReady: notifications received before the `ready` request
 *   results:       { add, deny, boom } -> { ok: true, data } | { ok: false, code, message }
 *   closed:        true once the server-side peer is closed
 * `events` emits 'driven' when the server-side script is done (the peer is
 * closed by then), 'error' if the script failed.
 */
async function startNodeServer()
{
	const httpServer = http.createServer();
	const wsServer = new protoo.WebSocketServer(httpServer);
	const room = new protoo.Room();
	const events = new EventEmitter();
	const seen =
	{
		connections              : [],
		requests                 : [],
		notifications            : [],
		notificationsBeforeReady : null,
		results                  : {},
		closed                   : false
	};

	wsServer.on('connectionrequest', (info, accept, reject) =>
	{
		const url = new URL(info.request.url, 'ws://localhost');
		const peerId = url.searchParams.get('peerId');

		seen.connections.push({ url: info.request.url, peerId });

		if (!peerId || room.hasPeer(peerId))
		{
			reject(400, 'peerId missing or taken');

			return;
		}

		const peer = room.createPeer(peerId, accept());

		peer.on('close', () =>
		{
			seen.closed = true;
		});

		peer.on('notification', ({ method, data }) =>
		{
			seen.notifications.push({ method, data });
		});

		peer.on('request', (request, accept2, reject2) =>
		{
			seen.requests.push({ method: request.method, data: request.data });

			switch (request.method)
			{
				case 'hello':
					accept2({ text: 'hi!', received: request.data });
					break;

				case 'reject-me':
					reject2(503, 'WHO KNOWS!');
					break;

				case 'throw-me':
					// protoo-server answers 500 "Error: BOOM!!!".
					throw new Error('BOOM!!!');

				case 'ready':
					seen.notificationsBeforeReady = seen.notifications.slice();
					accept2({});
					drive(peer).then(
						() => events.emit('driven'),
						(error) => events.emit('error', error));
					break;

				default:
					reject2(404, `unknown method ${request.method}`);
			}
		});
	});

	async function outcome(promise)
	{
		try
		{
			return { ok: true, data: await promise };
		}
		catch (error)
		{
			return { ok: false, code: error.code, message: error.message };
		}
	}

	// The server-side half of the script: requests the peer must answer, one
	// after the other, a notification, then the close (4000).
	async function drive(peer)
	{
		seen.results.add = await outcome(peer.request('add', { a: 2, b: 3 }));
		seen.results.deny = await outcome(peer.request('deny', {}));
		seen.results.boom = await outcome(peer.request('boom', {}));
		await peer.notify('bye', { reason: 'done' });
		peer.close();
	}

	await new Promise((resolve, reject) =>
	{
		httpServer.once('error', reject);
		httpServer.listen(0, '127.0.0.1', resolve);
	});

	const { port } = httpServer.address();

	return {
		port,
		seen,
		events,
		url : (peerId) => `ws://127.0.0.1:${port}/?peerId=${encodeURIComponent(peerId)}`,
		close()
		{
			room.close();
			wsServer.stop();

			return new Promise((resolve) =>
			{
				httpServer.close(() => resolve());
				httpServer.closeAllConnections();
			});
		}
	};
}

module.exports = { startNodeServer };
