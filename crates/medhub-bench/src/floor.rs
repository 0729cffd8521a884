//! The floor: the least a server can do for the fan-out scenario on this machine, measured by
//! the same load generator and clients as medhub and the peers.
//!
//! `medhub-bench floor-server` is a bare relay with nothing but the wire: one thread, no
//! storage, no authentication, no per-connection tasks on the send path. It speaks just enough
//! of medhub's protocol for the fan-out clients (`hello` → `ready`, `send` → `sent` and an
//! `event` to every member) and writes each event, built once, to each member's socket in one
//! loop. Whatever latency it shows is the cost of the kernel's loopback TCP and of the load
//! generator sharing the two cores; no server can do better here, so medhub's fan-out figures
//! are read against it.
//!
//! Channel membership is encoded in the conversation id the load generator is given:
//! [`channel_id`] `(n, m)` is channel `n` whose members are clients `0..m`. Client `i`
//! authenticates with the token `floor-i`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::frame;

/// The conversation id of channel `n` with members `0..members`.
pub fn channel_id(n: usize, members: usize) -> String {
    format!("00000000-0000-7000-8{n:03x}-{members:012}")
}

/// The members of a channel id made by [`channel_id`].
fn members_of(conversation: &str) -> Option<usize> {
    conversation.rsplit('-').next()?.parse().ok()
}

/// The token client `i` presents.
pub fn token(i: usize) -> String {
    format!("floor-{i}")
}

/// The running floor server (a child process of the load generator).
pub struct FloorServer {
    child: tokio::process::Child,
    pub pid: u32,
    pub port: u16,
    pub command: String,
    pub log: PathBuf,
}

impl FloorServer {
    /// Starts `medhub-bench floor-server --port PORT` (`exe`, or this executable) and waits
    /// for its `ready` line.
    pub async fn start(exe: Option<&Path>, port: u16, work: &Path) -> Result<Self> {
        let exe = match exe {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe().context("the load generator's own path")?,
        };
        let log = work.join("floor-server.log");
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(["floor-server", "--port", &port.to_string()]);
        let (child, pid) = crate::spawn_until_ready(&mut cmd, "the floor server", &log).await?;
        let command = format!("{} floor-server --port {port}", exe.display());
        Ok(Self { child, pid, port, command, log })
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Runs the floor server on 127.0.0.1:`port` until killed. Single-threaded on purpose.
pub fn serve(port: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let socket = tokio::net::TcpSocket::new_v4().context("socket")?;
        socket.set_reuseaddr(true).context("reuseaddr")?;
        socket.bind(([127, 0, 0, 1], port).into()).with_context(|| format!("bind port {port}"))?;
        let listener: TcpListener = socket.listen(16_384).context("listen")?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "ready {port}").and_then(|()| out.flush()).context("announce readiness")?;
        }
        let hub = Rc::new(Hub::default());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let hub = hub.clone();
            tokio::task::spawn_local(async move {
                if let Err(e) = connection(hub, stream).await {
                    eprintln!("connection: {e:#}");
                }
            });
        }
    })
}

/// The connected clients, by client number, and the counters of the relay.
#[derive(Default)]
struct Hub {
    conns: RefCell<Vec<Option<Rc<Conn>>>>,
    cursor: Cell<u64>,
    seqs: RefCell<HashMap<String, u64>>,
}

/// One client socket: writes go straight to it; what the kernel does not take waits in
/// `pending` for the connection's writer task.
struct Conn {
    stream: TcpStream,
    pending: RefCell<Vec<u8>>,
    wake: Notify,
}

impl Conn {
    fn send(&self, bytes: &[u8]) {
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            pending.extend_from_slice(bytes);
            return;
        }
        let written = match self.stream.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return,
        };
        if written < bytes.len() {
            pending.extend_from_slice(&bytes[written..]);
            self.wake.notify_one();
        }
    }

    async fn flush_forever(self: Rc<Self>) {
        loop {
            self.wake.notified().await;
            while !self.pending.borrow().is_empty() {
                if self.stream.writable().await.is_err() {
                    return;
                }
                let mut pending = self.pending.borrow_mut();
                match self.stream.try_write(&pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    }
}

/// A server-to-client text frame (unmasked), with medhub's own header encoding.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 10];
    let n = medhub_api::text_header(payload.len(), &mut header);
    let mut f = Vec::with_capacity(n + payload.len());
    f.extend_from_slice(&header[..n]);
    f.extend_from_slice(payload);
    f
}

/// One client frame parsed from the front of `buf`: (opcode, unmasked payload, bytes used).
fn parse_client_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let mut payload = buf.get(at..at + len)?.to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Some((opcode, payload, at + len))
}

async fn handshake(stream: &mut TcpStream) -> Result<()> {
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || req.len() > 16 * 1024 {
            bail!("bad upgrade request");
        }
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let key = text
        .lines()
        .find_map(|l| {
            let (h, v) = l.split_once(':')?;
            h.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| v.trim().to_owned())
        })
        .ok_or_else(|| anyhow!("no Sec-WebSocket-Key"))?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let mut written = 0;
    while written < answer.len() {
        stream.writable().await?;
        match stream.try_write(&answer.as_bytes()[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn connection(hub: Rc<Hub>, mut stream: TcpStream) -> Result<()> {
    stream.set_nodelay(true)?;
    handshake(&mut stream).await?;
    let conn = Rc::new(Conn { stream, pending: RefCell::new(Vec::new()), wake: Notify::new() });
    let writer = tokio::task::spawn_local(conn.clone().flush_forever());
    let mut me: Option<usize> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let result = async {
        loop {
            while let Some((opcode, payload, used)) = parse_client_frame(&buf) {
                buf.drain(..used);
                match opcode {
                    0x1 => on_text(&hub, &conn, &mut me, &payload),
                    0x8 => return Ok(()),
                    0x9 => {
                        let mut pong = vec![0x8a, payload.len() as u8];
                        pong.extend_from_slice(&payload);
                        conn.send(&pong);
                    }
                    _ => {}
                }
            }
            conn.stream.readable().await?;
            let mut chunk = [0u8; 4096];
            match conn.stream.try_read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(anyhow::Error::from(e)),
            }
        }
    }
    .await;
    if let Some(i) = me
        && let Some(slot) = hub.conns.borrow_mut().get_mut(i)
    {
        *slot = None;
    }
    writer.abort();
    result
}

fn on_text(hub: &Hub, conn: &Rc<Conn>, me: &mut Option<usize>, payload: &[u8]) {
    let Ok(text) = std::str::from_utf8(payload) else { return };
    match frame::str_field(text, "type", 0).map(|v| v.0) {
        Some("hello") => {
            let Some(i) = frame::str_field(text, "token", 0)
                .and_then(|(t, _)| t.strip_prefix("floor-"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                conn.send(&text_frame(br#"{"type":"error","code":"unauthenticated","message":"bad token"}"#));
                return;
            };
            {
                let mut conns = hub.conns.borrow_mut();
                if conns.len() <= i {
                    conns.resize(i + 1, None);
                }
                conns[i] = Some(conn.clone());
            }
            *me = Some(i);
            let ready = format!(
                r#"{{"type":"ready","protocol":1,"user_id":"{uid}","session_id":"{uid}","cursor":{c},"heartbeat_interval_ms":30000,"limits":{{"max_message_bytes":16384,"max_frame_bytes":65536,"frames_per_second":20,"frame_burst":100,"queue_frames":1024,"max_in_flight":256}}}}"#,
                uid = fake_uuid(i as u64),
                c = hub.cursor.get()
            );
            conn.send(&text_frame(ready.as_bytes()));
        }
        Some("send") => {
            let (Some(sender), Some((id, _)), Some((conv, _)), Some((txn, _))) = (
                *me,
                frame::str_field(text, "id", 0),
                frame::str_field(text, "conversation_id", 0),
                frame::str_field(text, "client_txn_id", 0),
            ) else {
                return;
            };
            let Some(members) = members_of(conv) else { return };
            let body = frame::str_field(text, "body", 0).map_or("", |v| v.0);
            let seq = {
                let mut seqs = hub.seqs.borrow_mut();
                let s = seqs.entry(conv.to_owned()).or_insert(0);
                *s += 1;
                *s
            };
            let cursor = hub.cursor.get() + 1;
            hub.cursor.set(cursor);
            let message = format!(
                r#"{{"id":"{mid}","conversation_id":"{conv}","seq":{seq},"sender_id":"{sid}","client_txn_id":"{txn}","body":"{body}","priority":"routine","reply_to":null,"created_at":"2026-11-26T06:20:01.123456Z","revision":0,"edited_at":null,"recalled":null,"requires_ack":false}}"#,
                mid = fake_uuid(cursor),
                sid = fake_uuid(sender as u64),
            );
            let sent = format!(r#"{{"type":"sent","id":"{id}","duplicate":false,"message":{message}}}"#);
            conn.send(&text_frame(sent.as_bytes()));
            let event = text_frame(
                format!(
                    r#"{{"type":"event","cursor":{cursor},"conversation_id":"{conv}","at":"2026-11-26T06:20:01.123456Z","actor_id":"{sid}","kind":"message.created","message":{message}}}"#,
                    sid = fake_uuid(sender as u64),
                )
                .as_bytes(),
            );
            let conns = hub.conns.borrow();
            for c in conns.iter().take(members).flatten() {
                c.send(&event);
            }
        }
        _ => {}
    }
}

/// A UUID-shaped id (the clients treat ids as opaque strings of this length).
fn fake_uuid(n: u64) -> String {
    format!("01a21680-0000-7000-8000-{n:012x}")
}

/// The seeding result the fan-out clients need: tokens and channel ids.
pub fn seeded(users: usize, channels: &[usize]) -> crate::medhub::Seeded {
    crate::medhub::Seeded {
        tokens: (0..users).map(|i| Arc::from(token(i))).collect(),
        pairs: Vec::new(),
        channels: channels.iter().enumerate().map(|(n, &m)| Arc::from(channel_id(n, m))).collect(),
        cursor: 0,
        report: crate::medhub::SeedReport { users, ..Default::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_carry_their_membership() {
        assert_eq!(members_of(&channel_id(2, 15_000)), Some(15_000));
        assert_eq!(channel_id(1, 100).len(), 36);
    }

    #[test]
    fn client_frames_unmask_and_server_frames_use_the_right_length_form() {
        let mask = [1u8, 2, 3, 4];
        let payload = b"{\"type\":\"hello\"}";
        let mut f = vec![0x81, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f.push(0x81); // the start of a next frame stays in the buffer
        let (op, p, used) = parse_client_frame(&f).unwrap();
        assert_eq!((op, p.as_slice(), used), (1, &payload[..], f.len() - 1));
        assert!(parse_client_frame(&f[..5]).is_none());
        assert_eq!(&text_frame(&[b'a'; 200])[..4], &[0x81, 126, 0, 200]);
        assert_eq!(text_frame(b"ab"), vec![0x81, 2, b'a', b'b']);
    }
}
