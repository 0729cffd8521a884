//! The WebSocket clients: one task per simulated user, for medhub's protocol and for
//! Socket.IO's. Both obey the same commands from the load driver and record into the same
//! [`Recorder`], so the peers are measured by the same code.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::frame;
use crate::net::{Dialer, Ws};
use crate::stats::{Recorder, Tag};

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The client's 1:1 conversation with its partner (client `i ^ 1`).
    Pair,
    /// Channel number `n` of the run.
    Channel(usize),
}

/// What the load driver tells a client to do.
#[derive(Clone, Copy, Debug)]
pub enum Cmd {
    /// Send one message now; `tag.sched` is when it was scheduled to leave (open loop).
    Send { tag: Tag, dest: Dest },
    /// Closed loop: keep `window` messages unacknowledged until `until_ns`.
    Window { window: usize, until_ns: u64, dest: Dest },
}

/// What every client task gets from the launcher.
pub struct ClientSetup {
    pub idx: usize,
    pub rec: Arc<Recorder>,
    /// Held until the handshake ends: bounds the handshakes in flight.
    pub permit: Option<OwnedSemaphorePermit>,
    pub started_ns: u64,
    pub cmds: UnboundedReceiver<Cmd>,
    pub stop: CancellationToken,
}

/// Closed-loop sending state.
#[derive(Debug)]
struct Window {
    outstanding: usize,
    until_ns: u64,
    dest: Dest,
    next_key: u64,
}

impl Window {
    /// The next message to send, if the window is open and time is not up.
    fn next(&mut self, rec: &Recorder, idx: usize) -> Option<(Tag, Dest)> {
        let now = rec.clock.now_ns();
        if now >= self.until_ns {
            return None;
        }
        self.outstanding += 1;
        self.next_key += 1;
        Some((Tag { phase: rec.phase(), key: self.next_key, sched: now, sender: idx as u32 }, self.dest))
    }
}

/// Starts a window and returns the messages to send right away.
fn open_window(
    slot: &mut Option<Window>,
    rec: &Recorder,
    idx: usize,
    window: usize,
    until_ns: u64,
    dest: Dest,
) -> Vec<(Tag, Dest)> {
    let w = slot.get_or_insert(Window { outstanding: 0, until_ns, dest, next_key: 0 });
    w.until_ns = until_ns;
    w.dest = dest;
    let mut out = Vec::new();
    while w.outstanding < window {
        match w.next(rec, idx) {
            Some(m) => out.push(m),
            None => break,
        }
    }
    out
}

/// One answer arrived: refill the window.
fn window_answered(slot: &mut Option<Window>, rec: &Recorder, idx: usize) -> Option<(Tag, Dest)> {
    let w = slot.as_mut()?;
    w.outstanding = w.outstanding.saturating_sub(1);
    w.next(rec, idx)
}

/// A resuming client's expectations: every missed message of its conversation, once, in
/// order.
#[derive(Clone, Debug)]
pub struct ResumeExpect {
    pub conversation: Arc<str>,
    pub messages: u64,
}

struct ResumeCheck {
    expect: ResumeExpect,
    next_seq: u64,
    last_cursor: u64,
    seen: HashSet<String>,
    received: u64,
    done: bool,
}

impl ResumeCheck {
    fn new(expect: ResumeExpect) -> Self {
        Self { expect, next_seq: 1, last_cursor: 0, seen: HashSet::new(), received: 0, done: false }
    }

    fn on_message(&mut self, rec: &Recorder, m: &frame::CreatedMessage<'_>) {
        let r = &rec.resume;
        r.events.fetch_add(1, Ordering::Relaxed);
        if m.cursor <= self.last_cursor {
            r.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        self.last_cursor = self.last_cursor.max(m.cursor);
        if m.conversation_id != &*self.expect.conversation {
            r.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let fresh = self.seen.insert(m.message_id.to_owned());
        if !fresh || m.seq < self.next_seq {
            r.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if m.seq > self.next_seq {
            r.gaps.fetch_add(m.seq - self.next_seq, Ordering::Relaxed);
        }
        self.next_seq = m.seq + 1;
        self.received += 1;
        if !self.done && self.next_seq > self.expect.messages {
            self.done = true;
            r.last_complete_ns.fetch_max(rec.clock.now_ns(), Ordering::AcqRel);
            let complete = r.complete.fetch_add(1, Ordering::AcqRel) + 1;
            if complete >= r.expected_clients.load(Ordering::Acquire) {
                r.done.notify_one();
            }
        }
    }
}

/// A medhub client: one user, one session token.
#[derive(Clone, Debug)]
pub struct MedhubClient {
    pub token: Arc<str>,
    /// Resume after this cursor (`hello.cursor`).
    pub cursor: Option<u64>,
    /// The 1:1 conversation with the partner, if any.
    pub pair: Option<Arc<str>>,
    /// The run's channels, by number.
    pub channels: Arc<Vec<Arc<str>>>,
    pub resume: Option<ResumeExpect>,
    pub body: Arc<str>,
}

fn medhub_send_frame(conversation: &str, tag: &Tag, body: &str) -> String {
    let t = tag.encode();
    format!(r#"{{"type":"send","id":"{t}","conversation_id":"{conversation}","client_txn_id":"{t}","body":"{body}"}}"#)
}

async fn medhub_hello(ws: &mut Ws, token: &str, cursor: Option<u64>) -> Result<()> {
    let hello = match cursor {
        Some(c) => format!(r#"{{"type":"hello","token":"{token}","cursor":{c}}}"#),
        None => format!(r#"{{"type":"hello","token":"{token}"}}"#),
    };
    ws.send(Message::text(hello)).await.map_err(|e| anyhow!("hello: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return match frame::frame_type(t.as_str()) {
                    Some("ready") => Ok(()),
                    Some("error") => {
                        bail!("hello refused: {}", frame::str_field(t.as_str(), "code", 0).map_or("?", |v| v.0))
                    }
                    other => bail!("unexpected first frame {other:?}"),
                };
            }
            Some(Ok(Message::Close(c))) => bail!("close {}", c.map_or(1005, |c| u16::from(c.code))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("read: {e}"),
            None => bail!("eof during hello"),
        }
    }
}

fn close_reason(msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match msg {
        Some(Ok(Message::Close(c))) => format!("close {}", c.map_or(1005, |c| u16::from(c.code))),
        Some(Err(e)) => format!("read error: {e}"),
        _ => "eof".to_owned(),
    }
}

impl MedhubClient {
    /// Connects, authenticates and then follows commands until stopped.
    pub async fn run(self, dialer: Arc<Dialer>, setup: ClientSetup) {
        let ClientSetup { idx, rec, permit, started_ns, mut cmds, stop } = setup;
        let connect = async {
            let mut ws = dialer.ws(idx, "/api/v1/ws").await?;
            medhub_hello(&mut ws, &self.token, self.cursor).await?;
            Ok::<_, anyhow::Error>(ws)
        };
        let mut ws = match tokio::time::timeout(dialer.timeout, connect).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                rec.error(&format!("{e}"));
                rec.storm_result(false, started_ns, idx);
                return;
            }
            Err(_) => {
                rec.error("handshake timeout");
                rec.storm_result(false, started_ns, idx);
                return;
            }
        };
        rec.storm_result(true, started_ns, idx);
        drop(permit);
        let mut window: Option<Window> = None;
        let mut resume = self.resume.clone().map(ResumeCheck::new);
        let mut cmds_open = true;
        loop {
            let mut outgoing: Vec<(Tag, Dest)> = Vec::new();
            tokio::select! {
                _ = stop.cancelled() => break,
                cmd = cmds.recv(), if cmds_open => match cmd {
                    None => cmds_open = false,
                    Some(Cmd::Send { tag, dest }) => outgoing.push((tag, dest)),
                    Some(Cmd::Window { window: w, until_ns, dest }) => {
                        outgoing = open_window(&mut window, &rec, idx, w, until_ns, dest);
                    }
                },
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Some(next) = self.on_frame(t.as_str(), idx, &rec, &mut window, resume.as_mut()) {
                            outgoing.push(next);
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        rec.on_closed(&close_reason(msg));
                        return;
                    }
                    Some(Ok(_)) => {}
                },
            }
            for (tag, dest) in outgoing {
                let conversation = match dest {
                    Dest::Pair => self.pair.clone(),
                    Dest::Channel(n) => self.channels.get(n).cloned(),
                };
                let Some(conversation) = conversation else {
                    rec.error("no such destination");
                    continue;
                };
                let text = medhub_send_frame(&conversation, &tag, &self.body);
                if let Err(e) = ws.send(Message::text(text)).await {
                    rec.on_closed(&format!("write error: {e}"));
                    return;
                }
                rec.on_sent(idx, tag.sched);
            }
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.close(None)).await;
    }

    /// Handles one server frame; returns a message to send if a window slot opened.
    fn on_frame(
        &self,
        text: &str,
        idx: usize,
        rec: &Recorder,
        window: &mut Option<Window>,
        resume: Option<&mut ResumeCheck>,
    ) -> Option<(Tag, Dest)> {
        match frame::frame_type(text) {
            Some("event") => match frame::event(text) {
                Some((_, Some(m))) => {
                    if let Some(check) = resume {
                        check.on_message(rec, &m);
                    } else if let Some(tag) = Tag::parse(m.client_txn_id) {
                        rec.on_delivery(idx, &tag);
                    } else {
                        rec.stale.fetch_add(1, Ordering::Relaxed);
                    }
                    None
                }
                Some((_, None)) => None,
                None => {
                    rec.unparsed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
            Some("sent") => {
                match frame::str_field(text, "id", 0).and_then(|(id, _)| Tag::parse(id)) {
                    Some(tag) => rec.on_ack(idx, &tag),
                    None => {
                        rec.unparsed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                window_answered(window, rec, idx)
            }
            Some("error") => {
                let code = frame::str_field(text, "code", 0).map_or("unknown", |v| v.0);
                let is_reply = frame::str_field(text, "id", 0).is_some();
                if is_reply {
                    rec.on_ack_error(code);
                    window_answered(window, rec, idx)
                } else {
                    rec.error(code);
                    None
                }
            }
            Some(_) => None,
            None => {
                rec.unparsed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// A Socket.IO client speaking Engine.IO v4 / Socket.IO v5 over a raw WebSocket, as
/// documented in `bench/peers/socketio/README.md`. User `N` authenticates as `uN`.
#[derive(Clone, Debug)]
pub struct SocketIoClient {
    /// Rooms to join before reporting ready, by channel number.
    pub rooms: Arc<Vec<Arc<str>>>,
    /// Whether this client joins the rooms (members only).
    pub join: Vec<usize>,
    pub body: Arc<str>,
}

async fn sio_read_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.as_str() == "2" {
                    ws.send(Message::text("3")).await.map_err(|e| anyhow!("pong: {e}"))?;
                    continue;
                }
                return Ok(t.as_str().to_owned());
            }
            Some(Ok(Message::Close(c))) => bail!("close {}", c.map_or(1005, |c| u16::from(c.code))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("read: {e}"),
            None => bail!("eof during handshake"),
        }
    }
}

impl SocketIoClient {
    pub async fn run(self, dialer: Arc<Dialer>, setup: ClientSetup) {
        let ClientSetup { idx, rec, permit, started_ns, mut cmds, stop } = setup;
        let mut next_ack: u64 = 1;
        let connect = async {
            let mut ws = dialer.ws(idx, "/socket.io/?EIO=4&transport=websocket").await?;
            let open = sio_read_text(&mut ws).await?;
            if !open.starts_with('0') {
                bail!("expected an Engine.IO open packet");
            }
            ws.send(Message::text(format!(r#"40{{"token":"u{idx}"}}"#))).await.map_err(|e| anyhow!("connect: {e}"))?;
            let answer = sio_read_text(&mut ws).await?;
            if !answer.starts_with("40") {
                bail!("namespace connect refused");
            }
            for &room in &self.join {
                let Some(name) = self.rooms.get(room) else { continue };
                let id = next_ack;
                next_ack += 1;
                ws.send(Message::text(format!(r#"42{id}["join",{{"room":"{name}"}}]"#)))
                    .await
                    .map_err(|e| anyhow!("join: {e}"))?;
                loop {
                    let t = sio_read_text(&mut ws).await?;
                    if frame::socketio_ack_id(&t) == Some(id) {
                        if !t.contains("\"ok\":true") {
                            bail!("join refused");
                        }
                        break;
                    }
                }
            }
            Ok::<_, anyhow::Error>(ws)
        };
        let mut ws = match tokio::time::timeout(dialer.timeout, connect).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                rec.error(&format!("{e}"));
                rec.storm_result(false, started_ns, idx);
                return;
            }
            Err(_) => {
                rec.error("handshake timeout");
                rec.storm_result(false, started_ns, idx);
                return;
            }
        };
        rec.storm_result(true, started_ns, idx);
        drop(permit);
        let mut window: Option<Window> = None;
        let mut pending: HashMap<u64, Tag> = HashMap::new();
        let mut cmds_open = true;
        let partner = idx ^ 1;
        loop {
            let mut outgoing: Vec<(Tag, Dest)> = Vec::new();
            let mut pong = false;
            tokio::select! {
                _ = stop.cancelled() => break,
                cmd = cmds.recv(), if cmds_open => match cmd {
                    None => cmds_open = false,
                    Some(Cmd::Send { tag, dest }) => outgoing.push((tag, dest)),
                    Some(Cmd::Window { window: w, until_ns, dest }) => {
                        outgoing = open_window(&mut window, &rec, idx, w, until_ns, dest);
                    }
                },
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let t = t.as_str();
                        if t == "2" {
                            pong = true;
                        } else if t.starts_with("43") {
                            match frame::socketio_ack_id(t).and_then(|id| pending.remove(&id)) {
                                Some(tag) => {
                                    if t.contains("\"seq\"") {
                                        rec.on_ack(idx, &tag);
                                    } else {
                                        rec.on_ack_error(frame::str_field(t, "error", 0).map_or("unknown", |v| v.0));
                                    }
                                    if let Some(next) = window_answered(&mut window, &rec, idx) {
                                        outgoing.push(next);
                                    }
                                }
                                None => {
                                    rec.unparsed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        } else if t.starts_with("42[\"message\"") {
                            match frame::str_field(t, "txn", 0).and_then(|(v, _)| Tag::parse(v)) {
                                Some(tag) => rec.on_delivery(idx, &tag),
                                None => {
                                    rec.stale.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        rec.on_closed(&close_reason(msg));
                        return;
                    }
                    Some(Ok(_)) => {}
                },
            }
            if pong && ws.send(Message::text("3")).await.is_err() {
                rec.on_closed("write error");
                return;
            }
            for (tag, dest) in outgoing {
                let id = next_ack;
                next_ack += 1;
                let target = match dest {
                    Dest::Pair => format!(r#""to_user":{partner}"#),
                    Dest::Channel(n) => match self.rooms.get(n) {
                        Some(room) => format!(r#""room":"{room}""#),
                        None => {
                            rec.error("no such destination");
                            continue;
                        }
                    },
                };
                let text = format!(
                    r#"42{id}["send",{{{target},"body":"{}","txn":"{}","t":{}}}]"#,
                    self.body,
                    tag.encode(),
                    tag.sched
                );
                pending.insert(id, tag);
                if let Err(e) = ws.send(Message::text(text)).await {
                    rec.on_closed(&format!("write error: {e}"));
                    return;
                }
                rec.on_sent(idx, tag.sched);
            }
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.close(None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Clock;

    #[test]
    fn send_frames_parse_as_client_frames() {
        let tag = Tag { phase: 1, key: 2, sched: 3, sender: 4 };
        let conv = uuid::Uuid::now_v7().to_string();
        let text = medhub_send_frame(&conv, &tag, "hello");
        let parsed: medhub_wire::ClientFrame = serde_json::from_str(&text).unwrap();
        match parsed {
            medhub_wire::ClientFrame::Send { id, client_txn_id, body, .. } => {
                assert_eq!(id.as_deref(), Some("1.2.3.4"));
                assert_eq!(client_txn_id, "1.2.3.4");
                assert_eq!(body, "hello");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn windows_refill_until_time_is_up() {
        let rec = Recorder::new(Clock::new()).unwrap();
        let mut w = None;
        let first = open_window(&mut w, &rec, 3, 4, u64::MAX, Dest::Pair);
        assert_eq!(first.len(), 4);
        assert!(window_answered(&mut w, &rec, 3).is_some());
        let mut closed = None;
        assert!(open_window(&mut closed, &rec, 3, 4, 0, Dest::Pair).is_empty());
    }
}
