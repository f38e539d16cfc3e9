#!/usr/bin/env node
'use strict';

// A JavaScript stand-in for the rust_peer example: the same script and output
// (README.md, "The rust_peer contract"), written on protoo-client@4.0.8. The
// direction 2 suite runs it as a reference, which shows the script and its
// expectations match protoo's own behaviour.
//
//   node tools/stand-in-peer.js --url ws://127.0.0.1:PORT/?peerId=rust

const protooClient = require('protoo-client');

function print(line)
{
	process.stdout.write(`${JSON.stringify(line)}\n`);
}

const urlIndex = process.argv.indexOf('--url');
const url = urlIndex !== -1 ? process.argv[urlIndex + 1] : undefined;

if (!url)
{
	process.stderr.write('usage: stand-in-peer.js --url WS_URL\n');
	process.exit(2);
}

// Give up after 10 s whatever happens.
setTimeout(() =>
{
	print({ event: 'error', message: 'timed out' });
	process.exit(1);
}, 10000).unref();

const transport = new protooClient.WebSocketTransport(url, { retry: { retries: 0 } });
const peer = new protooClient.Peer(transport);
// protoo-client does not expose the close code and reason: they are taken
// from its W3CWebSocket once open (private API, fine for a test stand-in).
let closeCode = null;
let closeReason = null;

peer.on('failed', () =>
{
	print({ event: 'error', message: 'connection failed' });
	process.exit(1);
});

peer.on('disconnected', () =>
{
	print({ event: 'error', message: 'disconnected' });
	process.exit(1);
});

peer.on('close', () =>
{
	print({ event: 'closed', code: closeCode, reason: closeReason });
	process.exit(0);
});

peer.on('notification', ({ method, data }) => print({ event: 'notification', method, data }));

peer.on('request', (request, accept, reject) =>
{
	print({ event: 'request', method: request.method, data: request.data });

	switch (request.method)
	{
		case 'add':
			accept({ sum: request.data.a + request.data.b });
			break;
		case 'deny':
			reject(403, 'denied');
			break;
		case 'boom':
			throw new Error('BOOM!!!');
		default:
			reject(404, `unknown method ${request.method}`);
	}
});

async function call(method, data)
{
	try
	{
		print({ event: 'response', method, ok: true, data: await peer.request(method, data) });
	}
	catch (error)
	{
		print({ event: 'response', method, ok: false, errorCode: error.code, errorReason: error.message });
	}
}

peer.on('open', async () =>
{
	// The close code and reason, from the live W3CWebSocket.
	const ws = transport._ws;
	const onclose = ws.onclose;

	ws.onclose = (event) =>
	{
		closeCode = event.code;
		closeReason = event.reason;
		onclose(event);
	};

	print({ event: 'open' });
	await call('hello', { foo: 'bar' });
	await call('reject-me', {});
	await call('throw-me', {});
	await peer.notify('note', { n: 1 });
	await call('ready', {});
});
