//! [`IdentityStore`] on SQLite.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::authz::{ADMINISTRATOR, CLINICIAN, Permissions, Role};
use medhub_core::model::{Session, SessionState, SystemRole};
use medhub_core::session::Throttle;
use medhub_core::{OrgId, PasskeyId, SessionId, UserId};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::codec::us;
use super::{SqliteStore, codec};
use crate::identity::stored_tree_head;
use crate::{
    AuditEntry, AuditHead, AuthFlow, Ended, IdentityStore, PasskeyDeletion, PasskeyRecord, StoreError, StoredTreeHead,
    TotpRecord, UserRecord,
};

const PASSKEY_COLS: &str = "id, user_id, credential_id, passkey, name, created_at, last_used_at";

fn passkey(r: &rusqlite::Row<'_>) -> rusqlite::Result<PasskeyRecord> {
    Ok(PasskeyRecord {
        id: codec::id(r, 0, PasskeyId::from_slice)?,
        user: codec::user_id(r, 1)?,
        credential_id: r.get(2)?,
        passkey: r.get(3)?,
        name: r.get(4)?,
        created_at: codec::ts(r, 5)?,
        last_used_at: codec::opt_ts(r, 6)?,
    })
}

pub(super) fn ended(
    rows: rusqlite::MappedRows<'_, impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<(SessionId, UserId)>>,
) -> Result<Ended, StoreError> {
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn session_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<(SessionId, UserId)> {
    Ok((codec::id(r, 0, SessionId::from_slice)?, codec::user_id(r, 1)?))
}

fn sessions(c: &rusqlite::Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Session>, StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let rows = st.query_map(p, |r| codec::session(r, 0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.read(move |c| {
            let sql = format!("SELECT {} FROM sessions WHERE id = ?1 AND revoked_at IS NULL", codec::SESSION_COLS);
            Ok(c.prepare_cached(&sql)?.query_row([id.to_bytes()], |r| codec::session(r, 0)).optional()?)
        })
        .await
    }

    async fn sessions_for_user(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL ORDER BY id DESC",
                codec::SESSION_COLS
            );
            sessions(c, &sql, [user.to_bytes()])
        })
        .await
    }

    async fn live_sessions(
        &self,
        org: OrgId,
        before: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<Session>, StoreError> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM sessions WHERE revoked_at IS NULL AND (?1 IS NULL OR id < ?1)
                   AND user_id IN (SELECT id FROM users WHERE org_id = ?3)
                 ORDER BY id DESC LIMIT ?2",
                codec::SESSION_COLS
            );
            sessions(c, &sql, params![before.map(|b| b.to_bytes()), limit, org.to_bytes()])
        })
        .await
    }

    async fn end_session(
        &self,
        id: SessionId,
        now: Timestamp,
        reason: &str,
        audit: Option<&AuditRecord>,
        also: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let (reason, template, also) = (reason.to_owned(), audit.cloned(), also.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let user = tx
                .prepare_cached(
                    "UPDATE sessions SET revoked_at = ?2, end_reason = ?3 WHERE id = ?1 AND revoked_at IS NULL
                     RETURNING user_id",
                )?
                .query_row(params![id.to_bytes(), us(now), reason], |r| codec::user_id(r, 0))
                .optional()?;
            let ended: Ended = user.map(|u| (id, u)).into_iter().collect();
            append_session_ends(&tx, template.as_ref(), &ended)?;
            if !ended.is_empty() {
                append_leaves(&tx, &also)?;
            }
            tx.commit()?;
            Ok(!ended.is_empty())
        })
        .await
    }

    async fn end_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<Ended, StoreError> {
        let (reason, template) = (reason.to_owned(), audit.cloned());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let done = {
                let mut st = tx.prepare_cached(
                    "UPDATE sessions SET revoked_at = ?2, end_reason = ?3
                     WHERE user_id = ?1 AND revoked_at IS NULL AND (?4 IS NULL OR id <> ?4)
                     RETURNING id, user_id",
                )?;
                ended(
                    st.query_map(params![user.to_bytes(), us(now), reason, keep.map(|k| k.to_bytes())], session_user)?,
                )?
            };
            append_session_ends(&tx, template.as_ref(), &done)?;
            tx.commit()?;
            Ok(done)
        })
        .await
    }

    async fn set_session_state(
        &self,
        id: SessionId,
        state: SessionState,
        mfa_at: Option<Timestamp>,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let audit = audit.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE sessions SET state = ?2, mfa_at = COALESCE(?3, mfa_at) WHERE id = ?1",
                params![id.to_bytes(), state.as_str(), mfa_at.map(us)],
            )?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn activate_session(
        &self,
        id: SessionId,
        token_hash: &[u8; 32],
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let (hash, audit) = (token_hash.to_vec(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE sessions SET state = ?2, mfa_at = ?3, token_hash = ?4 WHERE id = ?1 AND revoked_at IS NULL",
                params![id.to_bytes(), SessionState::Active.as_str(), us(now), hash],
            )?;
            if n != 1 {
                return Ok(false);
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn record_activity(&self, activity: &[(SessionId, Timestamp)]) -> Result<(), StoreError> {
        if activity.is_empty() {
            return Ok(());
        }
        let activity = activity.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE sessions SET last_activity_at = MAX(last_activity_at, ?2)
                     WHERE id = ?1 AND revoked_at IS NULL",
                )?;
                for (id, at) in &activity {
                    st.execute(params![id.to_bytes(), us(*at)])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn end_expired_sessions(&self, now: Timestamp, audit: Option<&AuditRecord>) -> Result<Ended, StoreError> {
        let template = audit.cloned();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Each session is measured against its own organization's idle timeout (seconds;
            // times are microseconds).
            let mut st = tx.prepare_cached(
                "UPDATE sessions
                 SET revoked_at = ?1,
                     end_reason = CASE WHEN expires_at <= ?1 THEN 'absolute_lifetime' ELSE 'idle_timeout' END
                 WHERE revoked_at IS NULL AND (expires_at <= ?1 OR last_activity_at <= ?1 -
                   (SELECT o.idle_timeout_s FROM users u JOIN orgs o ON o.id = u.org_id
                     WHERE u.id = sessions.user_id) * 1000000)
                 RETURNING id, user_id",
            )?;
            let done = ended(st.query_map(params![us(now)], session_user)?)?;
            drop(st);
            append_session_ends(&tx, template.as_ref(), &done)?;
            tx.commit()?;
            Ok(done)
        })
        .await
    }

    async fn set_user_role(&self, user: UserId, role: SystemRole, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let audit = audit.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("UPDATE users SET role = ?2 WHERE id = ?1", params![user.to_bytes(), role.as_str()])?;
            match role {
                SystemRole::Admin => {
                    tx.execute(
                        "INSERT INTO user_roles (user_id, role_id, granted_by, granted_at)
                         VALUES (?1, (SELECT id FROM roles WHERE org_id IS NULL AND key = ?2), NULL, 0)
                         ON CONFLICT DO NOTHING",
                        params![user.to_bytes(), ADMINISTRATOR],
                    )?;
                }
                SystemRole::User => {
                    tx.execute(
                        "DELETE FROM user_roles
                         WHERE user_id = ?1 AND role_id = (SELECT id FROM roles WHERE org_id IS NULL AND key = ?2)",
                        params![user.to_bytes(), ADMINISTRATOR],
                    )?;
                    tx.execute(
                        "INSERT INTO user_roles (user_id, role_id, granted_by, granted_at)
                         SELECT ?1, id, NULL, 0 FROM roles WHERE org_id IS NULL AND key = ?2
                            AND NOT EXISTS (SELECT 1 FROM user_roles WHERE user_id = ?1)",
                        params![user.to_bytes(), CLINICIAN],
                    )?;
                }
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn set_idle_timeout(
        &self,
        org: OrgId,
        idle_timeout: SignedDuration,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let audit = audit.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE orgs SET idle_timeout_s = ?2 WHERE id = ?1",
                params![org.to_bytes(), idle_timeout.as_secs()],
            )?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT secret_enc, last_step, confirmed_at FROM totp WHERE user_id = ?1")?;
            Ok(st
                .query_row([user.to_bytes()], |r| {
                    Ok(TotpRecord {
                        secret_enc: r.get(0)?,
                        last_step: r.get::<_, Option<i64>>(1)?.map(|s| s.max(0) as u64),
                        confirmed_at: codec::opt_ts(r, 2)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn put_pending_totp(&self, user: UserId, secret_enc: &[u8], now: Timestamp) -> Result<(), StoreError> {
        let secret = secret_enc.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let confirmed: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM totp WHERE user_id = ?1 AND confirmed_at IS NOT NULL)",
                [user.to_bytes()],
                |r| r.get(0),
            )?;
            if confirmed {
                return Err(StoreError::Conflict("a confirmed authenticator exists"));
            }
            tx.execute(
                "INSERT INTO totp (user_id, secret_enc, last_step, confirmed_at, created_at)
                 VALUES (?1, ?2, NULL, NULL, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET secret_enc = excluded.secret_enc, created_at = excluded.created_at",
                params![user.to_bytes(), secret, us(now)],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn confirm_totp(
        &self,
        user: UserId,
        step: u64,
        recovery_hashes: &[String],
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let (hashes, audit) = (recovery_hashes.to_vec(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE totp SET confirmed_at = ?2, last_step = ?3
                 WHERE user_id = ?1 AND confirmed_at IS NULL AND (last_step IS NULL OR last_step < ?3)",
                params![user.to_bytes(), us(now), codec::i(step)],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            replace_codes(&tx, user, &hashes)?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn advance_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError> {
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE totp SET last_step = ?2
                 WHERE user_id = ?1 AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < ?2)",
                params![user.to_bytes(), codec::i(step)],
            )? > 0)
        })
        .await
    }

    async fn remove_second_factors(&self, user: UserId, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let audit = audit.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM totp WHERE user_id = ?1", [user.to_bytes()])?;
            tx.execute("DELETE FROM passkeys WHERE user_id = ?1", [user.to_bytes()])?;
            tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user.to_bytes()])?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn add_passkey(&self, p: &PasskeyRecord, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let (p, audit) = (p.clone(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "INSERT INTO passkeys (id, user_id, credential_id, passkey, name, created_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (credential_id) DO NOTHING",
                params![
                    p.id.to_bytes(),
                    p.user.to_bytes(),
                    p.credential_id,
                    p.passkey,
                    p.name,
                    us(p.created_at),
                    p.last_used_at.map(us)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict("this credential is registered already"));
            }
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        self.read(move |c| {
            let sql = format!("SELECT {PASSKEY_COLS} FROM passkeys WHERE user_id = ?1 ORDER BY created_at, id");
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map([user.to_bytes()], passkey)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<PasskeyRecord>, StoreError> {
        let cred = credential_id.to_vec();
        self.read(move |c| {
            let sql = format!("SELECT {PASSKEY_COLS} FROM passkeys WHERE credential_id = ?1");
            Ok(c.prepare_cached(&sql)?.query_row([cred], passkey).optional()?)
        })
        .await
    }

    async fn update_passkey(
        &self,
        id: PasskeyId,
        old: &str,
        new: &str,
        used_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let (old, new) = (old.to_owned(), new.to_owned());
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE passkeys SET passkey = ?3, last_used_at = ?4 WHERE id = ?1 AND passkey = ?2",
                params![id.to_bytes(), old, new, us(used_at)],
            )? > 0)
        })
        .await
    }

    async fn delete_passkey(
        &self,
        user: UserId,
        id: PasskeyId,
        audit: &[AuditRecord],
    ) -> Result<PasskeyDeletion, StoreError> {
        let audit = audit.to_vec();
        self.write(move |c| {
            // The single writer connection and an immediate transaction serialise this.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM passkeys WHERE id = ?1 AND user_id = ?2)",
                params![id.to_bytes(), user.to_bytes()],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(PasskeyDeletion::NotFound);
            }
            let others: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM passkeys WHERE user_id = ?1 AND id <> ?2)
                     OR EXISTS (SELECT 1 FROM totp WHERE user_id = ?1 AND confirmed_at IS NOT NULL)",
                params![user.to_bytes(), id.to_bytes()],
                |r| r.get(0),
            )?;
            if !others {
                return Ok(PasskeyDeletion::LastFactor);
            }
            tx.execute("DELETE FROM passkeys WHERE id = ?1 AND user_id = ?2", params![id.to_bytes(), user.to_bytes()])?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(PasskeyDeletion::Deleted)
        })
        .await
    }

    async fn recovery_codes(&self, user: UserId) -> Result<Vec<(u32, String)>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT idx, code_hash FROM recovery_codes WHERE user_id = ?1 AND used_at IS NULL ORDER BY idx",
            )?;
            let rows = st.query_map([user.to_bytes()], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn use_recovery_code(&self, user: UserId, idx: u32, now: Timestamp) -> Result<bool, StoreError> {
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE recovery_codes SET used_at = ?3 WHERE user_id = ?1 AND idx = ?2 AND used_at IS NULL",
                params![user.to_bytes(), idx, us(now)],
            )? > 0)
        })
        .await
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let (hashes, audit) = (hashes.to_vec(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            replace_codes(&tx, user, &hashes)?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn create_ws_ticket(
        &self,
        hash: &[u8; 32],
        session: SessionId,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let hash = *hash;
        self.write(move |c| {
            c.execute(
                "INSERT INTO ws_tickets (hash, session_id, expires_at, used_at) VALUES (?1, ?2, ?3, NULL)",
                params![hash, session.to_bytes(), us(expires_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn consume_ws_ticket(&self, hash: &[u8; 32], now: Timestamp) -> Result<Option<SessionId>, StoreError> {
        let hash = *hash;
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let session = tx
                .query_row(
                    "UPDATE ws_tickets SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2
                     RETURNING session_id",
                    params![hash, us(now)],
                    |r| codec::id(r, 0, SessionId::from_slice),
                )
                .optional()?;
            // Used tickets are kept until they expire, so a replay is told apart from garbage
            // only in the log, never in the answer.
            tx.execute("DELETE FROM ws_tickets WHERE expires_at <= ?1", [us(now)])?;
            tx.commit()?;
            Ok(session)
        })
        .await
    }

    async fn throttles(&self, keys: &[String]) -> Result<Vec<(String, Throttle)>, StoreError> {
        let keys = keys.to_vec();
        self.read(move |c| {
            let mut st =
                c.prepare_cached("SELECT failures, window_start, locked_until FROM throttle WHERE key = ?1")?;
            let mut out = Vec::new();
            for k in keys {
                let t = st
                    .query_row([&k], |r| {
                        Ok(Throttle {
                            failures: r.get(0)?,
                            window_start: codec::ts(r, 1)?,
                            locked_until: codec::opt_ts(r, 2)?,
                        })
                    })
                    .optional()?;
                if let Some(t) = t {
                    out.push((k, t));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_throttle(&self, key: &str, t: &Throttle) -> Result<(), StoreError> {
        let (key, t) = (key.to_owned(), *t);
        self.write(move |c| {
            c.execute(
                "INSERT INTO throttle (key, failures, window_start, locked_until) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,
                     window_start = excluded.window_start, locked_until = excluded.locked_until",
                params![key, t.failures, us(t.window_start), t.locked_until.map(us)],
            )?;
            Ok(())
        })
        .await
    }

    async fn clear_throttle(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |c| {
            c.execute("DELETE FROM throttle WHERE key = ?1", [key])?;
            Ok(())
        })
        .await
    }

    async fn create_invitation(
        &self,
        hash: &[u8; 32],
        user: UserId,
        by: UserId,
        now: Timestamp,
        expires_at: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let (hash, audit) = (*hash, audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO invitations (token_hash, user_id, created_by, created_at, expires_at, used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
                params![hash, user.to_bytes(), by.to_bytes(), us(now), us(expires_at)],
            )?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn redeem_invitation(
        &self,
        hash: &[u8; 32],
        password_hash: &str,
        now: Timestamp,
        audit: Option<&AuditRecord>,
    ) -> Result<Option<UserId>, StoreError> {
        let (hash, phc, template) = (*hash, password_hash.to_owned(), audit.cloned());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found = tx
                .query_row(
                    "SELECT i.user_id, u.org_id FROM invitations i JOIN users u ON u.id = i.user_id
                     WHERE i.token_hash = ?1 AND i.used_at IS NULL AND i.expires_at > ?2 AND u.active = 1",
                    params![hash, us(now)],
                    |r| Ok((codec::user_id(r, 0)?, codec::id(r, 1, OrgId::from_slice)?)),
                )
                .optional()?;
            let Some((user, org)) = found else { return Ok(None) };
            if let Some(t) = &template {
                append_leaves(&tx, &[crate::identity::user_record_of(t, user, org)])?;
            }
            tx.execute(
                "UPDATE invitations SET used_at = ?2 WHERE user_id = ?1 AND used_at IS NULL",
                params![user.to_bytes(), us(now)],
            )?;
            tx.execute(
                "UPDATE users SET password_hash = ?2, must_change_password = 0 WHERE id = ?1",
                params![user.to_bytes(), phc],
            )?;
            tx.commit()?;
            Ok(Some(user))
        })
        .await
    }

    async fn has_open_invitation(&self, user: UserId, now: Timestamp) -> Result<bool, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM invitations WHERE user_id = ?1 AND used_at IS NULL AND expires_at > ?2)",
                params![user.to_bytes(), us(now)],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn upsert_builtin_roles(&self, roles: &[Role], now: Timestamp) -> Result<(), StoreError> {
        let roles = roles.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO roles (org_id, key, name, permissions, created_at) VALUES (NULL, ?1, ?2, ?3, ?4)
                     ON CONFLICT (key) WHERE org_id IS NULL
                     DO UPDATE SET name = excluded.name, permissions = excluded.permissions",
                )?;
                for r in &roles {
                    st.execute(params![r.key, r.name, r.permissions.to_names(), us(now)])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn roles(&self, org: OrgId) -> Result<Vec<Role>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT key, name, permissions, org_id IS NULL FROM roles r
                 WHERE org_id = ?1
                    OR (org_id IS NULL AND NOT EXISTS (SELECT 1 FROM roles o WHERE o.org_id = ?1 AND o.key = r.key))
                 ORDER BY key",
            )?;
            let rows = st.query_map([org.to_bytes()], |r| {
                let names: String = r.get(2)?;
                Ok(Role {
                    key: r.get(0)?,
                    name: r.get(1)?,
                    permissions: Permissions::from_names(&names)
                        .map_err(|_| codec::corrupt(2, "unknown permission"))?,
                    builtin: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn create_role(
        &self,
        org: OrgId,
        role: &Role,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let (role, audit) = (role.clone(), audit.to_vec());
        self.write(move |c| {
            let c = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The writer is the only connection that writes: nothing slips in between.
            let shipped: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM roles WHERE org_id IS NULL AND key = ?1)",
                [&role.key],
                |r| r.get(0),
            )?;
            if shipped {
                return Err(StoreError::Conflict("a built-in role has this key"));
            }
            let n = c.execute(
                "INSERT INTO roles (org_id, key, name, permissions, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![org.to_bytes(), role.key, role.name, role.permissions.to_names(), us(now)],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict("a role with this key exists"));
            }
            append_leaves(&c, &audit)?;
            c.commit()?;
            Ok(())
        })
        .await
    }

    async fn user_roles(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT r.key FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = ?1 ORDER BY r.key",
            )?;
            let rows = st.query_map([user.to_bytes()], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_user_roles(
        &self,
        user: UserId,
        keys: &[String],
        by: UserId,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let (keys, audit) = (keys.to_vec(), audit.to_vec());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let org: Vec<u8> = tx
                .query_row("SELECT org_id FROM users WHERE id = ?1", [user.to_bytes()], |r| r.get(0))
                .optional()?
                .ok_or(StoreError::Conflict("unknown user"))?;
            let mut ids = Vec::with_capacity(keys.len());
            {
                // The organization's own role first, then the shipped one; another
                // organization's role is not found.
                let mut st = tx.prepare_cached(
                    "SELECT id FROM roles WHERE key = ?2 AND (org_id = ?1 OR org_id IS NULL)
                     ORDER BY org_id IS NULL LIMIT 1",
                )?;
                for k in &keys {
                    let id: Option<i64> = st.query_row(params![org, k], |r| r.get(0)).optional()?;
                    ids.push(id.ok_or(StoreError::Conflict("unknown role"))?);
                }
            }
            tx.execute("DELETE FROM user_roles WHERE user_id = ?1", [user.to_bytes()])?;
            for id in &ids {
                tx.execute(
                    "INSERT INTO user_roles (user_id, role_id, granted_by, granted_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    params![user.to_bytes(), id, by.to_bytes(), us(now)],
                )?;
            }
            let admin = keys.iter().any(|k| k == ADMINISTRATOR);
            let role = if admin { SystemRole::Admin } else { SystemRole::User };
            tx.execute("UPDATE users SET role = ?2 WHERE id = ?1", params![user.to_bytes(), role.as_str()])?;
            append_leaves(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn user_permission_names(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT r.permissions FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = ?1",
            )?;
            let rows = st.query_map([user.to_bytes()], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let records = records.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            append_leaves(&tx, &records)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        self.read(|c| {
            let (size, frontier): (i64, Vec<u8>) =
                c.query_row("SELECT size, frontier FROM audit_head WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            AuditHead::from_stored(size, &frontier)
        })
        .await
    }

    async fn audit_log(&self, from: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {AUDIT_COLS}, seq, leaf_hash FROM audit_events WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = st.query_map(params![from, limit], audit_entry)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn audit_leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let (from, to) = (i64::try_from(from).unwrap_or(i64::MAX), i64::try_from(to).unwrap_or(i64::MAX));
        self.read(move |c| {
            let mut st =
                c.prepare_cached("SELECT leaf_hash FROM audit_events WHERE seq >= ?1 AND seq < ?2 ORDER BY seq")?;
            let rows = st.query_map(params![from, to], |r| r.get::<_, Option<Vec<u8>>>(0))?;
            Ok(rows.map(|r| r.map(Option::unwrap_or_default)).collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn put_tree_head(&self, h: &StoredTreeHead) -> Result<bool, StoreError> {
        let h = h.clone();
        self.write(move |c| {
            let size = i64::try_from(h.head.size).unwrap_or(i64::MAX);
            Ok(c.execute(
                "INSERT INTO audit_tree_heads (size, root, at, key_id, signature) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (size) DO NOTHING",
                params![size, &h.head.root[..], us(h.head.at), h.key_id, h.signature],
            )? > 0)
        })
        .await
    }

    async fn latest_tree_head(&self) -> Result<Option<StoredTreeHead>, StoreError> {
        self.read(|c| {
            let row = c
                .query_row(
                    "SELECT size, root, at, key_id, signature FROM audit_tree_heads ORDER BY size DESC LIMIT 1",
                    [],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            codec::ts(r, 2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(size, root, at, key_id, signature)| stored_tree_head(size, &root, at, key_id, signature))
                .transpose()
        })
        .await
    }

    async fn search_audit(&self, q: &crate::audit::AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let (sql, params) = crate::audit::search_sql(q, '?');
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let values: Vec<rusqlite::types::Value> = params
                .into_iter()
                .map(|p| match p {
                    crate::audit::Param::Uuid(u) => rusqlite::types::Value::Blob(u.as_bytes().to_vec()),
                    crate::audit::Param::Text(t) => rusqlite::types::Value::Text(t),
                    crate::audit::Param::Int(i) => rusqlite::types::Value::Integer(i),
                })
                .collect();
            let rows = st.query_map(rusqlite::params_from_iter(values), audit_entry)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn audit_events(&self, after: i64, limit: u32) -> Result<Vec<(i64, AuditRecord)>, StoreError> {
        self.read(move |c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {AUDIT_COLS} FROM audit_events WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
            let rows = st.query_map(params![after, limit], audit_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn key_check(&self, candidate: Option<&[u8]>, now: Timestamp) -> Result<Option<Vec<u8>>, StoreError> {
        let candidate = candidate.map(<[u8]>::to_vec);
        self.write(move |c| {
            if let Some(v) = candidate {
                c.execute(
                    "INSERT INTO server_key_check (id, check_value, created_at) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO NOTHING",
                    params![v, us(now)],
                )?;
            }
            Ok(c.query_row("SELECT check_value FROM server_key_check WHERE id = 1", [], |r| r.get(0)).optional()?)
        })
        .await
    }

    // --- SSO --------------------------------------------------------------------------------

    async fn create_auth_flow(&self, flow: &AuthFlow) -> Result<(), StoreError> {
        let flow = flow.clone();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM auth_flows WHERE expires_at <= ?1", [us(flow.created_at)])?;
            tx.execute(
                "INSERT INTO auth_flows (state_hash, kind, nonce, verifier_enc, return_to, created_at, expires_at, used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
                params![
                    flow.state_hash,
                    flow.kind,
                    flow.nonce,
                    flow.verifier_enc,
                    flow.return_to,
                    us(flow.created_at),
                    us(flow.expires_at)
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn consume_auth_flow(
        &self,
        state_hash: &[u8; 32],
        kind: &str,
        now: Timestamp,
    ) -> Result<Option<AuthFlow>, StoreError> {
        let (hash, kind) = (*state_hash, kind.to_owned());
        self.write(move |c| {
            Ok(c.prepare_cached(
                "UPDATE auth_flows SET used_at = ?3
                 WHERE state_hash = ?1 AND kind = ?2 AND used_at IS NULL AND expires_at > ?3
                 RETURNING kind, nonce, verifier_enc, return_to, created_at, expires_at",
            )?
            .query_row(params![hash, kind, us(now)], |r| {
                Ok(AuthFlow {
                    state_hash: hash,
                    kind: r.get(0)?,
                    nonce: r.get(1)?,
                    verifier_enc: r.get(2)?,
                    return_to: r.get(3)?,
                    created_at: codec::ts(r, 4)?,
                    expires_at: codec::ts(r, 5)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn sso_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserId>, StoreError> {
        let (issuer, subject) = (issuer.to_owned(), subject.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT user_id FROM sso_identities WHERE issuer = ?1 AND subject = ?2")?
                .query_row(params![issuer, subject], |r| codec::user_id(r, 0))
                .optional()?)
        })
        .await
    }

    async fn create_sso_user(
        &self,
        user: &UserRecord,
        issuer: &str,
        subject: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (user, issuer, subject) = (user.clone(), issuer.to_owned(), subject.to_owned());
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            super::batch::insert_user(&tx, &user)?;
            let linked = tx.execute(
                "INSERT INTO sso_identities (issuer, subject, user_id, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (issuer, subject) DO NOTHING",
                params![issuer, subject, user.user.id.to_bytes(), us(now)],
            )?;
            if linked == 0 {
                return Err(StoreError::Conflict("the identity provider subject is already linked"));
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn record_saml_assertion(
        &self,
        assertion_hash: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let hash = *assertion_hash;
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM saml_replay WHERE expires_at <= ?1", [us(now)])?;
            let inserted = tx.execute(
                "INSERT INTO saml_replay (assertion_hash, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (assertion_hash) DO NOTHING",
                params![hash, us(expires_at)],
            )?;
            tx.commit()?;
            Ok(inserted == 1)
        })
        .await
    }
}

fn replace_codes(tx: &rusqlite::Transaction<'_>, user: UserId, hashes: &[String]) -> Result<(), StoreError> {
    tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user.to_bytes()])?;
    let mut st =
        tx.prepare_cached("INSERT INTO recovery_codes (user_id, idx, code_hash, used_at) VALUES (?1, ?2, ?3, NULL)")?;
    for (i, h) in hashes.iter().enumerate() {
        st.execute(params![user.to_bytes(), i as u32, h])?;
    }
    Ok(())
}

use crate::sql::{AUDIT_COL_COUNT, AUDIT_COLS};

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, AuditRecord)> {
    Ok((
        r.get::<_, i64>(0)?,
        AuditRecord {
            at: codec::ts(r, 1)?,
            actor: codec::opt_id(r, 2, UserId::from_slice)?,
            session: codec::opt_id(r, 3, SessionId::from_slice)?,
            action: r.get(4)?,
            target: r.get(5)?,
            outcome: codec::parse(r, 6, Outcome::parse)?,
            reason: r.get(7)?,
            ip: r.get(8)?,
            version: r.get(9)?,
            org: codec::opt_id(r, 10, OrgId::from_slice)?,
            device: r.get(11)?,
            object_type: r.get(12)?,
            object_id: r.get(13)?,
            patient_ref: r.get(14)?,
            node: r.get(15)?,
            region: r.get(16)?,
        },
    ))
}

/// Appends the records of the sessions `ended` in `tx` (none without a template).
pub(super) fn append_session_ends(
    tx: &rusqlite::Transaction<'_>,
    template: Option<&AuditRecord>,
    ended: &Ended,
) -> Result<(), StoreError> {
    let Some(template) = template else { return Ok(()) };
    if ended.is_empty() {
        return Ok(());
    }
    let mut records = Vec::with_capacity(ended.len());
    {
        let mut st = tx.prepare_cached("SELECT org_id FROM users WHERE id = ?1")?;
        for (session, user) in ended {
            let org = st.query_row([user.to_bytes()], |r| codec::opt_id(r, 0, OrgId::from_slice)).optional()?.flatten();
            records.push(crate::identity::session_end_record(template, *session, *user, org));
        }
    }
    append_leaves(tx, &records)
}

/// A row of `AUDIT_COLS, seq, leaf_hash`.
fn audit_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let seq: i64 = r.get(AUDIT_COL_COUNT)?;
    Ok(AuditEntry {
        seq: u64::try_from(seq).map_err(|_| codec::corrupt(AUDIT_COL_COUNT, "negative seq"))?,
        record: audit_row(r)?.1,
        leaf_hash: r.get::<_, Option<Vec<u8>>>(AUDIT_COL_COUNT + 1)?.unwrap_or_default(),
    })
}

/// Appends `records` to the audit log inside `tx` (the writer's transaction), sealing any
/// record from before the log first.
pub(super) fn append_leaves(tx: &rusqlite::Transaction<'_>, records: &[AuditRecord]) -> Result<(), StoreError> {
    let (size, frontier): (i64, Vec<u8>) =
        tx.query_row("SELECT size, frontier FROM audit_head WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut tree = AuditHead::from_stored(size, &frontier)?.tree()?;
    let seq = |tree: &medhub_core::merkle::Tree| i64::try_from(tree.size()).unwrap_or(i64::MAX);
    let unsealed: Vec<(i64, AuditRecord)> = {
        let mut st =
            tx.prepare_cached(&format!("SELECT {AUDIT_COLS} FROM audit_events WHERE seq IS NULL ORDER BY id"))?;
        let rows = st.query_map([], audit_row)?;
        rows.collect::<Result<_, _>>()?
    };
    {
        let mut seal = tx.prepare_cached("UPDATE audit_events SET seq = ?2, leaf_hash = ?3 WHERE id = ?1")?;
        for (id, r) in &unsealed {
            let leaf = medhub_core::merkle::leaf_hash(&r.leaf_data());
            seal.execute(params![id, seq(&tree), &leaf[..]])?;
            tree.push(leaf);
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit_events (at, actor_id, session_id, action, target, outcome, reason, ip, seq, leaf_hash,
                 version, org_id, device, object_type, object_id, patient_ref, node, region)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        for r in records {
            let leaf = medhub_core::merkle::leaf_hash(&r.leaf_data());
            insert.execute(params![
                us(r.at),
                r.actor.map(|a| a.to_bytes()),
                r.session.map(|s| s.to_bytes()),
                r.action,
                r.target,
                r.outcome.as_str(),
                r.reason,
                r.ip,
                seq(&tree),
                &leaf[..],
                r.version,
                r.org.map(|o| o.to_bytes()),
                r.device,
                r.object_type,
                r.object_id,
                r.patient_ref,
                r.node,
                r.region
            ])?;
            tree.push(leaf);
        }
    }
    tx.execute(
        "UPDATE audit_head SET size = ?1, frontier = ?2 WHERE id = 1",
        params![seq(&tree), AuditHead::stored_frontier(&tree)],
    )?;
    Ok(())
}
