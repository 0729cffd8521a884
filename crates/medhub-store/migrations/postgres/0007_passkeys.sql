-- Passkeys (issue 3, §2): WebAuthn credentials as the phishing-resistant second factor.
-- See docs/identity.md, "Passkeys".
--
-- One row per registered credential. `passkey` is webauthn-rs's serialized `Passkey` (the
-- public key, the signature counter and the flags); it holds nothing secret, but it is
-- rewritten after every use (the counter), compare-and-set on the old value. The credential
-- id is unique across all users: an authenticator registers it once.
--
-- Ceremony state (the challenge a registration or sign-in is waiting for) lives in
-- `auth_flows` (migration 0004) with the kinds `passkey_register`, `passkey_verify` and
-- `passkey_step_up`: five minutes, single use, sealed with the server key and bound to the
-- session that started it.
CREATE TABLE passkeys (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL REFERENCES users(id),
    credential_id  BYTEA NOT NULL UNIQUE,
    passkey        TEXT NOT NULL,
    name           TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT
);
CREATE INDEX passkeys_by_user ON passkeys(user_id);
