'use strict';

// Rooms across processes: three room examples (PROTOO_ROOM_BIN, built with its
// `redis` cargo feature, or PROTOO_ROOM_CMD) on one redis-server that the
// suite starts, driven by the real protoo-client@4.0.8. See README.md and
// lib/cluster-suite.js.

const { test } = require('node:test');
const { roomServerFromEnv, requireAll } = require('../lib/harness');
const { defineClusterSuite } = require('../lib/cluster-suite');

const server = roomServerFromEnv();
const missing = 'set PROTOO_ROOM_BIN (the room example built with --features redis) or PROTOO_ROOM_CMD';

if (!server && requireAll())
{
	test('room server under test is configured', () =>
	{
		throw new Error(`PROTOO_INTEROP_REQUIRE=1 but no server: ${missing}`);
	});
}
else
{
	defineClusterSuite(server, { skipReason: missing });
}
