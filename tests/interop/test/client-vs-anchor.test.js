'use strict';

// Direction 1, reference run: the same suite against the Node anchor
// (protoo-server@4.0.8 implementing the room contract). It shows that every
// expectation of the suite is protoo's own behaviour, and keeps the anchor
// that the benchmarks use working.

const { defineRoomSuite } = require('../lib/room-suite');
const { anchorServer } = require('../lib/harness');

defineRoomSuite(anchorServer());
