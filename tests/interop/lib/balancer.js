'use strict';

// A round-robin TCP load balancer for the session tests across nodes: each
// new connection goes to the next live target (one that refuses is skipped
// for the next one); `remove(target)` takes a target out of the rotation, as
// a load balancer deregisters a node being deployed; `cut()` resets every
// live connection on both sides (TCP RST). No dependency but Node's `net`.

const net = require('net');

/** Destroys `socket` with a TCP RST when Node can, else plainly. */
function reset(socket)
{
	if (socket.destroyed)
		return;
	if (typeof socket.resetAndDestroy === 'function')
		socket.resetAndDestroy();
	else
		socket.destroy();
}

function split(target)
{
	const at = target.lastIndexOf(':');

	return { host: target.slice(0, at), port: Number(target.slice(at + 1)) };
}

/**
 * Starts a balancer on 127.0.0.1 (an ephemeral port) in front of `targets`
 * ("host:port" each). Resolves with it.
 */
async function balancer(targets)
{
	let live = [ ...targets ];
	let turn = 0;
	const pairs = new Set();
	// Where each accepted connection went, in order.
	const routed = [];

	const route = (client, attempt) =>
	{
		if (live.length === 0 || attempt >= live.length)
		{
			reset(client);

			return;
		}
		const target = live[turn % live.length];

		turn += 1;
		const { host, port } = split(target);
		const upstream = net.connect(port, host);
		let connected = false;

		upstream.once('connect', () =>
		{
			connected = true;
			const pair = { client, upstream, target };

			pairs.add(pair);
			routed.push(target);
			client.pipe(upstream);
			upstream.pipe(client);
			const end = () =>
			{
				pairs.delete(pair);
				client.destroy();
				upstream.destroy();
			};

			client.on('close', end);
			upstream.on('close', end);
		});
		upstream.on('error', () =>
		{
			if (!connected)
				route(client, attempt + 1);
		});
	};

	const listener = net.createServer((client) =>
	{
		client.on('error', () => {});
		route(client, 0);
	});

	await new Promise((resolve, reject) =>
	{
		listener.once('error', reject);
		listener.listen(0, '127.0.0.1', resolve);
	});
	const { port } = listener.address();

	return {
		address : `127.0.0.1:${port}`,
		routed,
		/** Takes `target` out of the rotation (its live connections stay). */
		remove(target)
		{
			live = live.filter((t) => t !== target);
		},
		/** Puts the rotation back to `targets`. */
		set(targets_)
		{
			live = [ ...targets_ ];
		},
		/** Resets every live connection on both sides. */
		cut()
		{
			for (const { client, upstream } of pairs)
			{
				reset(client);
				reset(upstream);
			}
			pairs.clear();
		},
		close()
		{
			for (const { client, upstream } of pairs)
			{
				client.destroy();
				upstream.destroy();
			}
			pairs.clear();

			return new Promise((resolve) => listener.close(() => resolve()));
		}
	};
}

module.exports = { balancer };
