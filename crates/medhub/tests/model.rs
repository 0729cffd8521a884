//! The seeded, randomized multi-client test of every real-time guarantee, against the real
//! `medhub` binary killed with SIGKILL and restarted on the same data.
//!
//! Clients send, resend, disconnect, resume and receipt at random; membership changes;
//! the server dies without warning. At the end the committed log (read straight from the
//! store) is the oracle:
//! - every acknowledged message is in it, with the id and sequence number it was acked with;
//! - no client transaction id produced two messages, and sequence numbers are gap-free;
//! - every client received exactly the events the recipient rule gives it, each once, in log
//!   order, across all its connections and the server's deaths.
//!
//! It prints its seed; `MEDHUB_MODEL_SEED=<seed>` replays a run, `MEDHUB_MODEL_STEPS` sets
//! its length.

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use medhub_core::model::{ConversationKind, MemberRole, SessionState};
use medhub_core::policy::Actor;
use medhub_core::recipients::{apply_membership, recipients};
use medhub_core::{ConversationId, EventId, EventKind, SystemClock, UserId};
use medhub_service::auth::NewUser;
use medhub_service::{ServiceConfig, Services};
use medhub_store::each_backend;
use medhub_store::testdb::TestDb;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The real binary as a child process.
struct Server {
    child: tokio::process::Child,
    addr: String,
}

impl Server {
    async fn start(db: &TestDb) -> Server {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medhub"));
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0");
        match db.location() {
            medhub_store::Location::Sqlite { data_dir } => cmd.arg("--data-dir").arg(data_dir),
            medhub_store::Location::Postgres { url, .. } => {
                cmd.arg("--database-url").arg(url).arg("--data-dir").arg(db.files_dir())
            }
        };
        // The model's clients say `hello` with their session token (tickets are tested in
        // medhub-api's tests).
        cmd.env("MEDHUB__AUTH__ALLOW_TOKEN_HELLO", "true")
            .env("MEDHUB__LIMITS__FRAMES_PER_SECOND", "10000")
            .env("MEDHUB__LIMITS__FRAME_BURST", "10000")
            .env("MEDHUB__REALTIME__EXTERNAL_POLL_MS", "50")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn medhub");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("medhub: listening on http://") {
                    return rest.trim().to_owned();
                }
            }
            panic!("server exited before listening");
        })
        .await
        .expect("server started");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, addr }
    }

    /// SIGKILL: no shutdown, no drain, no close frames.
    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

struct Client {
    user: UserId,
    token: String,
    ws: Option<Ws>,
    /// Last event cursor processed.
    cursor: u64,
    /// Every event received, over every connection, in arrival order.
    received: Vec<u64>,
    /// Sends awaiting an answer on the current connection: request id → client txn id.
    pending: HashMap<String, String>,
    /// Sends whose fate is unknown (connection lost before the answer): resent on reconnect.
    unknown: HashSet<String>,
    /// Acknowledged sends: client txn id → (message id, seq).
    acked: HashMap<String, (String, u64)>,
    /// What each txn was: conversation and body.
    txns: HashMap<String, (String, String)>,
    next: u64,
    /// Names new client txn ids; never reused.
    txn_counter: u64,
}

struct Model {
    rng: ChaCha8Rng,
    server: Option<Server>,
    clients: Vec<Client>,
    /// Conversation id → (owner index, kind, current member indices).
    conversations: Vec<(String, usize, ConversationKind, HashSet<usize>)>,
    http: reqwest::Client,
    kills: usize,
}

impl Model {
    fn addr(&self) -> String {
        self.server.as_ref().map(|s| s.addr.clone()).expect("server running")
    }

    async fn connect(&mut self, i: usize) {
        let url = format!("ws://{}/api/v1/ws", self.addr());
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        let c = &mut self.clients[i];
        let hello = if c.cursor == 0 && c.received.is_empty() {
            json!({"type": "hello", "token": c.token, "cursor": 0})
        } else {
            json!({"type": "hello", "token": c.token, "cursor": c.cursor})
        };
        ws.send(Message::text(hello.to_string())).await.expect("hello");
        c.ws = Some(ws);
        let ready = self.read(i).await.expect("ready");
        assert_eq!(ready["type"], "ready", "{ready}");
        // An offline-first client resends whatever it does not know the fate of.
        let unknown: Vec<String> = self.clients[i].unknown.iter().cloned().collect();
        for txn in unknown {
            self.fire(i, txn).await;
        }
    }

    fn disconnect(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.ws = None;
        let lost: Vec<String> = c.pending.drain().map(|(_, txn)| txn).collect();
        c.unknown.extend(lost);
    }

    /// Reads one frame and applies it to the model; `None` when the connection ended.
    async fn read(&mut self, i: usize) -> Option<Value> {
        let ws = self.clients[i].ws.as_mut()?;
        let msg = match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => {
                self.disconnect(i);
                return None;
            }
            Err(_) => panic!("client {i}: no frame in 20 s"),
        };
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                self.disconnect(i);
                return None;
            }
            return Some(Value::Null);
        };
        let v: Value = serde_json::from_str(&text).expect("json");
        let c = &mut self.clients[i];
        match v["type"].as_str() {
            Some("event") => {
                let cursor = v["cursor"].as_u64().expect("cursor");
                assert!(cursor > c.cursor, "client {i}: event {cursor} after {} (duplicate or out of order)", c.cursor);
                c.cursor = cursor;
                c.received.push(cursor);
            }
            Some("sent") => {
                let id = v["id"].as_str().expect("id").to_owned();
                let txn = c.pending.remove(&id).expect("answer to a pending request");
                let mid = v["message"]["id"].as_str().expect("message id").to_owned();
                let seq = v["message"]["seq"].as_u64().expect("seq");
                if let Some(prev) = c.acked.get(&txn) {
                    assert_eq!(prev, &(mid.clone(), seq), "client {i}: txn {txn} acked twice differently");
                }
                assert_eq!(v["message"]["client_txn_id"], txn);
                c.acked.insert(txn.clone(), (mid, seq));
                c.unknown.remove(&txn);
            }
            Some("error") => {
                // Only a send racing a removal from its conversation may fail.
                let code = v["error"]["code"].as_str().unwrap_or_default();
                assert_eq!(code, "not_found", "client {i}: unexpected error {v}");
                if let Some(id) = v["id"].as_str()
                    && let Some(txn) = c.pending.remove(id)
                {
                    c.unknown.remove(&txn);
                    c.txns.remove(&txn);
                }
            }
            _ => {}
        }
        Some(v)
    }

    /// Sends (or resends) `txn` without waiting for the answer.
    async fn fire(&mut self, i: usize, txn: String) {
        let c = &mut self.clients[i];
        let Some(ws) = c.ws.as_mut() else { return };
        let (conv, body) = c.txns[&txn].clone();
        c.next += 1;
        let id = format!("r{}", c.next);
        let frame = json!({"type": "send", "id": id, "conversation_id": conv, "client_txn_id": txn, "body": body});
        if ws.send(Message::text(frame.to_string())).await.is_err() {
            self.disconnect(i);
            return;
        }
        self.clients[i].pending.insert(id, txn);
    }

    /// Reads until client `i` has no pending requests (or its connection ends).
    async fn settle(&mut self, i: usize) {
        while self.clients[i].ws.is_some() && !self.clients[i].pending.is_empty() {
            if self.read(i).await.is_none() {
                break;
            }
        }
    }

    /// A ping barrier: every event queued for the client before the pong has arrived.
    async fn drain(&mut self, i: usize) {
        let Some(ws) = self.clients[i].ws.as_mut() else { return };
        if ws.send(Message::text(json!({"type": "ping", "id": "barrier"}).to_string())).await.is_err() {
            self.disconnect(i);
            return;
        }
        while let Some(v) = self.read(i).await {
            if v["type"] == "pong" && v["id"] == "barrier" {
                break;
            }
        }
    }

    fn member_convs(&self, i: usize) -> Vec<String> {
        self.conversations.iter().filter(|(_, _, _, m)| m.contains(&i)).map(|(id, ..)| id.clone()).collect()
    }

    async fn step(&mut self, db: &TestDb) {
        let n = self.clients.len();
        let i = self.rng.random_range(0..n);
        let roll: f64 = self.rng.random();
        if roll < 0.40 {
            // Send a new message.
            if self.clients[i].ws.is_none() {
                self.connect(i).await;
            }
            let convs = self.member_convs(i);
            if convs.is_empty() {
                return;
            }
            let conv = convs[self.rng.random_range(0..convs.len())].clone();
            let c = &mut self.clients[i];
            c.txn_counter += 1;
            let txn = format!("c{i}-t{}", c.txn_counter);
            c.txns.insert(txn.clone(), (conv, format!("message {txn}")));
            self.fire(i, txn).await;
            if self.rng.random_bool(0.6) {
                self.settle(i).await;
            }
        } else if roll < 0.48 {
            // Resend something already acknowledged: must come back identical.
            let acked: Vec<String> = self.clients[i].acked.keys().cloned().collect();
            if acked.is_empty() || self.clients[i].ws.is_none() {
                return;
            }
            let txn = acked[self.rng.random_range(0..acked.len())].clone();
            self.fire(i, txn).await;
            self.settle(i).await;
        } else if roll < 0.58 {
            self.disconnect(i);
        } else if roll < 0.70 {
            if self.clients[i].ws.is_none() {
                self.connect(i).await;
            }
            self.drain(i).await;
        } else if roll < 0.78 {
            // A receipt: targeted events to the senders it covers.
            let convs = self.member_convs(i);
            if convs.is_empty() || self.clients[i].ws.is_none() {
                return;
            }
            let conv = convs[self.rng.random_range(0..convs.len())].clone();
            let url = format!("http://{}/api/v1/conversations/{conv}/messages?limit=1", self.addr());
            let resp = self.http.get(url).bearer_auth(&self.clients[i].token).send().await.expect("history");
            if let Ok(page) = resp.json::<Value>().await
                && let Some(last) = page["messages"].as_array().and_then(|a| a.last()).and_then(|m| m["seq"].as_u64())
            {
                let url = format!("http://{}/api/v1/conversations/{conv}/receipts", self.addr());
                let body = json!({"read_seq": last});
                let r =
                    self.http.post(url).bearer_auth(&self.clients[i].token).json(&body).send().await.expect("receipt");
                assert!(r.status().is_success() || r.status() == 404, "receipt: {}", r.status());
            }
        } else if roll < 0.86 {
            // Membership: the owner of a group adds or removes someone.
            let groups: Vec<usize> =
                (0..self.conversations.len()).filter(|k| self.conversations[*k].2 == ConversationKind::Group).collect();
            if groups.is_empty() {
                return;
            }
            let k = groups[self.rng.random_range(0..groups.len())];
            let (conv, owner, _, members) = self.conversations[k].clone();
            let target = self.rng.random_range(0..n);
            if target == owner {
                return;
            }
            let token = self.clients[owner].token.clone();
            let target_id = self.clients[target].user;
            let ok = if members.contains(&target) {
                let url = format!("http://{}/api/v1/conversations/{conv}/members/{target_id}", self.addr());
                self.http.delete(url).bearer_auth(token).send().await.expect("remove").status().is_success()
            } else {
                let url = format!("http://{}/api/v1/conversations/{conv}/members", self.addr());
                let body = json!({"user_id": target_id.to_string()});
                self.http.post(url).bearer_auth(token).json(&body).send().await.expect("add").status().is_success()
            };
            assert!(ok, "membership change failed");
            let m = &mut self.conversations[k].3;
            if !m.insert(target) {
                m.remove(&target);
            }
        } else if roll < 0.90 {
            // Fire sends on several clients, then the server dies with them in flight.
            for j in 0..n {
                if self.clients[j].ws.is_some() {
                    let convs = self.member_convs(j);
                    if let Some(conv) = convs.first().cloned() {
                        let c = &mut self.clients[j];
                        c.txn_counter += 1;
                        let txn = format!("c{j}-t{}", c.txn_counter);
                        c.txns.insert(txn.clone(), (conv, format!("in flight {txn}")));
                        self.fire(j, txn).await;
                    }
                }
            }
            self.crash(db).await;
        } else {
            for j in 0..n {
                self.settle(j).await;
            }
        }
    }

    async fn crash(&mut self, db: &TestDb) {
        if let Some(s) = self.server.take() {
            s.kill().await;
        }
        self.kills += 1;
        for j in 0..self.clients.len() {
            self.disconnect(j);
        }
        self.server = Some(Server::start(db).await);
    }
}

async fn seed_store(
    db: &TestDb,
    users: usize,
) -> (Vec<(UserId, String)>, Vec<(String, usize, ConversationKind, HashSet<usize>)>) {
    let store = db.open().await;
    let (services, bg) =
        Services::start(store, ServiceConfig::default(), std::sync::Arc::new(SystemClock)).await.unwrap();
    services.auth.bootstrap("Model Hospital", "admin").await.unwrap();
    let mut out = Vec::new();
    for u in 0..users {
        let user = services
            .auth
            .create_user(NewUser {
                username: format!("user{u}"),
                display_name: format!("User {u}"),
                role: medhub_core::model::SystemRole::User,
                password: None,
                must_change_password: false,
            })
            .await
            .unwrap();
        let s = services.auth.issue_session(&user, SessionState::Active).await.unwrap();
        out.push((user.id, s.token));
    }
    let mut convs = Vec::new();
    let groups: [&[usize]; 2] = [&[0, 1, 2, 3], &[2, 3, 4]];
    for g in groups {
        let members = g[1..].iter().map(|k| (out[*k].0, MemberRole::Member)).collect();
        let (c, _) = services
            .messaging
            .create_conversation(Actor::User(out[g[0]].0), ConversationKind::Group, Some("g".into()), members, None)
            .await
            .unwrap();
        convs.push((c.id.to_string(), g[0], ConversationKind::Group, g.iter().copied().collect()));
    }
    for (a, b) in [(0usize, 4usize), (1, 5), (5, 2)] {
        let (c, _) = services
            .messaging
            .create_conversation(
                Actor::User(out[a].0),
                ConversationKind::Direct,
                None,
                vec![(out[b].0, MemberRole::Member)],
                None,
            )
            .await
            .unwrap();
        convs.push((c.id.to_string(), a, ConversationKind::Direct, [a, b].into()));
    }
    bg.abort();
    drop(services);
    tokio::time::sleep(Duration::from_millis(600)).await;
    (out, convs)
}

async fn run_model(db: TestDb) {
    let seed: u64 = std::env::var("MEDHUB_MODEL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let steps: usize = std::env::var("MEDHUB_MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    eprintln!("model seed: {seed} ({:?}); replay with MEDHUB_MODEL_SEED={seed}", db.backend());
    let (users, conversations) = seed_store(&db, 6).await;
    let clients = users
        .iter()
        .map(|(id, token)| Client {
            user: *id,
            token: token.clone(),
            ws: None,
            cursor: 0,
            received: Vec::new(),
            pending: HashMap::new(),
            unknown: HashSet::new(),
            acked: HashMap::new(),
            txns: HashMap::new(),
            next: 0,
            txn_counter: 0,
        })
        .collect();
    let mut m = Model {
        rng: ChaCha8Rng::seed_from_u64(seed),
        server: Some(Server::start(&db).await),
        clients,
        conversations,
        http: reqwest::Client::new(),
        kills: 0,
    };
    for _ in 0..steps {
        m.step(&db).await;
    }
    // Resolve every unknown send and deliver everything: reconnect all, settle, barrier.
    for i in 0..m.clients.len() {
        if m.clients[i].ws.is_none() {
            m.connect(i).await;
        }
        m.settle(i).await;
    }
    // The oracle: the committed log, final now that every send is settled.
    let store = db.open().await;
    let head = store.last_event_id().await.unwrap();
    let mut log = Vec::new();
    let mut after = EventId::ZERO;
    loop {
        let page = store.events_range(after, head, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        log.extend(page);
    }
    assert_eq!(log.len() as u64, head.get(), "event ids are gap-free");
    let mut members: HashMap<ConversationId, HashSet<UserId>> = HashMap::new();
    let mut expected: HashMap<UserId, Vec<u64>> = HashMap::new();
    let mut by_txn: HashMap<(UserId, String), (String, u64)> = HashMap::new();
    let mut seqs: BTreeMap<ConversationId, Vec<u64>> = BTreeMap::new();
    for e in &log {
        let set = members.entry(e.conversation).or_default();
        for u in recipients(&e.kind, set) {
            expected.entry(u).or_default().push(e.id.get());
        }
        apply_membership(&e.kind, set);
        if let EventKind::MessageCreated { message } = &e.kind {
            let key = (message.sender, message.client_txn_id.as_str().to_owned());
            assert!(by_txn.insert(key, (message.id.to_string(), message.seq.get())).is_none(), "a txn committed twice");
            seqs.entry(e.conversation).or_default().push(message.seq.get());
        }
    }
    // An ack means "committed", not "already queued to every other member": the publisher
    // may still be queuing the last events when a barrier is answered. Repeat the barrier
    // until each client has seen the newest event meant for it (bounded; a lost event then
    // shows as a difference below, not as a hang).
    for i in 0..m.clients.len() {
        let newest = expected.get(&m.clients[i].user).and_then(|v| v.last().copied());
        for _ in 0..100 {
            m.drain(i).await;
            if newest.is_none_or(|n| m.clients[i].received.last().is_some_and(|&r| r >= n)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(m.clients[i].unknown.is_empty(), "client {i} still has sends of unknown fate");
    }
    if let Some(s) = m.server.take() {
        s.kill().await;
    }
    for (conv, s) in &seqs {
        assert_eq!(s, &(1..=s.len() as u64).collect::<Vec<_>>(), "gap-free seqs in {conv}");
    }
    let mut total_acked = 0;
    for (i, c) in m.clients.iter().enumerate() {
        for (txn, got) in &c.acked {
            total_acked += 1;
            let stored = by_txn.get(&(c.user, txn.clone()));
            assert_eq!(stored, Some(got), "client {i}: acked txn {txn} lost or changed");
        }
        let want = expected.remove(&c.user).unwrap_or_default();
        assert_eq!(c.received, want, "client {i}: received events differ from the recipient rule");
    }
    eprintln!("model ok: {steps} steps, {} kills, {} events, {total_acked} acked sends", m.kills, log.len());
    assert!(m.kills > 0 || steps < 100, "the run killed the server at least once");
}

each_backend! {
    async fn randomized_clients_and_crashes_keep_every_guarantee(db) {
        run_model(db).await;
    }
}
