-- Organizations as tenants, patient scope and break-glass (issue 3). See docs/identity.md.

-- The organization a conversation belongs to (only its users can be members), and the
-- patient it is about (its care team may read it). Existing conversations take their
-- members' organization.
ALTER TABLE conversations ADD COLUMN org_id UUID;
ALTER TABLE conversations ADD COLUMN patient_ref TEXT;
UPDATE conversations SET org_id = COALESCE(
    (SELECT u.org_id FROM members m JOIN users u ON u.id = m.user_id
      WHERE m.conversation_id = conversations.id LIMIT 1),
    (SELECT id FROM orgs ORDER BY created_at LIMIT 1));
CREATE INDEX conversations_by_patient ON conversations(org_id, patient_ref) WHERE patient_ref IS NOT NULL;

-- How long break-glass access lasts in this organization, in seconds.
ALTER TABLE orgs ADD COLUMN break_glass_s BIGINT NOT NULL DEFAULT 3600;

-- Who is on a patient's care team now: they may read the patient's conversations.
CREATE TABLE care_team (
    org_id       UUID NOT NULL REFERENCES orgs(id),
    patient_ref  TEXT NOT NULL,
    user_id      UUID NOT NULL REFERENCES users(id),
    added_by     UUID,
    added_at     BIGINT NOT NULL,
    PRIMARY KEY (org_id, patient_ref, user_id)
);
CREATE INDEX care_team_by_user ON care_team(user_id);

-- Emergency access grants. Never deleted: they are the record compliance officers review.
-- `ended_at` is set once the end has been recorded in the audit trail.
CREATE TABLE break_glass (
    id               UUID PRIMARY KEY,
    org_id           UUID NOT NULL REFERENCES orgs(id),
    user_id          UUID NOT NULL REFERENCES users(id),
    session_id       UUID NOT NULL,
    conversation_id  UUID NOT NULL REFERENCES conversations(id),
    patient_ref      TEXT NOT NULL,
    reason           TEXT NOT NULL,
    started_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    ended_at         BIGINT
);
CREATE INDEX break_glass_by_user ON break_glass(user_id, conversation_id, expires_at);
CREATE INDEX break_glass_by_time ON break_glass(org_id, started_at);
CREATE INDEX break_glass_open ON break_glass(expires_at) WHERE ended_at IS NULL;
