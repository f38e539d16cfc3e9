'use strict';

// Rooms across processes: three room examples (PROTOO_ROOM_BIN, built with its
// `redis` cargo feature, or PROTOO_ROOM_CMD) on one redis-server that the
// suite starts, driven by the real protoo-client@4.0.8; then again over
// Redis Sentinel and over Redis Cluster when PROTOO_REDIS_SENTINEL (with
// PROTOO_REDIS_MASTER) and PROTOO_REDIS_CLUSTER name running ones (`cargo
// xtask ci` and `cargo xtask redis-ha` print them). See README.md and
// lib/cluster-suite.js.

const { test } = require('node:test');
const { roomServerFromEnv, requireAll } = require('../lib/harness');
const { defineClusterSuite, redisTopologiesFromEnv } = require('../lib/cluster-suite');

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

	for (const topology of redisTopologiesFromEnv())
	{
		defineClusterSuite(server, { skipReason: missing, topology });
	}
}
