-- On-call schedules, the on-call directory and role addressing (issue "Clinical workflows",
-- sections 2 and 3). See docs/clinical.md. The rules are `medhub_core::schedule`.

-- An on-call role or team of an organization ("cardiology on-call", "4 West charge nurse"):
-- what schedules staff and what messages are addressed to. `key` is the stable name used in
-- addresses and routes (`cardiology-oncall`); `kind` is `role` or `team`; `department` is
-- free text for reports.
CREATE TABLE oncall_roles (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs(id),
    key         TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    department  TEXT,
    created_by  UUID,
    created_at  BIGINT NOT NULL,
    UNIQUE (org_id, key)
);

-- A role's schedules. `rotations` is the canonical JSON of the layers (medhub-wire's
-- `RotationSpec` list), checked by the core before it is written. `version` rises with every
-- change to the schedule or its overrides: a change decided on what was read is applied only
-- if the version has not moved, so two concurrent overrides cannot both pass the overlap
-- check.
CREATE TABLE oncall_schedules (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs(id),
    role_id     UUID NOT NULL REFERENCES oncall_roles(id),
    name        TEXT NOT NULL,
    zone        TEXT NOT NULL,
    rotations   TEXT NOT NULL,
    version     BIGINT NOT NULL DEFAULT 0,
    created_by  UUID,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX oncall_schedules_by_role ON oncall_schedules(role_id, created_at);
CREATE INDEX oncall_schedules_by_org ON oncall_schedules(org_id, created_at);

-- Overrides, one row each so they can be listed and audited. `replaces` is the person whose
-- place is taken (NULL: an added holder). `source` is `manual`, `swap` or `import`.
CREATE TABLE oncall_overrides (
    id           UUID PRIMARY KEY,
    schedule_id  UUID NOT NULL REFERENCES oncall_schedules(id) ON DELETE CASCADE,
    user_id      UUID NOT NULL REFERENCES users(id),
    replaces     UUID REFERENCES users(id),
    start_at     BIGINT NOT NULL,
    end_at       BIGINT NOT NULL,
    source       TEXT NOT NULL,
    created_by   UUID,
    created_at   BIGINT NOT NULL
);
CREATE INDEX oncall_overrides_by_schedule ON oncall_overrides(schedule_id, start_at);

-- Coverage: while `covered_id` is away, `by_id` takes what is addressed to them.
CREATE TABLE oncall_coverages (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs(id),
    covered_id  UUID NOT NULL REFERENCES users(id),
    by_id       UUID NOT NULL REFERENCES users(id),
    start_at    BIGINT NOT NULL,
    end_at      BIGINT NOT NULL,
    created_by  UUID,
    created_at  BIGINT NOT NULL
);
CREATE INDEX oncall_coverages_by_org ON oncall_coverages(org_id, end_at);

-- The version of an organization's coverages (as `oncall_schedules.version`, for the cycle
-- and overlap checks of coverage).
CREATE TABLE oncall_coverage_versions (
    org_id   UUID PRIMARY KEY REFERENCES orgs(id),
    version  BIGINT NOT NULL
);

-- The conversation between a sender and an on-call role: where messages addressed to the
-- role go, with the sender and the role's holders as members.
CREATE TABLE oncall_conversations (
    role_id          UUID NOT NULL REFERENCES oncall_roles(id),
    sender_id        UUID NOT NULL REFERENCES users(id),
    conversation_id  UUID NOT NULL REFERENCES conversations(id),
    org_id           UUID NOT NULL REFERENCES orgs(id),
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (role_id, sender_id)
);
CREATE INDEX oncall_conversations_by_conversation ON oncall_conversations(conversation_id);

-- Who a message addressed to a role went to, and why: at send time (`send`) and each time the
-- role's holder changed while the message was open (`handover`). `holders` is JSON written by
-- medhub-wire (user ids, schedule ids, layers, override ids, covering-for chains: no names,
-- no message text). `dedupe` makes recording idempotent across retries and nodes.
CREATE TABLE role_resolutions (
    id               UUID PRIMARY KEY,
    org_id           UUID NOT NULL REFERENCES orgs(id),
    role_id          UUID NOT NULL REFERENCES oncall_roles(id),
    message_id       UUID NOT NULL REFERENCES messages(id),
    conversation_id  UUID NOT NULL REFERENCES conversations(id),
    kind             TEXT NOT NULL,
    at               BIGINT NOT NULL,
    holders          TEXT NOT NULL,
    dedupe           TEXT NOT NULL UNIQUE
);
CREATE INDEX role_resolutions_by_message ON role_resolutions(message_id, at);
CREATE INDEX role_resolutions_by_role ON role_resolutions(role_id, at);

-- The hand-over job looks for urgent and critical messages not yet recalled, by conversation
-- and age.
CREATE INDEX oncall_messages_needing_ack ON messages(conversation_id, created_at)
    WHERE priority <> 'routine' AND recalled_at IS NULL;
