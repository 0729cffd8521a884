-- The audit trail becomes an append-only Merkle log (issue 4, docs/audit.md): each record is
-- a leaf, numbered `seq` from 0 without gaps, and `leaf_hash` is RFC 9162's
-- SHA-256(0x00 || the record's canonical bytes). `audit_head` holds the log's size and the
-- frontier of its tree (the roots of its complete subtrees, largest first, 32 bytes each), so
-- an append computes the new root without reading old leaves; appenders queue on its row
-- lock, which also keeps `seq` dense. Records written before this migration are sealed into
-- the log, in `id` order, when the store next opens.
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN leaf_hash BYTEA;
CREATE UNIQUE INDEX audit_events_by_seq ON audit_events(seq);
CREATE INDEX audit_events_unsealed ON audit_events(id) WHERE seq IS NULL;

CREATE TABLE audit_head (
    id        SMALLINT PRIMARY KEY CHECK (id = 1),
    size      BIGINT NOT NULL,
    frontier  BYTEA NOT NULL
);
INSERT INTO audit_head (id, size, frontier) VALUES (1, 0, '\x');

-- Signed tree heads (docs/audit.md): the log's size and root at an instant, signed with the
-- server's Ed25519 key. Each is also written outside the database (the export file); the
-- verifier checks the log against those copies, not these.
CREATE TABLE audit_tree_heads (
    size       BIGINT PRIMARY KEY,
    root       BYTEA NOT NULL,
    at         BIGINT NOT NULL,
    key_id     TEXT NOT NULL,
    signature  BYTEA NOT NULL
);
