'use strict';

// The Rust client (the bot example, on the protoo-client crate) against the
// real protoo-server@4.0.8: an abrupt drop, the reconnect, requests and
// notifications both ways again, 4000 as the end, and a rejected connection
// request retried then given up. PROTOO_BOT_BIN is the built bot example.

const http = require('http');
const path = require('path');
const readline = require('readline');
const { spawn } = require('child_process');
const { test } = require('node:test');
const assert = require('node:assert');
const protoo = require('protoo-server');
const { INTEROP_DIR, children, once, requireAll, withTimeout } = require('../lib/harness');

const BOT = process.env.PROTOO_BOT_BIN;
const skip = BOT ? false : 'set PROTOO_BOT_BIN (the built bot example)';

if (!BOT && requireAll())
{
	test('bot is configured', () =>
	{
		throw new Error('PROTOO_INTEROP_REQUIRE=1 but PROTOO_BOT_BIN is not set');
	});
}

/** A protoo-server app: accepts (or rejects) and records the bot's requests. */
async function startApp({ reject = false } = {})
{
	const httpServer = http.createServer();
	const sockets = new Set();

	httpServer.on('connection', (socket) => sockets.add(socket));
	const wsServer = new protoo.WebSocketServer(httpServer);
	const room = new protoo.Room();
	const app = { peers: [], requests: [], sockets, emitter: new (require('events'))() };

	wsServer.on('connectionrequest', (info, accept, rejectFn) =>
	{
		if (reject)
			return rejectFn(403, 'not today');

		const transport = accept();
		const peerId = new URL(info.request.url, 'http://x').searchParams.get('peerId');
		const peer = room.createPeer(peerId, transport);

		app.peers.push(peer);
		peer.on('request', (request, acceptReq) =>
		{
			app.requests.push({ method: request.method, data: request.data });
			app.emitter.emit('request', request);
			acceptReq({});
			if (request.method === 'kick')
				setImmediate(() => peer.close());
		});
	});
	await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
	app.url = `ws://127.0.0.1:${httpServer.address().port}/?roomId=r&peerId=bot`;
	app.close = () =>
	{
		room.close();
		for (const socket of sockets)
			socket.destroy();
		httpServer.close();
	};

	return app;
}

function startBot(url, retries)
{
	const child = spawn(path.resolve(INTEROP_DIR, BOT), [ '--url', url, '--retries', String(retries) ],
		{ stdio: [ 'ignore', 'pipe', 'inherit' ] });

	children.add(child);
	const lines = [];
	const waiting = [];

	readline.createInterface({ input: child.stdout }).on('line', (line) =>
	{
		if (waiting.length)
			waiting.shift()(line);
		else
			lines.push(line);
	});
	const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));

	return {
		child,
		exited,
		next : () => withTimeout(
			lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiting.push(r)),
			10000, 'a bot state line')
	};
}

async function requestOf(app, method)
{
	for (;;)
	{
		const request = await once(app.emitter, 'request');

		if (request.method === method)
			return request;
	}
}

test('bot: drop, reconnect, both directions again, 4000 ends it', { skip }, async () =>
{
	const app = await startApp();
	const bot = startBot(app.url, 10);

	try
	{
		for (let round = 0; round < 2; round++)
		{
			const joined = requestOf(app, 'join');

			assert.strictEqual(await bot.next(), 'open');
			assert.deepStrictEqual((await joined).data, { displayName: 'bot' });
			const peer = app.peers[app.peers.length - 1];
			const pong = requestOf(app, 'chat');

			peer.notify('chat', { peerId: 'someone', text: '!ping' });
			assert.deepStrictEqual((await pong).data, { text: 'pong' });
			assert.deepStrictEqual(await peer.request('ping'), { pong: true });
			await assert.rejects(peer.request('other'), (error) => error.code === 404);
			if (round === 0)
			{
				// Abrupt drop: the TCP connection destroyed, no close frame.
				for (const socket of app.sockets)
					socket.destroy();
				assert.strictEqual(await bot.next(), 'disconnected');
			}
		}
		const peer = app.peers[app.peers.length - 1];

		peer.notify('chat', { peerId: 'someone', text: '!leave' });
		assert.strictEqual(await bot.next(), 'close');
		assert.strictEqual(await withTimeout(bot.exited, 10000, 'the bot exit'), 0);
		assert.strictEqual(app.peers.length, 2, 'no reconnect after 4000');
	}
	finally
	{
		bot.child.kill('SIGKILL');
		app.close();
	}
});

test('bot: a rejected connection request fails per attempt, then closes', { skip }, async () =>
{
	const app = await startApp({ reject: true });
	const bot = startBot(app.url, 1);

	try
	{
		assert.strictEqual(await bot.next(), 'failed 1');
		assert.strictEqual(await bot.next(), 'failed 2');
		assert.strictEqual(await bot.next(), 'close');
		assert.strictEqual(await withTimeout(bot.exited, 10000, 'the bot exit'), 1);
	}
	finally
	{
		bot.child.kill('SIGKILL');
		app.close();
	}
});
