-- Identity (issue 3): idle and absolute session expiry, second factors, WebSocket tickets,
-- throttling, invitations and the server-key check. See docs/identity.md.

-- `last_seen_at` was never written; it becomes the last *user* activity.
ALTER TABLE sessions RENAME COLUMN last_seen_at TO last_activity_at;
-- When the second factor was last proven in this session (sign-in or step-up).
ALTER TABLE sessions ADD COLUMN mfa_at BIGINT;
ALTER TABLE sessions ADD COLUMN ip TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
-- Why the session ended: logout, idle_timeout, absolute_lifetime, killed, password_changed, ...
ALTER TABLE sessions ADD COLUMN end_reason TEXT;
CREATE INDEX sessions_live_by_activity ON sessions(last_activity_at) WHERE revoked_at IS NULL;

-- The organization's idle timeout, in seconds (15 minutes unless the organization chooses).
ALTER TABLE orgs ADD COLUMN idle_timeout_s BIGINT NOT NULL DEFAULT 900;

-- RFC 6238 secrets, encrypted with the server key. `last_step` only grows: a code of that
-- step or an earlier one is refused. Unconfirmed (`confirmed_at` NULL) until a first code.
CREATE TABLE totp (
    user_id       UUID PRIMARY KEY REFERENCES users(id),
    secret_enc    BYTEA NOT NULL,
    last_step     BIGINT,
    confirmed_at  BIGINT,
    created_at    BIGINT NOT NULL
);

-- Single-use recovery codes, Argon2id-hashed.
CREATE TABLE recovery_codes (
    user_id    UUID NOT NULL REFERENCES users(id),
    idx        INTEGER NOT NULL,
    code_hash  TEXT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, idx)
);

-- Short-lived, single-use WebSocket tickets (SHA-256 of the ticket).
CREATE TABLE ws_tickets (
    hash        BYTEA PRIMARY KEY,
    session_id  UUID NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX ws_tickets_by_expiry ON ws_tickets(expires_at);

-- Failed attempts per key: `login:acct:<username>`, `login:ip:<address>`, `mfa:acct:<user id>`...
CREATE TABLE throttle (
    key           TEXT PRIMARY KEY,
    failures      BIGINT NOT NULL,
    window_start  BIGINT NOT NULL,
    locked_until  BIGINT
);

-- Invitations: an administrator creates the account, the invitee sets a password with the code.
CREATE TABLE invitations (
    token_hash  BYTEA PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users(id),
    created_by  UUID,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX invitations_by_user ON invitations(user_id);

-- A value encrypted with the server key, so a wrong or lost key is noticed at start-up
-- instead of as failed second factors.
CREATE TABLE server_key_check (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    check_value  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL
);
