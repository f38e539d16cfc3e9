'use strict';

// The room page across a blip (issue 27), with the room example's default
// resume window (15 s): Chromium reaches the server through a TCP proxy
// (tests/interop/lib/blip-proxy.js) that resets the connection and holds
// the reconnection; the page says "reconnecting…", keeps its history, shows
// what was said meanwhile in order once protoo-client is back, and the
// other tab sees nobody leave or rejoin. Closing a tab still leaves at once.

const assert = require('node:assert/strict');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');
const { blipProxy } = require('../../interop/lib/blip-proxy');
const {
	launchBrowser,
	missing,
	openRoomPage,
	screenshotDir,
	startRoom,
	waitMessage,
	waitPeers,
	waitStatus
} = require('../lib/harness');

const skip = missing();

/** `[from, text]` of every message of `page`, in order. */
const messages = (page) => page.$$eval('#messages [data-from]', (els) => els.map((el) => [
	el.getAttribute('data-from'),
	el.querySelector('.text').textContent
]));

/** The notices of `page` (joined, left, reconnected…), in order. */
const notices = (page) => page.$$eval('#messages .notice', (els) => els.map((el) => el.textContent));

/** Types `text` in `page` and waits until the server answered the chat. */
async function say(page, text)
{
	await page.type('#chat-input', text);
	await page.keyboard.press('Enter');
	await page.waitForFunction(() => !document.querySelector('#messages .pending'),
		{ polling: 'mutation' });
}

describe('the room page across a blip', { skip: skip || false }, () =>
{
	let server;
	let chromium;
	let proxy;

	before(async () =>
	{
		server = await startRoom();
		chromium = await launchBrowser();
		proxy = await blipProxy(server.address);
	});

	after(async () =>
	{
		await proxy?.close();
		await chromium?.close();
		await server?.kill();
	});

	test('a cut: reconnecting…, history kept, the messages of meanwhile in order, nobody sees a leave', async (t) =>
	{
		const room = 'blip';
		// Ann's page (and so its WebSocket) goes through the proxy.
		const ann = await openRoomPage(chromium.browser,
			`http://${proxy.address}/?roomId=${room}&peerId=ann&displayName=Ann`);
		const ben = await openRoomPage(chromium.browser,
			server.url({ roomId: room, peerId: 'ben', displayName: 'Ben' }));

		await waitPeers(ann, [ 'ben' ]);
		await waitPeers(ben, [ 'ann' ]);
		await say(ann, 'before the cut');
		await waitMessage(ben, 'ann', 'before the cut');

		// Reset both ways; the reconnection waits in the proxy.
		proxy.hold();
		proxy.cut();
		await waitStatus(ann, 'reconnecting…');

		const away = [ 'one while you were away', 'two while you were away', 'three while you were away' ];

		for (const text of away)
		{
			await say(ben, text);
		}
		// Still listed on Ben's side: the server kept Ann's session.
		await waitPeers(ben, [ 'ann' ]);
		// (No screenshot here: Chromium's waits for the held connection.)
		proxy.release();
		await waitStatus(ann, 'open');
		await ann.waitForFunction(
			() => [ ...document.querySelectorAll('#messages .notice') ]
				.some((el) => el.textContent.startsWith('Session resumed')),
			{ polling: 'mutation' });
		await say(ann, 'back');
		await waitMessage(ben, 'ann', 'back');

		assert.deepEqual(await messages(ann), [
			[ 'ann', 'before the cut' ],
			...away.map((text) => [ 'ben', text ]),
			[ 'ann', 'back' ]
		]);
		assert.deepEqual(await messages(ben), [
			[ 'ann', 'before the cut' ],
			...away.map((text) => [ 'ben', text ]),
			[ 'ann', 'back' ]
		]);
		assert.deepEqual(
			await ann.evaluate(() => window.__statuses),
			[ 'connecting', 'open', 'reconnecting…', 'open' ]);
		// Ann: Ben joined, the loss, the reconnection, the resume with the
		// three messages held for her; Ben: nothing at all.
		assert.deepEqual(await notices(ann), [
			'Ben joined',
			'Connection lost, reconnecting…',
			'Reconnected',
			'Session resumed: 3 messages held for you while away'
		]);
		assert.deepEqual(await notices(ben), []);
		await waitPeers(ann, [ 'ben' ]);
		await waitPeers(ben, [ 'ann' ]);
		assert.equal(await ann.evaluate(() => window.__sockets), 2);
		const shot = path.join(screenshotDir(), 'resumed.png');

		await ann.screenshot({ path: shot });
		t.diagnostic(`screenshot of the page after a resume: ${shot}`);

		// Closing Ann's tab is leaving: Ben sees it at once, not after the
		// 15 s window.
		const started = Date.now();

		await ann.close();
		await waitPeers(ben, []);
		assert.ok(Date.now() - started < 5000, `left after ${Date.now() - started} ms`);
		assert.deepEqual(await notices(ben), [ 'Ann left' ]);
		assert.deepEqual(ben.errors, []);
		await ben.close();
	});
});
