'use strict';

// Bundles protoo-client@4.0.8 (pinned in package-lock.json) for the browser
// into the room example's page: `npm run bundle`. `cargo xtask ci` runs it
// with another output path (the first argument) and checks that the
// committed file is byte for byte what it produces.

const path = require('path');
const esbuild = require('esbuild');

const DEFAULT_OUT = path.resolve(__dirname, '..', '..', 'examples', 'room', 'page', 'protoo-client.js');

esbuild.buildSync({
	entryPoints   : [ 'protoo-client' ],
	absWorkingDir : __dirname,
	bundle        : true,
	platform      : 'browser',
	format        : 'iife',
	globalName    : 'protooClient',
	target        : 'es2020',
	minify        : true,
	legalComments : 'eof',
	charset       : 'utf8',
	banner        : {
		js : '/* protoo-client@4.0.8 and its dependencies (MIT; websocket: Apache-2.0; es5-ext: ISC), ' +
			'bundled for the browser by `npm run bundle` in tests/browser. Do not edit. */'
	},
	outfile  : process.argv[2] ? path.resolve(process.argv[2]) : DEFAULT_OUT,
	logLevel : 'warning'
});
