-- Retention and legal hold (issue 4 §6): policies per organization and class of conversation,
-- the expiry job's tombstones, legal holds, and GDPR erasure. See docs/retention.md.

-- A removed message stays as a tombstone (id, conversation, sequence, sender, times,
-- acknowledgements): its body is emptied, its earlier revisions deleted and its request
-- fingerprint zeroed. `removed_cause` is `retention` or `erasure`.
ALTER TABLE messages ADD COLUMN removed_at INTEGER;
ALTER TABLE messages ADD COLUMN removed_cause TEXT;
-- Content kept despite its sender's erasure (clinical content under retention, or content
-- under a legal hold) carries the time the erasure was requested.
ALTER TABLE messages ADD COLUMN erasure_requested_at INTEGER;
-- The expiry job walks the messages not yet removed, oldest first.
CREATE INDEX messages_unremoved_by_age ON messages(created_at, id) WHERE removed_at IS NULL;

-- When the user's personal data was erased: the account is deactivated and pseudonymous.
ALTER TABLE users ADD COLUMN erased_at INTEGER;

-- Bumped by every change to the organization's policies and legal holds. The expiry job and
-- erasure decide from what they read, then apply only if this has not moved, so a hold set
-- in between is never overtaken.
ALTER TABLE orgs ADD COLUMN retention_version INTEGER NOT NULL DEFAULT 0;

-- How long an organization keeps the messages of one class of conversation (`clinical`,
-- `direct`, `group`, `channel`). No row: kept for ever.
CREATE TABLE retention_policies (
    org_id  BLOB NOT NULL REFERENCES orgs(id),
    class   TEXT NOT NULL,
    days    INTEGER NOT NULL,
    set_by  BLOB,
    set_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, class)
) WITHOUT ROWID;

-- Legal holds. Never deleted: lifting one records who, when and why. `scope` says which of
-- `conversation_id`, `patient_ref`, `user_id` is set. The reasons are typed by compliance
-- officers and live only here (the audit log holds the hold's id).
CREATE TABLE legal_holds (
    id               BLOB PRIMARY KEY,
    org_id           BLOB NOT NULL REFERENCES orgs(id),
    scope            TEXT NOT NULL,
    conversation_id  BLOB,
    patient_ref      TEXT,
    user_id          BLOB,
    reason           TEXT NOT NULL,
    created_by       BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    lifted_by        BLOB,
    lifted_at        INTEGER,
    lift_reason      TEXT
);
CREATE INDEX legal_holds_by_org ON legal_holds(org_id, created_at);
CREATE INDEX legal_holds_active ON legal_holds(org_id) WHERE lifted_at IS NULL;
