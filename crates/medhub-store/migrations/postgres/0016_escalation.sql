-- Escalation until acknowledged, durable timers, delivery jobs and the delivery trace
-- (docs/clinical.md, "Escalation until acknowledged"). Times are
-- microseconds since the Unix epoch, durations whole seconds.

-- An organization's own escalation policy for one priority; without a row the shipped one
-- applies. Steps are in `escalation_policy_steps`, numbered from 0.
CREATE TABLE escalation_policies (
    org_id          UUID NOT NULL REFERENCES orgs(id),
    priority        TEXT NOT NULL,
    stop_after_secs BIGINT NOT NULL,
    set_by          UUID,
    set_at          BIGINT NOT NULL,
    PRIMARY KEY (org_id, priority)
);

-- `target` is `recipients`, `users` (the space-separated ids in `users`) or `on_call` (the
-- role key in `role`); `channels` one bit per channel (in_app, push, email, sms, pager).
CREATE TABLE escalation_policy_steps (
    org_id       UUID NOT NULL,
    priority     TEXT NOT NULL,
    idx          BIGINT NOT NULL,
    after_secs   BIGINT NOT NULL,
    target       TEXT NOT NULL,
    users        TEXT,
    role         TEXT,
    channels     BIGINT NOT NULL,
    repeat_secs  BIGINT,
    PRIMARY KEY (org_id, priority, idx),
    FOREIGN KEY (org_id, priority) REFERENCES escalation_policies(org_id, priority)
);

-- One row per urgent or critical message, written in the message's own transaction. `level`
-- and `round` are the last point fired (none yet: NULL). Closed when acknowledged, recalled or
-- exhausted; `closed_by` is who acknowledged.
CREATE TABLE escalations (
    message_id       UUID PRIMARY KEY REFERENCES messages(id),
    org_id           UUID NOT NULL,
    conversation_id  UUID NOT NULL,
    sender_id        UUID NOT NULL,
    priority         TEXT NOT NULL,
    sent_at          BIGINT NOT NULL,
    level            BIGINT,
    round            BIGINT,
    closed_at        BIGINT,
    closed_reason    TEXT,
    closed_by        UUID
);

-- Durable timers. A timer fires once: the transaction that claims it (due, not fired, not
-- cancelled) sets `fired_at` and writes its effects. Fired and cancelled timers are kept as the
-- record of what fired when.
CREATE TABLE timers (
    id            UUID PRIMARY KEY,
    org_id        UUID NOT NULL,
    kind          TEXT NOT NULL,
    ref_id        UUID NOT NULL,
    due_at        BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    fired_at      BIGINT,
    cancelled_at  BIGINT
);
CREATE INDEX timers_pending ON timers(due_at) WHERE fired_at IS NULL AND cancelled_at IS NULL;
CREATE INDEX timers_by_ref ON timers(ref_id);

-- The delivery trace of an escalation, in order: notified, escalated, no_target, unreachable,
-- limited, exhausted, sent, retrying, failed, cancelled. Ids, channels and fixed reasons only.
CREATE TABLE escalation_trace (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  UUID NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    level       BIGINT,
    round       BIGINT,
    user_id     UUID,
    channel     TEXT,
    detail      TEXT
);
CREATE INDEX escalation_trace_by_message ON escalation_trace(message_id, id);

-- A user's own contact points outside medhub. Personal data: erased with the account.
CREATE TABLE contact_points (
    user_id     UUID PRIMARY KEY REFERENCES users(id),
    email       TEXT,
    phone       TEXT,
    pager       TEXT,
    updated_at  BIGINT NOT NULL
);

-- Web Push subscriptions (RFC 8030 endpoint, RFC 8291 keys in base64url), one per browser.
CREATE TABLE push_subscriptions (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users(id),
    endpoint    TEXT NOT NULL UNIQUE,
    p256dh      TEXT NOT NULL,
    auth        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions(user_id, created_at);

-- The outbox: one job per person, channel (and push subscription) and firing. `id` is the
-- idempotency key of every attempt. `state` is pending, sent, failed or cancelled. A worker
-- leases a pending job (`lease_token`, `leased_until`) while it sends; a lease that runs out
-- (the worker died) makes the job due again.
CREATE TABLE delivery_jobs (
    id               UUID PRIMARY KEY,
    org_id           UUID NOT NULL,
    message_id       UUID NOT NULL,
    user_id          UUID NOT NULL,
    channel          TEXT NOT NULL,
    subscription_id  UUID,
    why              TEXT NOT NULL,
    level            BIGINT NOT NULL,
    round            BIGINT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    lease_token      UUID,
    leased_until     BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX delivery_jobs_pending ON delivery_jobs(next_attempt_at) WHERE state = 'pending';
CREATE INDEX delivery_jobs_by_message ON delivery_jobs(message_id);
