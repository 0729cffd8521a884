-- medhub schema, version 1 (PostgreSQL).
-- Ids are UUIDs. Times are microseconds since the Unix epoch, UTC.

CREATE TABLE orgs (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id                    UUID PRIMARY KEY,
    org_id                UUID NOT NULL REFERENCES orgs(id),
    username              TEXT NOT NULL UNIQUE,
    display_name          TEXT NOT NULL,
    role                  TEXT NOT NULL,
    active                BOOLEAN NOT NULL,
    password_hash         TEXT,
    must_change_password  BOOLEAN NOT NULL,
    created_at            BIGINT NOT NULL
);

CREATE TABLE sessions (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users(id),
    token_hash    BYTEA NOT NULL UNIQUE,
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE conversations (
    id            UUID PRIMARY KEY,
    kind          TEXT NOT NULL,
    title         TEXT,
    created_by    UUID,
    created_at    BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL,
    member_count  INTEGER NOT NULL,
    owner_count   INTEGER NOT NULL,
    -- The two members' ids, smaller first, for direct conversations only.
    direct_key    BYTEA UNIQUE
);

CREATE TABLE members (
    conversation_id  UUID NOT NULL REFERENCES conversations(id),
    user_id          UUID NOT NULL REFERENCES users(id),
    role             TEXT NOT NULL,
    delivered_seq    BIGINT NOT NULL,
    read_seq         BIGINT NOT NULL,
    joined_at        BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_by_user ON members(user_id, conversation_id);

-- Who was a member during which events (inclusive on both ends): the audience of every
-- event, for resume and for "who could see this" questions.
CREATE TABLE member_periods (
    user_id          UUID NOT NULL,
    conversation_id  UUID NOT NULL,
    from_event       BIGINT NOT NULL,
    to_event         BIGINT,
    role             TEXT NOT NULL,
    PRIMARY KEY (user_id, conversation_id, from_event)
);
CREATE INDEX member_periods_by_conversation ON member_periods(conversation_id, from_event);

CREATE TABLE messages (
    id               UUID PRIMARY KEY,
    conversation_id  UUID NOT NULL REFERENCES conversations(id),
    seq              BIGINT NOT NULL,
    sender_id        UUID NOT NULL,
    client_txn_id    TEXT NOT NULL,
    body             TEXT NOT NULL,
    priority         TEXT NOT NULL,
    reply_to         UUID,
    created_at       BIGINT NOT NULL,
    revision         INTEGER NOT NULL,
    edited_at        BIGINT,
    recalled_at      BIGINT,
    recalled_by      UUID,
    event_id         BIGINT NOT NULL,
    request_hash     BYTEA NOT NULL,
    acknowledged     BOOLEAN NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (sender_id, client_txn_id)
);

-- Superseded revisions of message bodies: revision r's text once r+1 replaced it.
CREATE TABLE message_revisions (
    message_id  UUID NOT NULL,
    revision    INTEGER NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (message_id, revision)
);

CREATE TABLE acks (
    message_id  UUID NOT NULL,
    user_id     UUID NOT NULL,
    response    TEXT NOT NULL,
    minutes     INTEGER,
    at          BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);

-- The event log. Columns beyond the first five are filled per kind.
CREATE TABLE events (
    id               BIGINT PRIMARY KEY,
    conversation_id  UUID NOT NULL,
    kind             TEXT NOT NULL,
    at               BIGINT NOT NULL,
    actor_id         UUID,
    message_id       UUID,
    seq              BIGINT,
    revision         INTEGER,
    subject_user_id  UUID,
    role             TEXT,
    delivered_seq    BIGINT,
    read_seq         BIGINT,
    ack_response     TEXT,
    ack_minutes      INTEGER,
    title            TEXT,
    conv_kind        TEXT
);
CREATE INDEX events_by_conversation ON events(conversation_id, id);

-- Audiences of targeted events (receipt updates), which do not go to every member.
CREATE TABLE event_targets (
    user_id   UUID NOT NULL,
    event_id  BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_targets_by_event ON event_targets(event_id);
