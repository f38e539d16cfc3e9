'use strict';

// A TCP proxy for the session tests: it sits between a client and the room
// server and breaks live connections the ways networks do.
//
// - cut(): every live connection is reset on both sides (TCP RST, like a
//   network change under a phone: both ends learn at once);
// - blackhole(): every live connection stops forwarding in both directions
//   while both sockets stay open (a NAT or middlebox that forgot the
//   mapping: nobody learns anything); what arrives on the server side from
//   then on is kept in `pair.swallowed` (see `serverFrames`);
// - cutClient(pair): resets only the client's side of one connection (the
//   client learns, the server does not);
// - refuse() / allow(): new connections are reset at once while refused;
// - hold() / release(): new connections wait (accepted, not forwarded)
//   until released.
//
// No dependency but Node's `net`: the browser suite uses it too.

const net = require('net');

/** Destroys `socket` with a TCP RST when Node can (≥ 16.17 / 18.3), else plainly. */
function reset(socket)
{
	if (socket.destroyed)
		return;
	if (typeof socket.resetAndDestroy === 'function')
		socket.resetAndDestroy();
	else
		socket.destroy();
}

/**
 * Starts a proxy on 127.0.0.1 (an ephemeral port) in front of `target`
 * ("host:port"). Resolves with the proxy (see the methods below).
 */
async function blipProxy(target)
{
	const host = target.slice(0, target.lastIndexOf(':'));
	const port = Number(target.slice(target.lastIndexOf(':') + 1));
	// Live forwarded connections: { client, server, swallowed, blackholed }.
	const pairs = new Set();
	// Every connection ever forwarded, for close().
	const every = new Set();
	const held = [];
	let mode = 'forward';
	let accepted = 0;

	const forward = (client) =>
	{
		const server = net.connect(port, host);
		const pair = { client, server, swallowed: [], blackholed: false };

		pairs.add(pair);
		every.add(pair);
		server.on('error', () => {});
		client.pipe(server);
		server.pipe(client);

		const end = () =>
		{
			pairs.delete(pair);
			client.destroy();
			if (!pair.blackholed)
				server.destroy();
		};

		client.on('close', end);
		server.on('close', () =>
		{
			pairs.delete(pair);
			client.destroy();
		});
	};

	const listener = net.createServer((client) =>
	{
		accepted += 1;
		client.on('error', () => {});
		if (mode === 'refuse')
			reset(client);
		else if (mode === 'hold')
		{
			client.pause();
			held.push(client);
		}
		else
			forward(client);
	});

	await new Promise((resolve) => listener.listen(0, '127.0.0.1', resolve));

	return {
		/** "127.0.0.1:PORT" of the proxy. */
		address : `127.0.0.1:${listener.address().port}`,

		/** How many connections the proxy accepted so far (refused ones too). */
		get accepted()
		{
			return accepted;
		},

		/** The live (or black-holed) connections, oldest first. */
		get pairs()
		{
			return [ ...pairs ];
		},

		/** Resets every live connection, both sides. */
		cut()
		{
			for (const pair of pairs)
			{
				reset(pair.client);
				reset(pair.server);
			}
			pairs.clear();
		},

		/**
		 * Stops forwarding on every live connection; both sockets stay open.
		 * Bytes from the server are kept in `pair.swallowed`, bytes from the
		 * client dropped.
		 */
		blackhole()
		{
			for (const pair of pairs)
			{
				if (pair.blackholed)
					continue;
				pair.blackholed = true;
				pair.client.unpipe(pair.server);
				pair.server.unpipe(pair.client);
				pair.client.on('data', () => {});
				pair.server.on('data', (chunk) => pair.swallowed.push(chunk));
				pair.client.resume();
				pair.server.resume();
			}
		},

		/** Resets the client's side of `pair` only; its server side stays as it was. */
		cutClient(pair)
		{
			reset(pair.client);
		},

		/** New connections are reset at once until `allow()`. */
		refuse()
		{
			mode = 'refuse';
		},

		/** New connections are forwarded again. */
		allow()
		{
			mode = 'forward';
		},

		/** New connections wait until `release()`. */
		hold()
		{
			mode = 'hold';
		},

		/** Forwards the waiting connections and the new ones. */
		release()
		{
			mode = 'forward';
			for (const client of held.splice(0))
			{
				if (!client.destroyed)
				{
					forward(client);
					client.resume();
				}
			}
		},

		/** Stops listening and destroys every connection (black-holed ones too). */
		close()
		{
			for (const pair of every)
			{
				pair.client.destroy();
				pair.server.destroy();
			}
			pairs.clear();
			every.clear();
			for (const client of held.splice(0))
			{
				client.destroy();
			}

			return new Promise((resolve) => listener.close(resolve));
		}
	};
}

/**
 * The WebSocket frames a server wrote in `bytes` (unmasked, as servers
 * write them), as `{ opcode, payload }`; a trailing partial frame is left
 * out. A close frame's code and reason: `closeOf(frame)`.
 */
function serverFrames(bytes)
{
	const frames = [];
	let at = 0;

	while (at + 2 <= bytes.length)
	{
		const opcode = bytes[at] & 0x0f;
		let length = bytes[at + 1] & 0x7f;
		let header = 2;

		if (length === 126)
		{
			if (at + 4 > bytes.length)
				break;
			length = bytes.readUInt16BE(at + 2);
			header = 4;
		}
		else if (length === 127)
		{
			if (at + 10 > bytes.length)
				break;
			length = Number(bytes.readBigUInt64BE(at + 2));
			header = 10;
		}
		if (at + header + length > bytes.length)
			break;
		frames.push({ opcode, payload: bytes.subarray(at + header, at + header + length) });
		at += header + length;
	}

	return frames;
}

/** The code and reason of a close frame from `serverFrames`. */
function closeOf(frame)
{
	return {
		code   : frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : null,
		reason : frame.payload.subarray(2).toString('utf8')
	};
}

module.exports = { blipProxy, closeOf, serverFrames };
