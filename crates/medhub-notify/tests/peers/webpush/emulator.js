#!/usr/bin/env node
// A push service for medhub-notify's Web Push tests: npm web-push-testing, bound to 127.0.0.1
// on the port given (`node emulator.js --port N`), in the foreground so the test can kill it.
//
// web-push-testing itself verifies the VAPID token's ES256 signature against the key the
// subscription was made with (and its `exp`), checks `k` is that key, and decrypts the
// aes128gcm payload with the subscription's private key. It does not look at `aud` or `sub`,
// nor at TTL's value beyond being a number, nor at Urgency and Topic, so this wrapper records
// every push request's headers and decoded token claims, and the status the emulator
// answered, for the test to check (POST /medhub/requests).

'use strict';

const TestingServer = require('web-push-testing/src/server.js');
const {PushApiModel} = require('web-push-testing/src/PushApiModel.js');

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : NaN;
if (!Number.isInteger(port) || port <= 0) {
	console.error('usage: node emulator.js --port N');
	process.exit(2);
}

const model = new PushApiModel();
const server = new TestingServer(model, port);
model.notifyUrl = `http://127.0.0.1:${port}/notify/`;

const requests = [];

function decodeJwtPart(part) {
	try {
		return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
	} catch {
		return null;
	}
}

// Runs after the emulator's body parsers, before its routes.
server._app.use((req, res, next) => {
	if (req.method !== 'POST' || !req.path.startsWith('/notify/')) {
		next();
		return;
	}

	const authorization = req.get('Authorization') || '';
	let token = null;
	let k = null;
	const match = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(authorization);
	if (match) {
		const [header, claims] = match[1].split('.');
		token = {header: decodeJwtPart(header), claims: decodeJwtPart(claims)};
		k = match[2];
	}

	const record = {
		clientHash: req.path.slice('/notify/'.length),
		ttl: req.get('TTL') ?? null,
		urgency: req.get('Urgency') ?? null,
		topic: req.get('Topic') ?? null,
		// The emulator moves Content-Encoding here before its parsers run.
		contentEncoding: req.get('X-Content-Encoding') ?? null,
		contentType: req.get('Content-Type') ?? null,
		authorizationScheme: authorization.split(' ')[0] || null,
		token,
		k,
		bodyLength: Buffer.isBuffer(req.body) ? req.body.length : null,
		status: null,
	};
	requests.push(record);
	res.on('finish', () => {
		record.status = res.statusCode;
	});
	next();
});

server._app.post('/medhub/requests', (req, res) => {
	res.status(200).send({requests});
});

// The emulator's own startServer() listens on every interface; listen on loopback only.
server._server = server._app.listen(port, '127.0.0.1', () => {
	console.log(`listening ${port}`);
});
server._server.on('error', err => {
	console.error(err);
	process.exit(1);
});
server.setRequestHandlers();
