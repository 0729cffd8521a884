-- Audit records version 2 (issue 4, docs/audit.md): the organization, device, object,
-- patient reference and writing node of each record, and the indexes search and the reports
-- use. `version` is the leaf encoding a record was hashed with: records from before this
-- migration keep 1. Every search is scoped by organization and pages newest first on
-- (at, seq), so each index ends with those.
ALTER TABLE audit_events ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit_events ADD COLUMN org_id BLOB;
ALTER TABLE audit_events ADD COLUMN device TEXT;
ALTER TABLE audit_events ADD COLUMN object_type TEXT;
ALTER TABLE audit_events ADD COLUMN object_id TEXT;
ALTER TABLE audit_events ADD COLUMN patient_ref TEXT;
ALTER TABLE audit_events ADD COLUMN node TEXT;
ALTER TABLE audit_events ADD COLUMN region TEXT;
CREATE INDEX audit_by_org_time ON audit_events(org_id, at, seq);
CREATE INDEX audit_by_org_actor ON audit_events(org_id, actor_id, at, seq);
CREATE INDEX audit_by_org_patient ON audit_events(org_id, patient_ref, at, seq) WHERE patient_ref IS NOT NULL;
CREATE INDEX audit_by_org_action ON audit_events(org_id, action, at, seq);
CREATE INDEX audit_by_org_object ON audit_events(org_id, object_type, object_id, at, seq) WHERE object_type IS NOT NULL;
