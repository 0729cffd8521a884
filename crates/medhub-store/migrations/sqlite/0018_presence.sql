-- Presence overrides (issue 5 §1): a state a user set by hand, until it expires. One row per
-- user; clearing one moves `until` to the clearing time, so every node's poller sees it end.
CREATE TABLE presence_overrides (
    user_id  BLOB PRIMARY KEY REFERENCES users(id),
    state    TEXT NOT NULL,
    set_at   INTEGER NOT NULL,
    until    INTEGER NOT NULL
) WITHOUT ROWID;
-- The pollers read the overrides in force.
CREATE INDEX presence_overrides_until ON presence_overrides(until);
