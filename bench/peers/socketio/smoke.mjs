// Smoke test for a running Socket.IO peer, speaking Engine.IO v4 / Socket.IO v5
// at the packet level over a raw WebSocket (no Socket.IO client library).
//
//   node smoke.mjs [port]          (default: $PORT or 3001)
//   SMOKE_VERBOSE=1 node smoke.mjs (print every frame sent and received)
//   SMOKE_WAIT_PING=1 node smoke.mjs (also wait for a server ping and answer it;
//                                     start the server with a small PING_INTERVAL_MS)
//
// It starts nothing itself. Exits 0 when every check passes.
import WebSocket from 'ws';

const port = Number(process.argv[2] || process.env.PORT || 3001);
const url = `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`;
const verbose = !!process.env.SMOKE_VERBOSE;
const waitPing = !!process.env.SMOKE_WAIT_PING;
const runId = `${process.pid}-${Date.now()}`;

let passed = 0;
let failed = 0;
function check(name, cond, detail) {
  if (cond) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}${detail !== undefined ? ': ' + JSON.stringify(detail) : ''}`);
  }
}

const overall = setTimeout(() => {
  console.log('FAIL timeout');
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, waitPing ? 90000 : 15000);

function abbrev(text) {
  return text.length > 300 ? `${text.slice(0, 150)}...<${text.length} chars>...${text.slice(-60)}` : text;
}

class RawClient {
  constructor(name) {
    this.name = name;
    this.queue = [];
    this.waiters = [];
    this.nextAck = 1;
    this.pings = 0;
  }

  open() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(url, { perMessageDeflate: false });
      this.ws.on('message', (data, isBinary) => {
        const text = isBinary ? `<binary ${data.length}>` : data.toString('utf8');
        if (verbose) console.log(`${this.name} <- ${abbrev(text)}`);
        if (text === '2') {
          // Engine.IO ping from the server: answer with pong.
          this.pings++;
          this.sendRaw('3');
        }
        this.queue.push(text);
        this.pump();
      });
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
  }

  sendRaw(text) {
    if (verbose) console.log(`${this.name} -> ${abbrev(text)}`);
    this.ws.send(text);
  }

  pump() {
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i];
      const idx = this.queue.findIndex(w.pred);
      if (idx >= 0) {
        const [pkt] = this.queue.splice(idx, 1);
        this.waiters.splice(i, 1);
        i--;
        clearTimeout(w.timer);
        w.resolve(pkt);
      }
    }
  }

  // Wait for (and consume) the first packet matching pred.
  expect(pred, what, ms = 5000) {
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`${this.name}: timed out waiting for ${what}`));
      }, ms);
      this.waiters.push(w);
      this.pump();
    });
  }

  // Socket.IO EVENT with ack id: 42<ackId>[event, payload]; answer is 43<ackId>[reply].
  async emitWithAck(event, payload) {
    const id = this.nextAck++;
    this.sendRaw(`42${id}${JSON.stringify([event, payload])}`);
    const pkt = await this.expect((p) => p.startsWith(`43${id}[`), `ack ${id}`);
    return JSON.parse(pkt.slice(`43${id}`.length))[0];
  }

  async nextMessage(pred = () => true) {
    const pkt = await this.expect((p) => {
      if (!p.startsWith('42[')) return false;
      const [ev, data] = JSON.parse(p.slice(2));
      return ev === 'message' && pred(data);
    }, 'message event');
    return JSON.parse(pkt.slice(2))[1];
  }

  close() {
    this.ws.close();
  }
}

async function connect(name, token) {
  const c = new RawClient(name);
  await c.open();
  const openPkt = await c.expect((p) => p.startsWith('0{'), 'engine.io open packet');
  c.handshake = JSON.parse(openPkt.slice(1));
  c.sendRaw(`40${JSON.stringify({ token })}`);
  c.connectReply = await c.expect((p) => p.startsWith('40') || p.startsWith('44'), 'namespace connect reply');
  return c;
}

async function main() {
  console.log(`smoke: ${url}`);

  const a = await connect('A(u1)', 'u1');
  const b = await connect('B(u2)', 'u2');
  check('open packet has sid/upgrades/pingInterval/pingTimeout/maxPayload',
    typeof a.handshake.sid === 'string' && Array.isArray(a.handshake.upgrades) &&
    Number.isInteger(a.handshake.pingInterval) && Number.isInteger(a.handshake.pingTimeout) &&
    a.handshake.maxPayload === 65536, a.handshake);
  check('A connect accepted (40{"sid":...})', /^40\{"sid":"[^"]+"\}$/.test(a.connectReply), a.connectReply);
  check('B connect accepted (40{"sid":...})', /^40\{"sid":"[^"]+"\}$/.test(b.connectReply), b.connectReply);

  const bad = await connect('X(bad)', 'nope');
  check('bad token rejected (44{"message":"unauthenticated"})',
    bad.connectReply === '44{"message":"unauthenticated"}', bad.connectReply);
  bad.close();

  // 1:1 message A -> B, twice: seq must increase by one.
  const t1 = Date.now();
  const ack1 = await a.emitWithAck('send', { to_user: 2, body: 'hello b', txn: `${runId}-1`, t: t1 });
  check('1:1 send acked with {seq}', Number.isInteger(ack1.seq) && ack1.seq >= 1, ack1);
  const m1 = await b.nextMessage((d) => d.txn === `${runId}-1`);
  check('1:1 message delivered to B',
    m1.from === 1 && m1.to_user === 2 && m1.body === 'hello b' && m1.seq === ack1.seq && m1.t === t1, m1);
  const ack2 = await a.emitWithAck('send', { to_user: 2, body: 'again', txn: `${runId}-2`, t: t1 + 1 });
  check('per-target seq increases by one', ack2.seq === ack1.seq + 1, [ack1, ack2]);
  const m2 = await b.nextMessage((d) => d.txn === `${runId}-2`);
  check('second 1:1 message delivered', m2.seq === ack2.seq, m2);

  // Room message: both join, A sends, both receive (fan-out includes sender).
  const room = `smoke-${runId}`;
  const ja = await a.emitWithAck('join', { room });
  const jb = await b.emitWithAck('join', { room });
  check('join acked {ok:true}', ja.ok === true && jb.ok === true, [ja, jb]);
  const t2 = Date.now();
  const ack3 = await a.emitWithAck('send', { room, body: 'hello room', txn: `${runId}-3`, t: t2 });
  check('room send acked with seq 1 (new room)', ack3.seq === 1, ack3);
  const ma = await a.nextMessage((d) => d.txn === `${runId}-3`);
  const mb = await b.nextMessage((d) => d.txn === `${runId}-3`);
  for (const [who, m] of [['A (sender)', ma], ['B', mb]]) {
    check(`room message delivered to ${who}`,
      m.from === 1 && m.room === room && m.body === 'hello room' && m.seq === 1 && m.t === t2 &&
      !('to_user' in m), m);
  }

  // Validation.
  const e1 = await a.emitWithAck('send', { to_user: 2, room, body: 'x', txn: 'x', t: 1 });
  check('both to_user and room -> bad_request', e1.error === 'bad_request', e1);
  const e2 = await a.emitWithAck('send', { to_user: 2, body: 'x'.repeat(16385), txn: 'x', t: 1 });
  check('body > 16384 bytes -> bad_request', e2.error === 'bad_request', e2);
  const ok16k = await a.emitWithAck('send', { to_user: 3, body: 'x'.repeat(16384), txn: 'x', t: 1 });
  check('body of exactly 16384 bytes accepted', Number.isInteger(ok16k.seq), ok16k);
  const e3 = await a.emitWithAck('send', { body: 'x', txn: 'x', t: 1 });
  check('neither to_user nor room -> bad_request', e3.error === 'bad_request', e3);
  const e4 = await a.emitWithAck('send', { room: `not-joined-${runId}`, body: 'x', txn: 'x', t: 1 });
  check('room not joined -> forbidden', e4.error === 'forbidden', e4);

  if (waitPing) {
    const ms = a.handshake.pingInterval + 5000;
    await a.expect((p) => p === '2', 'ping', ms);
    check('server ping "2" received (answered "3")', a.pings >= 1, a.pings);
    // Still connected after answering: a request still gets its ack.
    const j2 = await a.emitWithAck('join', { room });
    check('still connected after ping/pong', j2.ok === true, j2);
  }

  a.close();
  b.close();
  clearTimeout(overall);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((err) => {
  console.log(`FAIL ${err.message}`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
});
