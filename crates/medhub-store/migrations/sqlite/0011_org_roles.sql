-- Custom roles per organization (issue 3, organizations as tenants). See docs/identity.md.
--
-- A role is either shipped (`org_id` NULL: the catalogue every organization sees, kept current
-- at every start) or an organization's own (`org_id` set: only that organization lists and
-- grants it). Shipped keys are unique, and an organization's keys are unique within it, so two
-- organizations may each have a `ward_lead`. The store refuses a custom key that a shipped
-- role has. A key no longer names one role, so roles get a surrogate `id` and grants point at
-- it; `builtin` is dropped, since it is exactly `org_id IS NULL`.
--
-- SQLite cannot change a primary key in place, and foreign keys stay on inside this
-- transaction: the tables are rebuilt beside the old ones (`user_roles_new` refers to
-- `roles_new`), copied, the old ones dropped (grants first), and the new ones renamed (SQLite
-- rewrites `user_roles`'s reference on the rename).
--
-- Existing custom roles go to the first organization (the oldest, as `Store::org` picks it):
-- before this migration a server had one organization in practice, bootstrap's, and its
-- administrators made those roles. So that no grant is lost or points across organizations, a
-- custom role held by users of another organization (possible only once an operator had
-- created a second one, 0010) is copied into that organization as well, and their grants point
-- at the copy. Custom roles on a server without any organization (no users can
-- hold them) are not kept.

CREATE TABLE roles_new (
    id           INTEGER PRIMARY KEY,
    -- NULL for a shipped role; otherwise the organization whose own role this is.
    org_id       BLOB REFERENCES orgs(id),
    key          TEXT NOT NULL,
    name         TEXT NOT NULL,
    -- Space-separated permission names (medhub_core::authz::Permission).
    permissions  TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE user_roles_new (
    user_id     BLOB NOT NULL REFERENCES users(id),
    role_id     INTEGER NOT NULL REFERENCES roles_new(id),
    granted_by  BLOB,
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, role_id)
) WITHOUT ROWID;

INSERT INTO roles_new (org_id, key, name, permissions, created_at)
  SELECT NULL, key, name, permissions, created_at FROM roles WHERE builtin = 1 ORDER BY key;
INSERT INTO roles_new (org_id, key, name, permissions, created_at)
  SELECT o.id, r.key, r.name, r.permissions, r.created_at
    FROM roles r, (SELECT id FROM orgs ORDER BY created_at, id LIMIT 1) o
   WHERE r.builtin = 0 ORDER BY r.key;
INSERT INTO roles_new (org_id, key, name, permissions, created_at)
  SELECT DISTINCT u.org_id, r.key, r.name, r.permissions, r.created_at
    FROM user_roles ur JOIN users u ON u.id = ur.user_id JOIN roles r ON r.key = ur.role_key
   WHERE r.builtin = 0
     AND NOT EXISTS (SELECT 1 FROM roles_new n WHERE n.org_id = u.org_id AND n.key = r.key);

-- Old keys were unique across shipped and custom roles, so each grant finds exactly one role:
-- the shipped one, or the custom one of the holder's organization.
INSERT INTO user_roles_new (user_id, role_id, granted_by, granted_at)
  SELECT ur.user_id, n.id, ur.granted_by, ur.granted_at
    FROM user_roles ur JOIN users u ON u.id = ur.user_id
    JOIN roles_new n ON n.key = ur.role_key AND (n.org_id IS NULL OR n.org_id = u.org_id);

DROP TABLE user_roles;
DROP TABLE roles;
ALTER TABLE roles_new RENAME TO roles;
ALTER TABLE user_roles_new RENAME TO user_roles;

CREATE UNIQUE INDEX roles_shipped_by_key ON roles(key) WHERE org_id IS NULL;
CREATE UNIQUE INDEX roles_by_org ON roles(org_id, key) WHERE org_id IS NOT NULL;
CREATE INDEX user_roles_by_role ON user_roles(role_id);
