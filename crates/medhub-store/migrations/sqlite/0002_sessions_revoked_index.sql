-- Live connections learn of revoked sessions by asking for recent revocations.
CREATE INDEX sessions_by_revocation ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;
