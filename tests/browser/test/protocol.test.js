'use strict';

// The real protoo-client inside Chromium against the Rust room example, for
// the protocol itself: requests and responses with unicode, a request from
// the server answered by the page, notifications, error codes and reasons.

const assert = require('node:assert/strict');
const { after, before, describe, test } = require('node:test');
const {
	launchBrowser,
	missing,
	openRoomPage,
	startRoom,
	waitMessage,
	waitStatus
} = require('../lib/harness');

const skip = missing();

describe('protoo-client in Chromium against the Rust server', { skip: skip || false }, () =>
{
	let server;
	let chromium;
	let page;
	let other;

	before(async () =>
	{
		server = await startRoom();
		chromium = await launchBrowser();
		page = await openRoomPage(chromium.browser, server.url({ roomId: 'proto', peerId: 'p', displayName: 'P' }));
		other = await openRoomPage(chromium.browser, server.url({ roomId: 'proto', peerId: 'q', displayName: 'Q' }));
		await waitStatus(page, 'open');
		await waitStatus(other, 'open');
	});

	after(async () =>
	{
		await chromium?.close();
		await server?.kill();
	});

	/** `peer.request` in the page: {data} or {code, reason}. */
	const request = (method, data) => page.evaluate(async (m, d) =>
	{
		try
		{
			return { data: await window.protooRoom.peer.request(m, d) };
		}
		catch (error)
		{
			return { code: error.code, reason: error.message };
		}
	}, method, data);

	const UNICODE = {
		text   : 'héllo wörld 👋🏽 日本語 עברית',
		nested : { emoji: [ '🎉', '☕', '🇺🇳' ], quote: '"\\\n\t</script>' },
		n      : 12345.5,
		yes    : true,
		none   : null
	};

	test('echo returns the data unchanged, unicode included', async () =>
	{
		assert.deepEqual(await request('echo', UNICODE), { data: UNICODE });
		assert.deepEqual(await request('echo', {}), { data: {} });
	});

	test('a request from the server is answered by the page', async () =>
	{
		// `ask` makes the server send {method, data} to this same page.
		assert.deepEqual(
			await request('ask', { method: 'echo', data: UNICODE }),
			{ data: { response: UNICODE } });
		assert.deepEqual(
			await request('ask', { method: 'whoami', data: {} }),
			{ data: { response: { roomId: 'proto', peerId: 'p', displayName: 'P' } } });
		// The page rejects what it does not know; the server hands the
		// error back with its code and reason.
		assert.deepEqual(
			await request('ask', { method: 'sing', data: {} }),
			{ code: 404, reason: 'unknown method sing' });
	});

	test('error codes and reasons', async () =>
	{
		assert.deepEqual(
			await request('fail', { code: 418, reason: 'I’m a teapot ☕' }),
			{ code: 418, reason: 'I’m a teapot ☕' });
		assert.deepEqual(
			await request('fail', { code: 503, reason: '' }),
			{ code: 503, reason: '' });
		assert.equal((await request('crash', {})).code, 500);
		assert.deepEqual(await request('nope', {}), { code: 404, reason: 'unknown method' });
		assert.equal((await request('ask', { data: {} })).code, 400);
	});

	test('notifications and broadcasts reach the other page', async () =>
	{
		await page.evaluate(() => window.protooRoom.peer.notify('chat', { text: 'by notification ✉️' }));
		await waitMessage(other, 'p', 'by notification ✉️');
		assert.deepEqual(await request('chat', { text: 'by request 📨' }), { data: {} });
		await waitMessage(other, 'p', 'by request 📨');
		// `broadcast` relays the data unchanged: here it names the sender.
		assert.deepEqual(
			await request('broadcast', { peerId: 'p', text: 'relayed 🔁' }),
			{ data: {} });
		await waitMessage(other, 'p', 'relayed 🔁');
		assert.deepEqual(page.errors, []);
		assert.deepEqual(other.errors, []);
	});
});
