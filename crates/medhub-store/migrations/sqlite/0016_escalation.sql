-- Escalation until acknowledged, durable timers, delivery jobs and the delivery trace
-- (docs/clinical.md, "Escalation until acknowledged"). Ids are 16-byte UUID blobs, times
-- microseconds since the Unix epoch, durations whole seconds.

-- An organization's own escalation policy for one priority; without a row the shipped one
-- applies. Steps are in `escalation_policy_steps`, numbered from 0.
CREATE TABLE escalation_policies (
    org_id          BLOB NOT NULL REFERENCES orgs(id),
    priority        TEXT NOT NULL,
    stop_after_secs INTEGER NOT NULL,
    set_by          BLOB,
    set_at          INTEGER NOT NULL,
    PRIMARY KEY (org_id, priority)
) WITHOUT ROWID;

-- `target` is `recipients`, `users` (the space-separated ids in `users`) or `on_call` (the
-- role key in `role`); `channels` one bit per channel (in_app, push, email, sms, pager).
CREATE TABLE escalation_policy_steps (
    org_id       BLOB NOT NULL,
    priority     TEXT NOT NULL,
    idx          INTEGER NOT NULL,
    after_secs   INTEGER NOT NULL,
    target       TEXT NOT NULL,
    users        TEXT,
    role         TEXT,
    channels     INTEGER NOT NULL,
    repeat_secs  INTEGER,
    PRIMARY KEY (org_id, priority, idx),
    FOREIGN KEY (org_id, priority) REFERENCES escalation_policies(org_id, priority)
) WITHOUT ROWID;

-- One row per urgent or critical message, written in the message's own transaction. `level`
-- and `round` are the last point fired (none yet: NULL). Closed when acknowledged, recalled or
-- exhausted; `closed_by` is who acknowledged.
CREATE TABLE escalations (
    message_id       BLOB PRIMARY KEY REFERENCES messages(id),
    org_id           BLOB NOT NULL,
    conversation_id  BLOB NOT NULL,
    sender_id        BLOB NOT NULL,
    priority         TEXT NOT NULL,
    sent_at          INTEGER NOT NULL,
    level            INTEGER,
    round            INTEGER,
    closed_at        INTEGER,
    closed_reason    TEXT,
    closed_by        BLOB
);

-- Durable timers. A timer fires once: the transaction that claims it (due, not fired, not
-- cancelled) sets `fired_at` and writes its effects. Fired and cancelled timers are kept as the
-- record of what fired when.
CREATE TABLE timers (
    id            BLOB PRIMARY KEY,
    org_id        BLOB NOT NULL,
    kind          TEXT NOT NULL,
    ref_id        BLOB NOT NULL,
    due_at        INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    fired_at      INTEGER,
    cancelled_at  INTEGER
);
CREATE INDEX timers_pending ON timers(due_at) WHERE fired_at IS NULL AND cancelled_at IS NULL;
CREATE INDEX timers_by_ref ON timers(ref_id);

-- The delivery trace of an escalation, in order: notified, escalated, no_target, unreachable,
-- limited, exhausted, sent, retrying, failed, cancelled. Ids, channels and fixed reasons only.
CREATE TABLE escalation_trace (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  BLOB NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    level       INTEGER,
    round       INTEGER,
    user_id     BLOB,
    channel     TEXT,
    detail      TEXT
);
CREATE INDEX escalation_trace_by_message ON escalation_trace(message_id, id);

-- A user's own contact points outside medhub. Personal data: erased with the account.
CREATE TABLE contact_points (
    user_id     BLOB PRIMARY KEY REFERENCES users(id),
    email       TEXT,
    phone       TEXT,
    pager       TEXT,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Web Push subscriptions (RFC 8030 endpoint, RFC 8291 keys in base64url), one per browser.
CREATE TABLE push_subscriptions (
    id          BLOB PRIMARY KEY,
    user_id     BLOB NOT NULL REFERENCES users(id),
    endpoint    TEXT NOT NULL UNIQUE,
    p256dh      TEXT NOT NULL,
    auth        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions(user_id, created_at);

-- The outbox: one job per person, channel (and push subscription) and firing. `id` is the
-- idempotency key of every attempt. `state` is pending, sent, failed or cancelled. A worker
-- leases a pending job (`lease_token`, `leased_until`) while it sends; a lease that runs out
-- (the worker died) makes the job due again.
CREATE TABLE delivery_jobs (
    id               BLOB PRIMARY KEY,
    org_id           BLOB NOT NULL,
    message_id       BLOB NOT NULL,
    user_id          BLOB NOT NULL,
    channel          TEXT NOT NULL,
    subscription_id  BLOB,
    why              TEXT NOT NULL,
    level            INTEGER NOT NULL,
    round            INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    lease_token      BLOB,
    leased_until     INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX delivery_jobs_pending ON delivery_jobs(next_attempt_at) WHERE state = 'pending';
CREATE INDEX delivery_jobs_by_message ON delivery_jobs(message_id);
