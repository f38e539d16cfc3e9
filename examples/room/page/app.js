// The room example's chat page: joins a room with the real protoo-client
// (page/protoo-client.js, the global `protooClient`) on the server the page
// came from.
//
// `/?roomId=R&peerId=P&displayName=N&token=T`, each optional. A `token`
// (a server started with --auth-secret needs one; `room token` mints it)
// goes through to the WebSocket URL, and the room, peer id and name it
// carries are the defaults (the server checks it; the page only reads
// it). What a remote sends (names, chat text) only ever goes into the page
// as text.
//
// Across a blip (the server keeps the session for its resume window): while
// protoo-client is disconnected the page says "reconnecting…" and keeps its
// history; protoo-client reconnects by itself, the page runs `join` again
// (idempotent: the same list, nobody told), the messages sent meanwhile
// arrive in order, then `resumed {missed}`. Closing the tab leaves the room
// at once (a clean close), not after the window.
'use strict';

(() =>
{
	const MAX_MESSAGES = 500;
	const HUES = 8;
	// What the status says for a state, when not the state's name.
	const STATUS_TEXT = { disconnected: 'reconnecting…' };

	const params = new URLSearchParams(location.search);
	const token = params.get('token');
	const claims = tokenClaims(token);
	const claim = (name) => (typeof claims[name] === 'string' ? claims[name] : '');
	const roomId = params.get('roomId') || claim('room') || 'lobby';
	const peerId = params.get('peerId') || claim('sub') || randomId();
	const displayName =
		params.get('displayName') || claim('name') || `Guest ${peerId.slice(0, 4)}`;

	const $ = (id) => document.getElementById(id);
	const statusEl = $('status');
	const peersEl = $('peers');
	const peerCountEl = $('peer-count');
	const messagesEl = $('messages');
	const composer = $('composer');
	const input = $('chat-input');
	const sendButton = $('send');
	const leaveButton = $('leave');

	$('room-name').textContent = roomId;
	$('my-name').textContent = displayName;
	document.title = `${roomId} · protoo room`;

	// The other joined peers: id -> display name.
	const peers = new Map();
	let everOpen = false;

	const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
	const query = new URLSearchParams(
		token ? { roomId, peerId, token } : { roomId, peerId }).toString();
	const transport = new protooClient.WebSocketTransport(`${scheme}://${location.host}/?${query}`);
	const peer = new protooClient.Peer(transport);

	setStatus('connecting');
	renderPeers();

	peer.on('open', async () =>
	{
		if (everOpen)
			notice('Reconnected');
		everOpen = true;
		setStatus('open');
		try
		{
			const answer = await peer.request('join', { displayName });

			peers.clear();
			for (const other of (answer && Array.isArray(answer.peers)) ? answer.peers : [])
			{
				if (other && typeof other.id === 'string' && other.id !== peerId)
					peers.set(other.id, nameOf(other.displayName, other.id));
			}
			renderPeers();
		}
		catch (error)
		{
			notice(`Could not join: ${error.message}`);
		}
	});

	// Before the first open every failed attempt is still "connecting";
	// afterwards it is part of reconnecting (shown as "reconnecting…").
	peer.on('failed', () => setStatus(everOpen ? 'disconnected' : 'connecting'));

	peer.on('disconnected', () =>
	{
		setStatus('disconnected');
		notice('Connection lost, reconnecting…');
	});

	peer.on('close', () =>
	{
		setStatus('closed');
		peers.clear();
		renderPeers();
		notice('You left the room. Reload the page to join again.');
	});

	peer.on('notification', (notification) =>
	{
		const data = notification.data || {};

		switch (notification.method)
		{
			case 'newPeer':
			{
				if (typeof data.id !== 'string' || data.id === peerId)
					return;
				const name = nameOf(data.displayName, data.id);

				peers.set(data.id, name);
				renderPeers();
				notice(`${name} joined`);
				break;
			}

			case 'peerClosed':
			{
				if (!peers.has(data.peerId))
					return;
				const name = peers.get(data.peerId);

				peers.delete(data.peerId);
				renderPeers();
				notice(`${name} left`);
				break;
			}

			// The server kept our session while we were away: what was
			// sent to us meanwhile came just before this, in order.
			case 'resumed':
			{
				const missed = Number.isSafeInteger(data.missed) && data.missed > 0 ? data.missed : 0;

				notice(missed === 0 ?
					'Session resumed, nothing missed' :
					`Session resumed: ${missed} message${missed === 1 ? '' : 's'} held for you while away`);
				break;
			}

			case 'chat':
			{
				const from = typeof data.peerId === 'string' ? data.peerId : '';

				addMessage(from, peers.get(from) || from || 'unknown', data.text, false);
				break;
			}

			default:
				break;
		}
	});

	// Requests from the server (the room's `ask` sends one back to us).
	peer.on('request', (request, accept, reject) =>
	{
		switch (request.method)
		{
			case 'echo':
				accept(request.data);
				break;

			case 'ping':
				accept({ pong: true });
				break;

			case 'whoami':
				accept({ roomId, peerId, displayName });
				break;

			default:
				reject(404, `unknown method ${String(request.method)}`);
		}
	});

	composer.addEventListener('submit', async (event) =>
	{
		event.preventDefault();
		const text = input.value.trim();

		if (!text || !peer.connected)
			return;
		input.value = '';
		const message = addMessage(peerId, displayName, text, true);

		message.classList.add('pending');
		try
		{
			await peer.request('chat', { text });
			message.classList.remove('pending');
		}
		catch (error)
		{
			message.classList.remove('pending');
			message.classList.add('failed');
			message.title = `Not sent: ${error.message}`;
		}
	});

	// Leaving for good: the room closes us (4000), so there is no reconnect.
	leaveButton.addEventListener('click', () =>
	{
		leaveButton.disabled = true;
		peer.request('kick').catch(() => peer.close());
	});

	// Closing the tab (or leaving the page) is leaving the room: a clean
	// close, so the others see it at once rather than after the server's
	// resume window (a browser closes a page's sockets with 1001, which the
	// server takes for a lost connection).
	window.addEventListener('pagehide', () => peer.close());
	// Back from the back-forward cache: that page's peer is closed; join anew.
	window.addEventListener('pageshow', (event) =>
	{
		if (event.persisted)
			location.reload();
	});

	// For the browser tests and the curious: the page's protoo peer.
	window.protooRoom = { peer, roomId, peerId, displayName };

	function setStatus(state)
	{
		statusEl.textContent = STATUS_TEXT[state] || state;
		statusEl.dataset.state = state;
		const open = state === 'open';

		input.disabled = !open;
		sendButton.disabled = !open;
		leaveButton.disabled = state === 'closed' || !open;
		document.body.classList.toggle('offline', !open);
	}

	function renderPeers()
	{
		const items = [ personItem(peerId, displayName, true) ];

		for (const [ id, name ] of peers)
		{
			items.push(personItem(id, name, false));
		}
		peersEl.replaceChildren(...items);
		peerCountEl.textContent = String(items.length);
	}

	function personItem(id, name, self)
	{
		const li = element('li', 'person');

		li.dataset.peerId = id;
		if (self)
			li.classList.add('self');
		li.append(avatar(id, name), element('span', 'name', name));
		if (self)
			li.append(element('span', 'tag', 'you'));

		return li;
	}

	function addMessage(from, name, text, mine)
	{
		const li = element('li', 'message');

		li.dataset.from = from;
		if (mine)
			li.classList.add('mine');
		const now = new Date();
		const time = element('time', 'time', now.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));

		time.dateTime = now.toISOString();
		const head = element('div', 'head');

		head.append(element('span', 'author', mine ? 'You' : name), time);
		const body = element('div', 'text', typeof text === 'string' ? text : JSON.stringify(text));

		li.append(avatar(from, name), element('div', 'bubble'));
		li.lastChild.append(head, body);
		append(li);

		return li;
	}

	function notice(text)
	{
		append(element('li', 'notice', text));
	}

	function append(item)
	{
		const atBottom =
			messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 40;

		messagesEl.append(item);
		while (messagesEl.childElementCount > MAX_MESSAGES)
		{
			messagesEl.firstElementChild.remove();
		}
		if (atBottom || item.classList.contains('mine'))
			messagesEl.scrollTop = messagesEl.scrollHeight;
	}

	function avatar(id, name)
	{
		const span = element('span', `avatar hue-${hash(id) % HUES}`, initials(name));

		span.setAttribute('aria-hidden', 'true');

		return span;
	}

	// Text only: textContent never parses HTML.
	function element(tag, className, text)
	{
		const el = document.createElement(tag);

		el.className = className;
		if (text !== undefined)
			el.textContent = text;

		return el;
	}

	function nameOf(name, id)
	{
		return typeof name === 'string' && name.trim() ? name.trim() : id;
	}

	function initials(name)
	{
		const words = String(name).trim().split(/\s+/).filter(Boolean);
		const letters = words.length > 1 ? [ words[0], words[1] ] : [ words[0] || '?' ];

		return letters.map((word) => Array.from(word)[0]).join('').toUpperCase();
	}

	function hash(text)
	{
		let h = 0;

		for (const char of String(text))
		{
			h = ((h * 31) + char.codePointAt(0)) >>> 0;
		}

		return h;
	}

	// The claims of a JWT, unverified (the server verifies it), or {}.
	function tokenClaims(jwt)
	{
		try
		{
			const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
			const claims = JSON.parse(atob(part));

			return claims && typeof claims === 'object' ? claims : {};
		}
		catch (error)
		{
			return {};
		}
	}

	function randomId()
	{
		const bytes = new Uint8Array(4);

		crypto.getRandomValues(bytes);

		return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
	}
})();
