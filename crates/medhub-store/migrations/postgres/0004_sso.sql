-- Single sign-on (issue 3): pending OpenID Connect sign-ins and the links between IdP
-- subjects and medhub users. See docs/identity.md, "SSO (OIDC)".

-- A sign-in ceremony in progress, keyed by SHA-256 of its `state`, so any node can finish it.
-- The PKCE verifier is encrypted with the server key. Single use: `used_at` is set by the
-- one UPDATE that consumes it; rows are deleted once expired.
CREATE TABLE auth_flows (
    state_hash    BYTEA PRIMARY KEY,
    kind          TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    verifier_enc  BYTEA NOT NULL,
    return_to     TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX auth_flows_by_expiry ON auth_flows(expires_at);

-- Which medhub user an IdP subject is. Users are matched by (issuer, subject), never by name.
CREATE TABLE sso_identities (
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     UUID NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX sso_identities_by_user ON sso_identities(user_id);
