'use strict';

// Direction 1: the real protoo-client@4.0.8 against our server, the room
// example (PROTOO_ROOM_BIN), or any server given by PROTOO_ROOM_CMD.
// See README.md for the interface and lib/room-suite.js for the cases.

const { test } = require('node:test');
const { roomServerFromEnv, requireAll } = require('../lib/harness');
const { defineRoomSuite } = require('../lib/room-suite');

const server = roomServerFromEnv();
const missing = 'set PROTOO_ROOM_BIN (the built room example) or PROTOO_ROOM_CMD';

if (!server && requireAll())
{
	test('room server under test is configured', () =>
	{
		throw new Error(`PROTOO_INTEROP_REQUIRE=1 but no server: ${missing}`);
	});
}
else
{
	defineRoomSuite(server, { skipReason: missing });
}
