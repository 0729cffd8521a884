-- Organizations as tenants (issue 3): an operator creates organizations beside the first one
-- (`medhub admin org create`); their names are unique, whatever the letter case, so that a
-- name on the command line or in the SSO settings means one organization.
CREATE UNIQUE INDEX orgs_by_name ON orgs (lower(name));
CREATE INDEX users_by_org ON users (org_id, username);
