'use strict';
// Socket.IO 4 chat relay: the comparison peer for the medhub benchmark.
//
// Minimal but honest: token auth in the handshake, per-user rooms, chat rooms,
// a per-target in-memory sequence number, acks. Nothing is persisted.
// See README.md for the wire protocol.

const http = require('node:http');
const { Server } = require('socket.io');

const PORT = parsePort(process.env.PORT, 3001);
const HOST = '127.0.0.1';
const BACKLOG = 16384;
const MAX_BODY_BYTES = 16384;
const MAX_ROOM_CHARS = 256;
const MAX_TXN_CHARS = 256;

function parsePort(raw, dflt) {
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`invalid PORT: ${raw}`);
    process.exit(2);
  }
  return n;
}

function optionalMs(name) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`invalid ${name}: ${raw}`);
    process.exit(2);
  }
  return n;
}

const TOKEN_RE = /^u(0|[1-9][0-9]*)$/;

function userIdFromToken(token) {
  if (typeof token !== 'string') return null;
  const m = TOKEN_RE.exec(token);
  if (!m) return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : null;
}

function validRoomName(room) {
  return typeof room === 'string' && room.length > 0 && room.length <= MAX_ROOM_CHARS;
}

function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const httpServer = http.createServer();

const serverOptions = {
  serveClient: false,
  // Clients use transports: ['websocket']; long-polling stays available.
  transports: ['polling', 'websocket'],
  maxHttpBufferSize: 65536,
  perMessageDeflate: false,
};
// Socket.IO's defaults are pingInterval 25000 ms and pingTimeout 20000 ms;
// these env overrides exist only to make the heartbeat quick to observe.
const pingInterval = optionalMs('PING_INTERVAL_MS');
const pingTimeout = optionalMs('PING_TIMEOUT_MS');
if (pingInterval !== undefined) serverOptions.pingInterval = pingInterval;
if (pingTimeout !== undefined) serverOptions.pingTimeout = pingTimeout;

const io = new Server(httpServer, serverOptions);

// Per-target monotonically increasing sequence numbers, in memory only.
// Keys: "u:<userId>" for 1:1 targets, "r:<room>" for rooms.
const seqs = new Map();
function nextSeq(key) {
  const s = (seqs.get(key) || 0) + 1;
  seqs.set(key, s);
  return s;
}

io.use((socket, next) => {
  const auth = socket.handshake.auth;
  const uid = userIdFromToken(isObject(auth) ? auth.token : undefined);
  if (uid === null) {
    next(new Error('unauthenticated'));
    return;
  }
  socket.data.uid = uid;
  next();
});

io.on('connection', (socket) => {
  const uid = socket.data.uid;
  socket.join(`user:${uid}`);

  socket.on('join', (payload, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    if (!isObject(payload) || !validRoomName(payload.room)) {
      reply({ error: 'bad_request' });
      return;
    }
    socket.join(`room:${payload.room}`);
    reply({ ok: true });
  });

  socket.on('send', (payload, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    if (!isObject(payload)) {
      reply({ error: 'bad_request' });
      return;
    }
    const { to_user: toUser, room, body, txn, t } = payload;
    const hasUser = toUser !== undefined && toUser !== null;
    const hasRoom = room !== undefined && room !== null;
    if (
      hasUser === hasRoom ||
      (hasUser && !(Number.isSafeInteger(toUser) && toUser >= 0)) ||
      (hasRoom && !validRoomName(room)) ||
      typeof body !== 'string' ||
      Buffer.byteLength(body, 'utf8') > MAX_BODY_BYTES ||
      typeof txn !== 'string' ||
      txn.length === 0 ||
      txn.length > MAX_TXN_CHARS ||
      typeof t !== 'number' ||
      !Number.isFinite(t)
    ) {
      reply({ error: 'bad_request' });
      return;
    }
    if (hasUser) {
      const seq = nextSeq(`u:${toUser}`);
      io.to(`user:${toUser}`).emit('message', { from: uid, to_user: toUser, body, txn, seq, t });
      reply({ seq });
    } else {
      // A sender may only post to a room it has joined.
      if (!socket.rooms.has(`room:${room}`)) {
        reply({ error: 'forbidden' });
        return;
      }
      const seq = nextSeq(`r:${room}`);
      // io.to (not socket.to): fan-out includes the sender.
      io.to(`room:${room}`).emit('message', { from: uid, room, body, txn, seq, t });
      reply({ seq });
    }
  });
});

httpServer.on('error', (err) => {
  console.error(`listen failed: ${err.message}`);
  process.exit(1);
});

httpServer.listen(PORT, HOST, BACKLOG, () => {
  process.stdout.write(`ready ${httpServer.address().port}\n`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.error(`${signal}: shutting down`);
  // Force exit if closing hangs (e.g. a stuck client).
  setTimeout(() => process.exit(0), 5000).unref();
  io.close(() => process.exit(0));
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
