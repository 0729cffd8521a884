-- Custom roles per organization (issue 3, organizations as tenants). See docs/identity.md.
--
-- A role is either shipped (`org_id` NULL: the catalogue every organization sees, kept current
-- at every start) or an organization's own (`org_id` set: only that organization lists and
-- grants it). Shipped keys are unique, and an organization's keys are unique within it, so two
-- organizations may each have a `ward_lead`. The store refuses a custom key that a shipped
-- role has. A key no longer names one role, so roles get a surrogate `id` and grants point at
-- it; `builtin` is dropped, since it is exactly `org_id IS NULL`. The tables change in place.
--
-- Existing custom roles go to the first organization (the oldest, as `Store::org` picks it):
-- before this migration a server had one organization in practice, bootstrap's, and its
-- administrators made those roles. So that no grant is lost or points across organizations, a
-- custom role held by users of another organization (possible only once an operator had
-- created a second one, 0010) is copied into that organization as well, and their grants point
-- at the copy. Custom roles on a server without any organization (no users can hold them) are
-- not kept.

ALTER TABLE roles ADD COLUMN id BIGSERIAL;
-- NULL for a shipped role; otherwise the organization whose own role this is.
ALTER TABLE roles ADD COLUMN org_id UUID REFERENCES orgs(id);
ALTER TABLE user_roles ADD COLUMN role_id BIGINT;

-- Keys stop being unique: their primary key, and the grants' reference to it, go.
ALTER TABLE user_roles DROP CONSTRAINT user_roles_role_key_fkey;
ALTER TABLE roles DROP CONSTRAINT roles_pkey;
ALTER TABLE roles ADD PRIMARY KEY (id);

UPDATE roles SET org_id = (SELECT id FROM orgs ORDER BY created_at, id LIMIT 1) WHERE NOT builtin;
INSERT INTO roles (org_id, key, name, permissions, builtin, created_at)
  SELECT DISTINCT u.org_id, r.key, r.name, r.permissions, FALSE, r.created_at
    FROM user_roles ur JOIN users u ON u.id = ur.user_id JOIN roles r ON r.key = ur.role_key
   WHERE NOT r.builtin AND r.org_id <> u.org_id;
DELETE FROM roles WHERE NOT builtin AND org_id IS NULL;

-- Old keys were unique across shipped and custom roles, so each grant finds exactly one role:
-- the shipped one, or the custom one of the holder's organization.
UPDATE user_roles ur SET role_id = r.id
  FROM users u, roles r
 WHERE u.id = ur.user_id AND r.key = ur.role_key AND (r.org_id IS NULL OR r.org_id = u.org_id);

ALTER TABLE user_roles DROP CONSTRAINT user_roles_pkey;
DROP INDEX user_roles_by_role;
ALTER TABLE user_roles DROP COLUMN role_key;
ALTER TABLE user_roles ALTER COLUMN role_id SET NOT NULL;
ALTER TABLE user_roles ADD PRIMARY KEY (user_id, role_id);
ALTER TABLE user_roles ADD FOREIGN KEY (role_id) REFERENCES roles(id);
ALTER TABLE roles DROP COLUMN builtin;

CREATE UNIQUE INDEX roles_shipped_by_key ON roles(key) WHERE org_id IS NULL;
CREATE UNIQUE INDEX roles_by_org ON roles(org_id, key) WHERE org_id IS NOT NULL;
CREATE INDEX user_roles_by_role ON user_roles(role_id);
