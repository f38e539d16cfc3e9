'use strict';

// Direction 2, reference run: the JavaScript stand-in (protoo-client) follows
// the rust_peer script against protoo-server, which shows that the script and
// the suite's expectations are protoo's own behaviour.

const path = require('path');
const { INTEROP_DIR } = require('../lib/harness');
const { definePeerSuite } = require('../lib/peer-suite');

definePeerSuite({
	name    : 'JavaScript stand-in peer (protoo-client 4.0.8)',
	command : [ process.execPath, path.join(INTEROP_DIR, 'tools', 'stand-in-peer.js') ]
});
