'use strict';

// The anchor's cluster mode (`room-server.js --redis URL`): rooms that span
// several anchor processes over Redis, written the way a Node developer would
// add it to a protoo-server app with the npm `redis` client (node-redis). It is
// the comparison point of benchmarks S10/S11 (issue 12), so it stays plain:
// one publishing client and one subscriber client per process, JSON messages,
// `peer.notify` per local peer.
//
// Keys and channels, under the prefix P (`--redis-prefix`, default `protoo`):
//
//   P:room:{R}         hash     peerId -> JSON {node, inc, joined, displayName}
//                               (every member, joined or not; `join` lists the
//                               joined ones); a field is only ever removed by
//                               compare-and-delete on its exact value
//   P:node:{N}         string   heartbeat of node N: SET every 2 s, PX 6000
//   P:node:{N}:rooms   set      rooms with a member on N (PEXPIRE 60 s with the
//                               heartbeat); what a sweeper of N walks
//   P:nodes            set      node ids (SADD with the heartbeat)
//   P:sweep:{N}        string   SET NX EX 60: the one node that sweeps dead N
//
//   channel P:room:{R} a broadcast to room R, published once by the sender's
//                      node: {node, except, method, data}. Every node
//                      PSUBSCRIBEs P:room:* and notifies its local members of R
//                      but the excluded ids; a node skips its own messages
//                      (its local members were notified directly).
//   channel P:node:{N} messages to one peer on node N (close, notify, request)
//                      and the answers to them ({type: 'reply'}).
//
// Order: every write and publish of a process goes through its one publishing
// connection in the order the app made them, and Redis delivers pub/sub
// messages in the order it processed the PUBLISHes, so one sender's messages
// reach every node in order, and a presence removal is processed before the
// `peerClosed` published after it.
//
// Replacement: an admission swaps the presence field atomically (a script that
// sets it and returns the previous value). If the previous owner is another
// node, the newcomer's node asks it (P:node:{owner}, `close`) to close its
// peer; that node's close handler notifies and publishes `peerClosed`, then it
// answers on the same connection; only then is the newcomer's connection
// accepted (at most 2 s later if the owner does not answer). So everybody
// gets `peerClosed` before the newcomer can `join` and announce itself.
//
// Node loss: every node, every 2 s, looks for ids in P:nodes without a
// heartbeat; the one that wins P:sweep:{N} removes N's presence fields room by
// room (compare-and-delete) and, for each field it removed, notifies its local
// members and publishes the app's message for a lost member (the room app:
// `peerClosed`). A killed node's peers are announced within about 8 s.
//
// Redis outage: commands fail at once while disconnected (no offline queue):
// publishes and presence writes made meanwhile are dropped and counted (they
// are stale signalling by the time Redis is back); `join` falls back to the
// local list; local delivery never waits on Redis. node-redis reconnects (its
// default back-off, at most about 2.2 s between attempts) and resubscribes;
// on each reconnect the node writes its heartbeat again, re-registers every
// local member and removes its own fields of members that left meanwhile
// (publishing their departure). Lost in an outage: cross-node broadcasts and
// departures published during it (departures are published again by the
// reconcile when Redis kept its data, not when it restarted empty).

const crypto = require('crypto');
const { createClient } = require('redis');

const HEARTBEAT_INTERVAL = 2000;
const HEARTBEAT_TTL = 6000;
const SWEEP_INTERVAL = 2000;
const SWEEP_LOCK_SECONDS = 60;
const ROOMS_TTL = 60000;
// How long an admission waits for another node to close the peer it replaces.
const REPLACE_TIMEOUT = 2000;
// A request routed to a peer on another node (protoo's own timeout is 30 s+).
const ROUTED_REQUEST_TIMEOUT = 35000;
// Graceful shutdown: at most this long to tell the cluster we leave.
const LEAVE_TIMEOUT = 1000;

// Set the field and return the previous value (admission, replacement).
const SWAP = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old`;

// Set the field if it is absent or still holds our previous value (join,
// re-registration): never overwrite a newcomer that replaced us.
const SET_IF_OURS = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == false or cur == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0`;

// Delete the field only if it holds exactly this value.
const DELETE_IF = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0`;

function ignore() {}

function parse(json)
{
	try
	{
		return JSON.parse(json);
	}
	catch (error)
	{
		return null;
	}
}

function globEscape(text)
{
	return text.replace(/[*?[\]\\]/g, '\\$&');
}

function timeout(promise, ms)
{
	let timer;

	return Promise.race([
		promise,
		new Promise((resolve, reject) =>
		{
			timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
		})
	]).finally(() => clearTimeout(timer));
}

/**
 * One process's membership of the cluster. `app` is the room app; the cluster
 * calls:
 * - `app.localRooms()`: Map roomId -> protoo.Room of this process;
 * - `app.deliver(roomId, except, method, data)`: notify the local members of
 *   the room but the ids in `except`;
 * - `app.lostMessage(roomId, peerId)`: `{method, data}` to broadcast for a
 *   member lost with its node (or `null` for nothing).
 */
class Cluster
{
	constructor({ url, prefix, app })
	{
		this.id = crypto.randomUUID();
		this._url = url;
		this._prefix = prefix;
		this._app = app;
		this._inc = 0;
		this._pending = new Map();
		this._nextCallId = 0;
		this._timers = [];
		this._sweeping = false;
		this._registering = false;
		this._started = false;
		// 'up' / 'down': a line on stderr at each change.
		this._state = 'connecting';
		this._stopped = false;
		// Publishes and presence writes that failed (Redis unreachable).
		this.dropped = 0;
	}

	_roomKey(roomId)
	{
		return `${this._prefix}:room:${roomId}`;
	}

	_nodeKey(node)
	{
		return `${this._prefix}:node:${node}`;
	}

	_nodeRoomsKey(node)
	{
		return `${this._prefix}:node:${node}:rooms`;
	}

	get _nodesKey()
	{
		return `${this._prefix}:nodes`;
	}

	_sweepKey(node)
	{
		return `${this._prefix}:sweep:${node}`;
	}

	/** Connects both clients, subscribes, registers; resolves once done. */
	async start()
	{
		this._pub = createClient({ url: this._url, disableOfflineQueue: true });
		this._sub = this._pub.duplicate();

		// node-redis emits 'error' on every failed attempt and reconnects by
		// itself; without listeners an 'error' would end the process.
		this._pub.on('error', (error) => this._onError(error));
		this._sub.on('error', ignore);
		// Every 'ready' after the start is a reconnect: register again (the
		// subscriber resubscribes by itself before its own 'ready').
		this._pub.on('ready', () =>
		{
			if (this._state !== 'up')
				process.stderr.write(`cluster: connected to Redis at ${this._url}\n`);

			this._state = 'up';

			if (this._started)
			{
				this._register().catch((error) =>
					process.stderr.write(`cluster: re-registration failed: ${error.message}\n`));
			}
		});

		await this._pub.connect();
		await this._sub.connect();

		const roomChannels = `${globEscape(this._prefix)}:room:*`;
		const roomPrefix = `${this._prefix}:room:`;

		await this._sub.pSubscribe(roomChannels, (message, channel) =>
			this._onRoomMessage(channel.slice(roomPrefix.length), message));
		await this._sub.subscribe(this._nodeKey(this.id), (message) =>
			this._onNodeMessage(message));

		await this._heartbeat();
		this._started = true;

		this._timers.push(setInterval(() => this._heartbeat().catch(ignore), HEARTBEAT_INTERVAL));
		this._timers.push(setInterval(() => this._sweep(), SWEEP_INTERVAL));
	}

	_onError(error)
	{
		if (this._state !== 'down' && !this._stopped)
		{
			this._state = 'down';
			process.stderr.write(
				`cluster: cannot reach Redis at ${this._url} (${error.message || error.code}); retrying\n`);
		}
	}

	_count(promise)
	{
		return promise.catch(() =>
		{
			this.dropped += 1;
		});
	}

	/** The presence value of a local member (unique per incarnation). */
	presence(peerId, joined, displayName)
	{
		this._inc += 1;

		return JSON.stringify({ node: this.id, inc: this._inc, joined, displayName });
	}

	/**
	 * Before admitting `peerId` into `roomId` with presence `value`: take the
	 * presence field, and if a peer with this id lives on another node, have
	 * that node close it (bounded wait). Never rejects.
	 */
	async claim(roomId, peerId, value)
	{
		let previous;

		try
		{
			previous = await this._pub.eval(SWAP, { keys: [ this._roomKey(roomId) ], arguments: [ peerId, value ] });
		}
		catch (error)
		{
			return;
		}

		const owner = previous && parse(previous);

		if (!owner || owner.node === this.id)
			return;

		await this._call(owner.node, { type: 'close', room: roomId, peer: peerId }, REPLACE_TIMEOUT)
			.catch(ignore);
	}

	/** A member was admitted (after `claim`): this node has members in the room. */
	memberAdded(roomId)
	{
		this._count(this._pub.sAdd(this._nodeRoomsKey(this.id), roomId));
	}

	/** Update a local member's presence from `oldValue` to `newValue`. */
	presenceSet(roomId, peerId, oldValue, newValue)
	{
		this._count(this._pub.eval(SET_IF_OURS,
			{ keys: [ this._roomKey(roomId) ], arguments: [ peerId, oldValue, newValue ] }));
	}

	/** A local member left: remove its presence (if still ours). */
	memberRemoved(roomId, peerId, value)
	{
		this._count(this._pub.eval(DELETE_IF,
			{ keys: [ this._roomKey(roomId) ], arguments: [ peerId, value ] }));
	}

	/** The room has no local member any more. */
	roomRemoved(roomId)
	{
		this._count(this._pub.sRem(this._nodeRoomsKey(this.id), roomId));
	}

	/**
	 * The joined members of the room anywhere, `[{id, displayName}]`, or
	 * `null` when Redis cannot answer (the caller falls back to its local list).
	 */
	async listed(roomId)
	{
		let fields;

		try
		{
			fields = await this._pub.hGetAll(this._roomKey(roomId));
		}
		catch (error)
		{
			return null;
		}

		const peers = [];

		for (const [ id, value ] of Object.entries(fields))
		{
			const entry = parse(value);

			if (entry && entry.joined)
				peers.push({ id, displayName: entry.displayName });
		}

		return peers;
	}

	/** Broadcast to the other nodes (the local members were notified already). */
	publish(roomId, except, method, data)
	{
		const message = JSON.stringify({ node: this.id, except, method, data });

		this._count(this._pub.publish(this._roomKey(roomId), message));
	}

	/** Notify a peer by id wherever it is. */
	notifyPeer(roomId, peerId, method, data)
	{
		return this._toPeer(roomId, peerId, { type: 'notify', method, data });
	}

	/** Send a request to a peer by id wherever it is; resolves with its answer. */
	requestPeer(roomId, peerId, method, data)
	{
		return this._toPeer(roomId, peerId, { type: 'request', method, data });
	}

	/** Close a peer by id wherever it is (4000). */
	closePeer(roomId, peerId)
	{
		return this._toPeer(roomId, peerId, { type: 'close' });
	}

	async _toPeer(roomId, peerId, message)
	{
		const local = this._localPeer(roomId, peerId);

		if (local)
			return this._handleForPeer(local, message);

		const value = await this._pub.hGet(this._roomKey(roomId), peerId);
		const owner = value && parse(value);

		if (!owner || owner.node === this.id)
			throw Object.assign(new Error(`no peer ${peerId} in room ${roomId}`), { code: 404 });

		const routed = { ...message, room: roomId, peer: peerId };

		if (message.type === 'notify')
		{
			await this._pub.publish(this._nodeKey(owner.node), JSON.stringify(routed));

			return undefined;
		}

		return this._call(owner.node, routed,
			message.type === 'request' ? ROUTED_REQUEST_TIMEOUT : REPLACE_TIMEOUT);
	}

	_localPeer(roomId, peerId)
	{
		const room = this._app.localRooms().get(roomId);

		return room ? room.getPeer(peerId) : undefined;
	}

	async _handleForPeer(peer, message)
	{
		switch (message.type)
		{
			case 'notify':
				await peer.notify(message.method, message.data);

				return undefined;
			case 'request':
				return peer.request(message.method, message.data);
			case 'close':
				peer.close();

				return {};
			default:
				throw new Error(`unknown message type ${message.type}`);
		}
	}

	/** Send `message` to `node` and wait for its reply. */
	_call(node, message, ms)
	{
		this._nextCallId += 1;

		const id = this._nextCallId;
		const answered = new Promise((resolve, reject) =>
			this._pending.set(id, { resolve, reject }));

		this._pub.publish(this._nodeKey(node), JSON.stringify({ ...message, id, from: this.id }))
			.catch((error) =>
			{
				const pending = this._pending.get(id);

				if (pending)
					pending.reject(error);
			});

		return timeout(answered, ms).finally(() => this._pending.delete(id));
	}

	_onRoomMessage(roomId, text)
	{
		const message = parse(text);

		if (!message || message.node === this.id)
			return;

		this._app.deliver(roomId, message.except || [], message.method, message.data);
	}

	_onNodeMessage(text)
	{
		const message = parse(text);

		if (!message)
			return;

		if (message.type === 'reply')
		{
			const pending = this._pending.get(message.id);

			if (!pending)
				return;

			if (message.ok)
				pending.resolve(message.data);
			else
				pending.reject(Object.assign(new Error(message.reason), { code: message.code }));

			return;
		}

		const reply = (answer) =>
		{
			if (message.id === undefined)
				return;

			this._count(this._pub.publish(this._nodeKey(message.from),
				JSON.stringify({ type: 'reply', id: message.id, ...answer })));
		};
		const peer = this._localPeer(message.room, message.peer);

		if (!peer)
		{
			// A close for a peer that is gone already is done.
			if (message.type === 'close')
				reply({ ok: true, data: {} });
			else
				reply({ ok: false, code: 404, reason: `no peer ${message.peer} here` });

			return;
		}

		// A close runs the peer's close handler synchronously (it publishes
		// `peerClosed`), so the reply below is published after it.
		this._handleForPeer(peer, message)
			.then((data) => reply({ ok: true, data }))
			.catch((error) => reply({
				ok     : false,
				code   : typeof error.code === 'number' ? error.code : 500,
				reason : error.message
			}));
	}

	async _heartbeat()
	{
		const node = this._nodeKey(this.id);

		// Heartbeat first, then the node list: nobody sees this node listed
		// without its heartbeat.
		await Promise.all([
			this._pub.set(node, String(Date.now()), { PX: HEARTBEAT_TTL }),
			this._pub.sAdd(this._nodesKey, this.id),
			this._pub.pExpire(this._nodeRoomsKey(this.id), ROOMS_TTL)
		]);
	}

	/**
	 * After a reconnect: heartbeat, then every local member's presence again,
	 * and this node's fields of members that left meanwhile removed (their
	 * departure published).
	 */
	async _register()
	{
		if (this._registering || this._stopped)
			return;

		this._registering = true;

		try
		{
			await this._heartbeat();

			const local = this._app.localRooms();
			const known = await this._pub.sMembers(this._nodeRoomsKey(this.id));

			for (const roomId of new Set([ ...known, ...local.keys() ]))
			{
				const room = local.get(roomId);
				const key = this._roomKey(roomId);
				const fields = await this._pub.hGetAll(key);
				// Local members and the value their field holds now, if ours.
				const current = new Map();

				for (const [ peerId, value ] of Object.entries(fields))
				{
					const entry = parse(value);

					if (!entry || entry.node !== this.id)
						continue;

					const peer = room && room.getPeer(peerId);

					if (peer && !peer.closed)
					{
						current.set(peerId, value);

						continue;
					}

					// Ours, but the member left while Redis was away.
					const removed = await this._pub.eval(DELETE_IF, { keys: [ key ], arguments: [ peerId, value ] });

					if (removed === 1)
						this._announceLost(roomId, peerId, { local: false });
				}

				if (!room)
				{
					await this._pub.sRem(this._nodeRoomsKey(this.id), roomId);

					continue;
				}

				for (const peer of room.peers)
				{
					const value = peer.data.presence;
					const seen = current.get(peer.id) || value;

					await this._pub.eval(SET_IF_OURS, { keys: [ key ], arguments: [ peer.id, seen, value ] });
				}

				await this._pub.sAdd(this._nodeRoomsKey(this.id), roomId);
			}
		}
		finally
		{
			this._registering = false;
		}
	}

	_announceLost(roomId, peerId, { local })
	{
		const message = this._app.lostMessage(roomId, peerId);

		if (!message)
			return;

		if (local)
			this._app.deliver(roomId, [ peerId ], message.method, message.data);

		this.publish(roomId, [ peerId ], message.method, message.data);
	}

	/** Find nodes without a heartbeat; clean each one up once cluster-wide. */
	async _sweep()
	{
		if (this._sweeping || this._stopped || !this._pub.isReady)
			return;

		this._sweeping = true;

		try
		{
			const nodes = await this._pub.sMembers(this._nodesKey);

			for (const node of nodes)
			{
				if (node === this.id || await this._pub.exists(this._nodeKey(node)))
					continue;

				const won = await this._pub.set(
					this._sweepKey(node), this.id, { NX: true, EX: SWEEP_LOCK_SECONDS });

				if (won !== 'OK')
					continue;

				const rooms = await this._pub.sMembers(this._nodeRoomsKey(node));

				for (const roomId of rooms)
				{
					const fields = await this._pub.hGetAll(this._roomKey(roomId));

					for (const [ peerId, value ] of Object.entries(fields))
					{
						const entry = parse(value);

						if (!entry || entry.node !== node)
							continue;

						const removed = await this._pub.eval(DELETE_IF,
							{ keys: [ this._roomKey(roomId) ], arguments: [ peerId, value ] });

						if (removed === 1)
							this._announceLost(roomId, peerId, { local: true });
					}
				}

				await this._pub.del(this._nodeRoomsKey(node));
				await this._pub.sRem(this._nodesKey, node);
				process.stderr.write(`cluster: swept dead node ${node} (${rooms.length} rooms)\n`);
			}
		}
		catch (error)
		{
			// Redis went away meanwhile; the next sweep tries again.
		}
		finally
		{
			this._sweeping = false;
		}
	}

	/**
	 * Graceful shutdown: remove this node's presence, publish the departure
	 * of every local member, remove the node's keys; bounded in time.
	 */
	async leave()
	{
		this._stopped = true;

		for (const timer of this._timers)
		{
			clearInterval(timer);
		}

		const writes = [];

		for (const [ roomId, room ] of this._app.localRooms())
		{
			for (const peer of room.peers)
			{
				writes.push(this._pub.eval(DELETE_IF,
					{ keys: [ this._roomKey(roomId) ], arguments: [ peer.id, peer.data.presence ] }));

				const message = this._app.lostMessage(roomId, peer.id);

				if (message)
				{
					writes.push(this._pub.publish(this._roomKey(roomId),
						JSON.stringify({ node: this.id, except: [ peer.id ], method: message.method, data: message.data })));
				}
			}
		}

		writes.push(this._pub.del([ this._nodeRoomsKey(this.id), this._nodeKey(this.id) ]));
		writes.push(this._pub.sRem(this._nodesKey, this.id));

		await timeout(Promise.allSettled(writes), LEAVE_TIMEOUT).catch(ignore);

		for (const client of [ this._sub, this._pub ])
		{
			try
			{
				client.destroy();
			}
			catch (error)
			{
				// already closed
			}
		}
	}
}

module.exports = { Cluster, HEARTBEAT_INTERVAL, HEARTBEAT_TTL, SWEEP_INTERVAL };
