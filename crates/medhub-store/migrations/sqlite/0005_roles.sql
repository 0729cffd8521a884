-- Roles as data (issue 3): a role is a named set of permissions; a user holds any number of
-- roles. The shipped catalogue is upserted at every start; these two rows exist here so
-- that existing users can be given roles by this migration.

CREATE TABLE roles (
    key          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    -- Space-separated permission names (medhub_core::authz::Permission).
    permissions  TEXT NOT NULL,
    builtin      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE user_roles (
    user_id     BLOB NOT NULL REFERENCES users(id),
    role_key    TEXT NOT NULL REFERENCES roles(key),
    granted_by  BLOB,
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, role_key)
) WITHOUT ROWID;
CREATE INDEX user_roles_by_role ON user_roles(role_key);

INSERT INTO roles (key, name, permissions, builtin, created_at) VALUES
  ('clinician', 'Clinician (general staff)',
   'conversation.read conversation.write message.send directory.read account.self', 1, 0),
  ('administrator', 'Administrator',
   'conversation.read conversation.write message.send directory.read account.self user.admin session.admin org.settings role.admin', 1, 0);

INSERT INTO user_roles (user_id, role_key, granted_by, granted_at)
  SELECT id, CASE role WHEN 'admin' THEN 'administrator' ELSE 'clinician' END, NULL, created_at FROM users;
