'use strict';

// Rooms across processes, reference run: three Node anchors (protoo-server
// 4.0.8 plus the npm redis client, anchor/cluster.js) on one redis-server that
// the suite starts. Skipped when redis-server cannot be found, unless
// PROTOO_INTEROP_REQUIRE=1 (then it fails).

const { defineClusterSuite } = require('../lib/cluster-suite');
const { anchorServer } = require('../lib/harness');

defineClusterSuite(anchorServer());
