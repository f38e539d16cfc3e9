'use strict';

// Tokens, with the real protoo-client@4.0.8 against the room example
// started with --auth-secret (PROTOO_ROOM_BIN); tokens minted by the
// example's own `room token` subcommand, as an application backend would.
// The refusal statuses, as a client reads them; the ids taken from the
// token; `allow`; no takeover of a connected peer (another subject's token,
// no token: both refused, the victim untouched and told nothing) next to
// the legitimate replacement; and no token in the server's logs.

const { describe, it, before, after, afterEach, test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('child_process');
const path = require('path');
const {
	Clients,
	Inbox,
	handshake,
	once,
	rejection,
	requireAll,
	startServer
} = require('../lib/harness');

const SECRET = 'an interop secret of at least thirty-two bytes';
const bin = process.env.PROTOO_ROOM_BIN
	? path.resolve(__dirname, '..', process.env.PROTOO_ROOM_BIN)
	: null;
const missing = 'set PROTOO_ROOM_BIN (the built room example)';

/** A token from `room token`. */
function mint({ room, peer, secret = SECRET, ttl, allow, name })
{
	const args = [ 'token', '--secret', secret, '--room', room, '--peer', peer ];

	if (ttl !== undefined)
		args.push('--ttl', String(ttl));
	if (allow)
		args.push('--allow', allow.join(','));
	if (name)
		args.push('--name', name);

	return execFileSync(bin, args, { encoding: 'utf8' }).trim();
}

let roomCounter = 0;

function freshRoom(name)
{
	roomCounter += 1;

	return `${name}-${process.pid}-${roomCounter}`;
}

if (!bin && requireAll())
{
	test('room server under test is configured', () =>
	{
		throw new Error(`PROTOO_INTEROP_REQUIRE=1 but no server: ${missing}`);
	});
}
else
{
	describe('tokens: protoo-client vs the room example with --auth-secret',
		{ skip: bin ? false : missing }, () =>
		{
			let srv;
			const clients = new Clients();
			const minted = [];
			const token = (claims) =>
			{
				const t = mint(claims);

				minted.push(t);

				return t;
			};

			before(async () =>
			{
				// Every debug line: a token must not be in any of them.
				process.env.RUST_LOG = 'debug';
				srv = await startServer(
					{ name: 'room example with --auth-secret', command: [ bin ] },
					{ args: [ '--auth-secret', SECRET ] });
				delete process.env.RUST_LOG;
			});

			after(async () =>
			{
				if (srv)
				{
					const output = srv.output.text;

					await srv.stop();
					for (const t of minted)
					{
						for (const part of t.split('.').slice(1))
						{
							assert.ok(!output.includes(part), 'a token part is in the server output');
						}
					}
				}
			});

			afterEach(() => clients.closeAll());

			it('refuses before the upgrade with readable statuses', async () =>
			{
				const room = freshRoom('status');
				const alice = token({ room, peer: 'alice' });
				const cases = [
					[ { roomId: room, peerId: 'alice' }, 401 ],
					[ { roomId: room, peerId: 'alice', token: 'garbage' }, 401 ],
					[ { roomId: room, peerId: 'alice', token: mint({ room, peer: 'alice', secret: 'another secret' }) }, 401 ],
					[ { roomId: room, peerId: 'alice', token: token({ room, peer: 'alice', ttl: 0 }) }, 401 ],
					[ { roomId: 'another-room', peerId: 'alice', token: alice }, 403 ],
					[ { roomId: room, peerId: 'bob', token: alice }, 403 ]
				];

				for (const [ query, status ] of cases)
				{
					assert.deepEqual(
						await handshake(clients, srv.url(query)), { status }, JSON.stringify(query));
				}

				// protoo-client never opens without a token: it fails, then closes.
				const refused = clients.peer(srv.url({ roomId: room, peerId: 'alice' }));

				await once(refused, 'close');
				assert.deepEqual(refused.log, [ 'failed', 'close' ]);
			});

			it('takes the room and peer id from the token', async () =>
			{
				const room = freshRoom('ids');
				const peer = clients.peer(srv.url({ token: token({ room, peer: 'alice', name: 'Alice' }) }));

				await once(peer, 'open');
				assert.deepEqual(await peer.request('join', { displayName: 'Alice' }), { peers: [] });
			});

			it('answers 403 to a method outside allow, and drops such a notification', async () =>
			{
				const room = freshRoom('allow');
				const limited = clients.peer(srv.url({
					token : token({ room, peer: 'limited', allow: [ 'join', 'echo' ] })
				}));
				const listener = clients.peer(srv.url({ token: token({ room, peer: 'listener' }) }));

				await Promise.all([ once(limited, 'open'), once(listener, 'open') ]);
				await limited.request('join', {});
				await listener.request('join', {});
				const inbox = new Inbox(listener);

				const error = await rejection(limited.request('chat', { text: 'no' }));

				assert.equal(error.code, 403);
				assert.equal(error.message, 'method not allowed');
				limited.notify('chat', { text: 'dropped' });
				// Anything relayed from `limited` is queued to `listener` before
				// this answer to `limited`, and before `listener`'s own echo.
				assert.deepEqual(await limited.request('echo', { x: 1 }), { x: 1 });
				await listener.request('echo', {});
				assert.deepEqual(inbox.all.filter((n) => n.method === 'chat'), []);
			});

			it('refuses a takeover; the same identity still replaces its peer', async () =>
			{
				const room = freshRoom('takeover');
				const alice = token({ room, peer: 'alice' });
				const victim = clients.peer(srv.url({ roomId: room, peerId: 'alice', token: alice }));

				await once(victim, 'open');
				await victim.request('join', { displayName: 'victim' });
				const inbox = new Inbox(victim);

				// Another subject's token for the victim's peer id, and no token.
				const mallory = token({ room, peer: 'mallory' });

				assert.deepEqual(
					await handshake(clients, srv.url({ roomId: room, peerId: 'alice', token: mallory })),
					{ status: 403 });
				assert.deepEqual(
					await handshake(clients, srv.url({ roomId: room, peerId: 'alice' })),
					{ status: 401 });
				const attacker = clients.peer(srv.url({ roomId: room, peerId: 'alice', token: mallory }));

				await once(attacker, 'close');

				// The victim is untouched and was told nothing.
				assert.deepEqual(await victim.request('echo', { still: 'here' }), { still: 'here' });
				assert.deepEqual(victim.log, [ 'open' ]);
				assert.deepEqual(inbox.all, []);

				// Its own reconnect (same token) replaces it: 4000, no retry.
				const again = clients.peer(srv.url({ roomId: room, peerId: 'alice', token: alice }));
				const closed = once(victim, 'close');

				await once(again, 'open');
				await closed;
				assert.deepEqual(victim.log, [ 'open', 'close' ]);
				assert.deepEqual(await again.request('echo', { me: 'again' }), { me: 'again' });
			});
		});
}
