-- The audit interface's first store (issue 3): every access decision and security event.
-- Issue 4 makes it tamper-evident (hash chain, signed checkpoints) behind the same interface.
CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor_id    UUID,
    session_id  UUID,
    action      TEXT NOT NULL,
    target      TEXT,
    outcome     TEXT NOT NULL,
    reason      TEXT,
    ip          TEXT
);
CREATE INDEX audit_events_by_actor ON audit_events(actor_id, id);
