-- SAML 2.0 sign-in (issue 3): the replay cache of assertions. Pending SAML sign-ins live in
-- auth_flows (kind 'saml', keyed by SHA-256 of the AuthnRequest ID that InResponseTo names).
-- See docs/identity.md, "SSO (SAML)".

-- Assertions already used, by SHA-256 of (IdP entity id, assertion ID). A row is kept until
-- the assertion could no longer be accepted anyway (its NotOnOrAfter plus the clock skew), so
-- a second use is refused on every node and after restarts; expired rows are deleted when a
-- new one is recorded.
CREATE TABLE saml_replay (
    assertion_hash  BLOB PRIMARY KEY,
    expires_at      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX saml_replay_by_expiry ON saml_replay(expires_at);
