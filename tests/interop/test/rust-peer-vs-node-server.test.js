'use strict';

// Direction 2: our Rust peer (the rust_peer example: our WebSocket client
// transport + Peer) against the real protoo-server@4.0.8. PROTOO_RUST_PEER_BIN
// is the built binary (or PROTOO_RUST_PEER_CMD a command line). See README.md.

const path = require('path');
const { test } = require('node:test');
const { INTEROP_DIR, requireAll } = require('../lib/harness');
const { definePeerSuite } = require('../lib/peer-suite');

const missing = 'set PROTOO_RUST_PEER_BIN (the built rust_peer example) or PROTOO_RUST_PEER_CMD';
let peer = null;

if (process.env.PROTOO_RUST_PEER_BIN)
{
	peer =
	{
		name    : `rust_peer (${process.env.PROTOO_RUST_PEER_BIN})`,
		command : [ path.resolve(INTEROP_DIR, process.env.PROTOO_RUST_PEER_BIN) ]
	};
}
else if (process.env.PROTOO_RUST_PEER_CMD)
{
	peer =
	{
		name    : `peer (${process.env.PROTOO_RUST_PEER_CMD})`,
		command : process.env.PROTOO_RUST_PEER_CMD.trim().split(/\s+/)
	};
}

if (!peer && requireAll())
{
	test('rust_peer is configured', () =>
	{
		throw new Error(`PROTOO_INTEROP_REQUIRE=1 but no peer program: ${missing}`);
	});
}
else
{
	definePeerSuite(peer, { skipReason: missing });
}
