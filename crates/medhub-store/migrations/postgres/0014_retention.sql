-- Retention and legal hold (issue 4 §6): policies per organization and class of conversation,
-- the expiry job's tombstones, legal holds, and GDPR erasure. See docs/retention.md.

-- A removed message stays as a tombstone (id, conversation, sequence, sender, times,
-- acknowledgements): its body is emptied, its earlier revisions deleted and its request
-- fingerprint zeroed. `removed_cause` is `retention` or `erasure`.
ALTER TABLE messages ADD COLUMN removed_at BIGINT;
ALTER TABLE messages ADD COLUMN removed_cause TEXT;
-- Content kept despite its sender's erasure (clinical content under retention, or content
-- under a legal hold) carries the time the erasure was requested.
ALTER TABLE messages ADD COLUMN erasure_requested_at BIGINT;
-- The expiry job walks the messages not yet removed, oldest first.
CREATE INDEX messages_unremoved_by_age ON messages(created_at, id) WHERE removed_at IS NULL;

-- When the user's personal data was erased: the account is deactivated and pseudonymous.
ALTER TABLE users ADD COLUMN erased_at BIGINT;

-- Bumped by every change to the organization's policies and legal holds. The expiry job and
-- erasure decide from what they read, then apply only if this has not moved, so a hold set
-- in between is never overtaken.
ALTER TABLE orgs ADD COLUMN retention_version BIGINT NOT NULL DEFAULT 0;

-- How long an organization keeps the messages of one class of conversation (`clinical`,
-- `direct`, `group`, `channel`). No row: kept for ever.
CREATE TABLE retention_policies (
    org_id  UUID NOT NULL REFERENCES orgs(id),
    class   TEXT NOT NULL,
    days    BIGINT NOT NULL,
    set_by  UUID,
    set_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, class)
);

-- Legal holds. Never deleted: lifting one records who, when and why. `scope` says which of
-- `conversation_id`, `patient_ref`, `user_id` is set. The reasons are typed by compliance
-- officers and live only here (the audit log holds the hold's id).
CREATE TABLE legal_holds (
    id               UUID PRIMARY KEY,
    org_id           UUID NOT NULL REFERENCES orgs(id),
    scope            TEXT NOT NULL,
    conversation_id  UUID,
    patient_ref      TEXT,
    user_id          UUID,
    reason           TEXT NOT NULL,
    created_by       UUID NOT NULL,
    created_at       BIGINT NOT NULL,
    lifted_by        UUID,
    lifted_at        BIGINT,
    lift_reason      TEXT
);
CREATE INDEX legal_holds_by_org ON legal_holds(org_id, created_at);
CREATE INDEX legal_holds_active ON legal_holds(org_id) WHERE lifted_at IS NULL;
