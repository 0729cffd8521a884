-- medhub schema, version 1 (SQLite).
-- Ids are 16-byte UUID blobs. Times are microseconds since the Unix epoch, UTC.

CREATE TABLE orgs (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id                    BLOB PRIMARY KEY,
    org_id                BLOB NOT NULL REFERENCES orgs(id),
    username              TEXT NOT NULL UNIQUE,
    display_name          TEXT NOT NULL,
    role                  TEXT NOT NULL,
    active                INTEGER NOT NULL,
    password_hash         TEXT,
    must_change_password  INTEGER NOT NULL,
    created_at            INTEGER NOT NULL
);

CREATE TABLE sessions (
    id            BLOB PRIMARY KEY,
    user_id       BLOB NOT NULL REFERENCES users(id),
    token_hash    BLOB NOT NULL UNIQUE,
    state         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE conversations (
    id            BLOB PRIMARY KEY,
    kind          TEXT NOT NULL,
    title         TEXT,
    created_by    BLOB,
    created_at    INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    member_count  INTEGER NOT NULL,
    owner_count   INTEGER NOT NULL,
    -- The two members' ids, smaller first, for direct conversations only.
    direct_key    BLOB UNIQUE
);

CREATE TABLE members (
    conversation_id  BLOB NOT NULL REFERENCES conversations(id),
    user_id          BLOB NOT NULL REFERENCES users(id),
    role             TEXT NOT NULL,
    delivered_seq    INTEGER NOT NULL,
    read_seq         INTEGER NOT NULL,
    joined_at        INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members(user_id, conversation_id);

-- Who was a member during which events (inclusive on both ends): the audience of every
-- event, for resume and for "who could see this" questions.
CREATE TABLE member_periods (
    user_id          BLOB NOT NULL,
    conversation_id  BLOB NOT NULL,
    from_event       INTEGER NOT NULL,
    to_event         INTEGER,
    role             TEXT NOT NULL,
    PRIMARY KEY (user_id, conversation_id, from_event)
) WITHOUT ROWID;
CREATE INDEX member_periods_by_conversation ON member_periods(conversation_id, from_event);

CREATE TABLE messages (
    id               BLOB PRIMARY KEY,
    conversation_id  BLOB NOT NULL REFERENCES conversations(id),
    seq              INTEGER NOT NULL,
    sender_id        BLOB NOT NULL,
    client_txn_id    TEXT NOT NULL,
    body             TEXT NOT NULL,
    priority         TEXT NOT NULL,
    reply_to         BLOB,
    created_at       INTEGER NOT NULL,
    revision         INTEGER NOT NULL,
    edited_at        INTEGER,
    recalled_at      INTEGER,
    recalled_by      BLOB,
    event_id         INTEGER NOT NULL,
    request_hash     BLOB NOT NULL,
    acknowledged     INTEGER NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (sender_id, client_txn_id)
);

-- Superseded revisions of message bodies: revision r's text once r+1 replaced it.
CREATE TABLE message_revisions (
    message_id  BLOB NOT NULL,
    revision    INTEGER NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (message_id, revision)
) WITHOUT ROWID;

CREATE TABLE acks (
    message_id  BLOB NOT NULL,
    user_id     BLOB NOT NULL,
    response    TEXT NOT NULL,
    minutes     INTEGER,
    at          INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
) WITHOUT ROWID;

-- The event log. Columns beyond the first five are filled per kind.
CREATE TABLE events (
    id               INTEGER PRIMARY KEY,
    conversation_id  BLOB NOT NULL,
    kind             TEXT NOT NULL,
    at               INTEGER NOT NULL,
    actor_id         BLOB,
    message_id       BLOB,
    seq              INTEGER,
    revision         INTEGER,
    subject_user_id  BLOB,
    role             TEXT,
    delivered_seq    INTEGER,
    read_seq         INTEGER,
    ack_response     TEXT,
    ack_minutes      INTEGER,
    title            TEXT,
    conv_kind        TEXT
);
CREATE INDEX events_by_conversation ON events(conversation_id, id);

-- Audiences of targeted events (receipt updates), which do not go to every member.
CREATE TABLE event_targets (
    user_id   BLOB NOT NULL,
    event_id  INTEGER NOT NULL,
    PRIMARY KEY (user_id, event_id)
) WITHOUT ROWID;
CREATE INDEX event_targets_by_event ON event_targets(event_id);
