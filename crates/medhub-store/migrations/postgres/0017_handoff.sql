-- Shift handoff in the I-PASS format (issue 5 §4); see docs/clinical.md "Shift handoff".
-- The notes are clinical content: they live only here, never in the audit log (which names
-- the handoff, its people and its patients by id).

-- `state` is `given`, `accepted` or `cancelled`; `expired` is derived from `created_at`.
CREATE TABLE handoffs (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs(id),
    from_user   UUID NOT NULL REFERENCES users(id),
    to_user     UUID NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    state       TEXT NOT NULL,
    closed_at   BIGINT
);
-- "Handoffs for me" and "handoffs I gave", newest first.
CREATE INDEX handoffs_to ON handoffs(to_user, created_at);
CREATE INDEX handoffs_from ON handoffs(from_user, created_at);

-- One I-PASS note per patient, in the giver's order.
CREATE TABLE handoff_patients (
    handoff_id   UUID NOT NULL REFERENCES handoffs(id),
    ord          INTEGER NOT NULL,
    patient_ref  TEXT NOT NULL,
    severity     TEXT NOT NULL,
    summary      TEXT NOT NULL,
    awareness    TEXT NOT NULL,
    synthesis    TEXT,
    PRIMARY KEY (handoff_id, ord)
);

-- The action list of one patient's note.
CREATE TABLE handoff_actions (
    handoff_id   UUID NOT NULL,
    patient_ord  INTEGER NOT NULL,
    ord          INTEGER NOT NULL,
    text         TEXT NOT NULL,
    done         BOOLEAN NOT NULL,
    PRIMARY KEY (handoff_id, patient_ord, ord)
);

-- The conversations handed over with the shift.
CREATE TABLE handoff_conversations (
    handoff_id       UUID NOT NULL REFERENCES handoffs(id),
    ord              INTEGER NOT NULL,
    conversation_id  UUID NOT NULL,
    PRIMARY KEY (handoff_id, ord)
);
