//! [`IdentityStore`] on PostgreSQL.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::authz::{ADMINISTRATOR, CLINICIAN, Permissions, Role};
use medhub_core::model::{Session, SessionState, SystemRole};
use medhub_core::session::Throttle;
use medhub_core::{OrgId, PasskeyId, SessionId, UserId};
use tokio_postgres::Row;
use uuid::Uuid;

use super::codec::us;
use super::{PgStore, codec};
use crate::identity::stored_tree_head;
use crate::sql::SESSION_COLS;
use crate::{
    AuditEntry, AuditHead, AuthFlow, Ended, IdentityStore, PasskeyDeletion, PasskeyRecord, StoreError, StoredTreeHead,
    TotpRecord, UserRecord,
};

const PASSKEY_COLS: &str = "id, user_id, credential_id, passkey, name, created_at, last_used_at";

fn passkey(r: &Row) -> Result<PasskeyRecord, StoreError> {
    Ok(PasskeyRecord {
        id: PasskeyId::from_uuid(codec::uuid(r, 0)?),
        user: codec::user_id(r, 1)?,
        credential_id: r.try_get(2)?,
        passkey: r.try_get(3)?,
        name: r.try_get(4)?,
        created_at: codec::ts(r, 5)?,
        last_used_at: codec::opt_ts(r, 6)?,
    })
}

pub(super) fn ended(rows: &[Row]) -> Result<Ended, StoreError> {
    rows.iter().map(|r| Ok((SessionId::from_uuid(codec::uuid(r, 0)?), codec::user_id(r, 1)?))).collect()
}

fn sessions(rows: &[Row]) -> Result<Vec<Session>, StoreError> {
    rows.iter().map(|r| codec::session(r, 0)).collect()
}

fn replace_codes_sql() -> &'static str {
    "INSERT INTO recovery_codes (user_id, idx, code_hash, used_at)
     SELECT $1, (ord - 1)::int, h, NULL FROM UNNEST($2::text[]) WITH ORDINALITY AS t(h, ord)"
}

#[async_trait]
impl IdentityStore for PgStore {
    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let c = self.pool.get().await?;
        let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1 AND revoked_at IS NULL");
        let rows = c.query(&sql, &[&id.as_uuid()]).await?;
        rows.first().map(|r| codec::session(r, 0)).transpose()
    }

    async fn sessions_for_user(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        let c = self.pool.get().await?;
        let sql =
            format!("SELECT {SESSION_COLS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC");
        sessions(&c.query(&sql, &[&user.as_uuid()]).await?)
    }

    async fn live_sessions(
        &self,
        org: OrgId,
        before: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<Session>, StoreError> {
        let c = self.pool.get().await?;
        let sql = format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE revoked_at IS NULL AND ($1::uuid IS NULL OR id < $1)
               AND user_id IN (SELECT id FROM users WHERE org_id = $3)
             ORDER BY id DESC LIMIT $2"
        );
        sessions(&c.query(&sql, &[&before.map(|b| b.as_uuid()), &i64::from(limit), &org.as_uuid()]).await?)
    }

    async fn end_session(
        &self,
        id: SessionId,
        now: Timestamp,
        reason: &str,
        audit: Option<&AuditRecord>,
        also: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                "UPDATE sessions SET revoked_at = $2, end_reason = $3 WHERE id = $1 AND revoked_at IS NULL
                 RETURNING id, user_id",
                &[&id.as_uuid(), &us(now), &reason],
            )
            .await?;
        let done = ended(&rows)?;
        append_session_ends(&*tx, audit, &done).await?;
        if !done.is_empty() {
            append_leaves(&*tx, also).await?;
        }
        tx.commit().await?;
        Ok(!done.is_empty())
    }

    async fn end_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<Ended, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                "UPDATE sessions SET revoked_at = $2, end_reason = $3
                 WHERE user_id = $1 AND revoked_at IS NULL AND ($4::uuid IS NULL OR id <> $4)
                 RETURNING id, user_id",
                &[&user.as_uuid(), &us(now), &reason, &keep.map(|k| k.as_uuid())],
            )
            .await?;
        let done = ended(&rows)?;
        append_session_ends(&*tx, audit, &done).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn set_session_state(
        &self,
        id: SessionId,
        state: SessionState,
        mfa_at: Option<Timestamp>,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "UPDATE sessions SET state = $2, mfa_at = COALESCE($3, mfa_at) WHERE id = $1",
            &[&id.as_uuid(), &state.as_str(), &mfa_at.map(us)],
        )
        .await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn activate_session(
        &self,
        id: SessionId,
        token_hash: &[u8; 32],
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE sessions SET state = $2, mfa_at = $3, token_hash = $4 WHERE id = $1 AND revoked_at IS NULL",
                &[&id.as_uuid(), &SessionState::Active.as_str(), &us(now), &token_hash.as_slice()],
            )
            .await?;
        if n != 1 {
            return Ok(false);
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn record_activity(&self, activity: &[(SessionId, Timestamp)]) -> Result<(), StoreError> {
        if activity.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = activity.iter().map(|(id, _)| id.as_uuid()).collect();
        let ats: Vec<i64> = activity.iter().map(|(_, at)| us(*at)).collect();
        let c = self.pool.get().await?;
        c.execute(
            "UPDATE sessions s SET last_activity_at = GREATEST(s.last_activity_at, a.at)
             FROM UNNEST($1::uuid[], $2::bigint[]) AS a(id, at)
             WHERE s.id = a.id AND s.revoked_at IS NULL",
            &[&ids, &ats],
        )
        .await?;
        Ok(())
    }

    async fn end_expired_sessions(&self, now: Timestamp, audit: Option<&AuditRecord>) -> Result<Ended, StoreError> {
        let mut c = self.pool.get().await?;
        let c = c.transaction().await?;
        // Each session is measured against its own organization's idle timeout (seconds;
        // times are microseconds).
        let rows = c
            .query(
                "UPDATE sessions s
                 SET revoked_at = $1,
                     end_reason = CASE WHEN s.expires_at <= $1 THEN 'absolute_lifetime' ELSE 'idle_timeout' END
                 FROM users u JOIN orgs o ON o.id = u.org_id
                 WHERE u.id = s.user_id AND s.revoked_at IS NULL
                   AND (s.expires_at <= $1 OR s.last_activity_at <= $1 - o.idle_timeout_s * 1000000)
                 RETURNING s.id, s.user_id",
                &[&us(now)],
            )
            .await?;
        let done = ended(&rows)?;
        append_session_ends(&*c, audit, &done).await?;
        c.commit().await?;
        Ok(done)
    }

    async fn set_user_role(&self, user: UserId, role: SystemRole, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("UPDATE users SET role = $2 WHERE id = $1", &[&user.as_uuid(), &role.as_str()]).await?;
        match role {
            SystemRole::Admin => {
                tx.execute(
                    "INSERT INTO user_roles (user_id, role_id, granted_by, granted_at)
                     VALUES ($1, (SELECT id FROM roles WHERE org_id IS NULL AND key = $2), NULL, 0)
                     ON CONFLICT DO NOTHING",
                    &[&user.as_uuid(), &ADMINISTRATOR],
                )
                .await?;
            }
            SystemRole::User => {
                tx.execute(
                    "DELETE FROM user_roles
                     WHERE user_id = $1 AND role_id = (SELECT id FROM roles WHERE org_id IS NULL AND key = $2)",
                    &[&user.as_uuid(), &ADMINISTRATOR],
                )
                .await?;
                tx.execute(
                    "INSERT INTO user_roles (user_id, role_id, granted_by, granted_at)
                     SELECT $1, id, NULL, 0 FROM roles WHERE org_id IS NULL AND key = $2
                        AND NOT EXISTS (SELECT 1 FROM user_roles WHERE user_id = $1)",
                    &[&user.as_uuid(), &CLINICIAN],
                )
                .await?;
            }
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_idle_timeout(
        &self,
        org: OrgId,
        idle_timeout: SignedDuration,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("UPDATE orgs SET idle_timeout_s = $2 WHERE id = $1", &[&org.as_uuid(), &idle_timeout.as_secs()])
            .await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query("SELECT secret_enc, last_step, confirmed_at FROM totp WHERE user_id = $1", &[&user.as_uuid()])
            .await?;
        rows.first()
            .map(|r| {
                Ok(TotpRecord {
                    secret_enc: r.try_get(0)?,
                    last_step: r.try_get::<_, Option<i64>>(1)?.map(|s| s.max(0) as u64),
                    confirmed_at: codec::opt_ts(r, 2)?,
                })
            })
            .transpose()
    }

    async fn put_pending_totp(&self, user: UserId, secret_enc: &[u8], now: Timestamp) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let confirmed: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
                &[&user.as_uuid()],
            )
            .await?
            .try_get(0)?;
        if confirmed {
            return Err(StoreError::Conflict("a confirmed authenticator exists"));
        }
        tx.execute(
            "INSERT INTO totp (user_id, secret_enc, last_step, confirmed_at, created_at)
             VALUES ($1, $2, NULL, NULL, $3)
             ON CONFLICT (user_id) DO UPDATE SET secret_enc = excluded.secret_enc, created_at = excluded.created_at
             WHERE totp.confirmed_at IS NULL",
            &[&user.as_uuid(), &secret_enc, &us(now)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn confirm_totp(
        &self,
        user: UserId,
        step: u64,
        recovery_hashes: &[String],
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let changed = tx
            .execute(
                "UPDATE totp SET confirmed_at = $2, last_step = $3
                 WHERE user_id = $1 AND confirmed_at IS NULL AND (last_step IS NULL OR last_step < $3)",
                &[&user.as_uuid(), &us(now), &step],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", &[&user.as_uuid()]).await?;
        tx.execute(replace_codes_sql(), &[&user.as_uuid(), &recovery_hashes]).await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn advance_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let n = c
            .execute(
                "UPDATE totp SET last_step = $2
                 WHERE user_id = $1 AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < $2)",
                &[&user.as_uuid(), &step],
            )
            .await?;
        Ok(n > 0)
    }

    async fn remove_second_factors(&self, user: UserId, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM totp WHERE user_id = $1", &[&user.as_uuid()]).await?;
        tx.execute("DELETE FROM passkeys WHERE user_id = $1", &[&user.as_uuid()]).await?;
        tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", &[&user.as_uuid()]).await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_passkey(&self, p: &PasskeyRecord, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "INSERT INTO passkeys (id, user_id, credential_id, passkey, name, created_at, last_used_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (credential_id) DO NOTHING",
                &[
                    &p.id.as_uuid(),
                    &p.user.as_uuid(),
                    &p.credential_id,
                    &p.passkey,
                    &p.name,
                    &us(p.created_at),
                    &p.last_used_at.map(us),
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict("this credential is registered already"));
        }
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        let c = self.pool.get().await?;
        let sql = format!("SELECT {PASSKEY_COLS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id");
        c.query(&sql, &[&user.as_uuid()]).await?.iter().map(passkey).collect()
    }

    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<PasskeyRecord>, StoreError> {
        let c = self.pool.get().await?;
        let sql = format!("SELECT {PASSKEY_COLS} FROM passkeys WHERE credential_id = $1");
        c.query(&sql, &[&credential_id]).await?.first().map(passkey).transpose()
    }

    async fn update_passkey(
        &self,
        id: PasskeyId,
        old: &str,
        new: &str,
        used_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "UPDATE passkeys SET passkey = $3, last_used_at = $4 WHERE id = $1 AND passkey = $2",
                &[&id.as_uuid(), &old, &new, &us(used_at)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_passkey(
        &self,
        user: UserId,
        id: PasskeyId,
        audit: &[AuditRecord],
    ) -> Result<PasskeyDeletion, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // The user's row lock serialises deletions of one user's factors: two concurrent
        // deletions of the last two passkeys cannot both pass the check.
        tx.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user.as_uuid()]).await?;
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM passkeys WHERE id = $1 AND user_id = $2)",
                &[&id.as_uuid(), &user.as_uuid()],
            )
            .await?
            .try_get(0)?;
        if !exists {
            return Ok(PasskeyDeletion::NotFound);
        }
        let others: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1 AND id <> $2)
                     OR EXISTS (SELECT 1 FROM totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
                &[&user.as_uuid(), &id.as_uuid()],
            )
            .await?
            .try_get(0)?;
        if !others {
            return Ok(PasskeyDeletion::LastFactor);
        }
        tx.execute("DELETE FROM passkeys WHERE id = $1 AND user_id = $2", &[&id.as_uuid(), &user.as_uuid()]).await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(PasskeyDeletion::Deleted)
    }

    async fn recovery_codes(&self, user: UserId) -> Result<Vec<(u32, String)>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT idx, code_hash FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL ORDER BY idx",
                &[&user.as_uuid()],
            )
            .await?;
        rows.iter().map(|r| Ok((r.try_get::<_, i32>(0)?.max(0) as u32, r.try_get::<_, String>(1)?))).collect()
    }

    async fn use_recovery_code(&self, user: UserId, idx: u32, now: Timestamp) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let idx = i32::try_from(idx).unwrap_or(i32::MAX);
        let n = c
            .execute(
                "UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND idx = $2 AND used_at IS NULL",
                &[&user.as_uuid(), &idx, &us(now)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", &[&user.as_uuid()]).await?;
        tx.execute(replace_codes_sql(), &[&user.as_uuid(), &hashes]).await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_ws_ticket(
        &self,
        hash: &[u8; 32],
        session: SessionId,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO ws_tickets (hash, session_id, expires_at, used_at) VALUES ($1, $2, $3, NULL)",
            &[&&hash[..], &session.as_uuid(), &us(expires_at)],
        )
        .await?;
        Ok(())
    }

    async fn consume_ws_ticket(&self, hash: &[u8; 32], now: Timestamp) -> Result<Option<SessionId>, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                "UPDATE ws_tickets SET used_at = $2 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2
                 RETURNING session_id",
                &[&&hash[..], &us(now)],
            )
            .await?;
        let session = rows.first().map(|r| codec::uuid(r, 0).map(SessionId::from_uuid)).transpose()?;
        tx.execute("DELETE FROM ws_tickets WHERE expires_at <= $1", &[&us(now)]).await?;
        tx.commit().await?;
        Ok(session)
    }

    async fn throttles(&self, keys: &[String]) -> Result<Vec<(String, Throttle)>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query("SELECT key, failures, window_start, locked_until FROM throttle WHERE key = ANY($1)", &[&keys])
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    Throttle {
                        failures: u32::try_from(r.try_get::<_, i64>(1)?).unwrap_or(u32::MAX),
                        window_start: codec::ts(r, 2)?,
                        locked_until: codec::opt_ts(r, 3)?,
                    },
                ))
            })
            .collect()
    }

    async fn put_throttle(&self, key: &str, t: &Throttle) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO throttle (key, failures, window_start, locked_until) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,
                 window_start = excluded.window_start, locked_until = excluded.locked_until",
            &[&key, &i64::from(t.failures), &us(t.window_start), &t.locked_until.map(us)],
        )
        .await?;
        Ok(())
    }

    async fn clear_throttle(&self, key: &str) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute("DELETE FROM throttle WHERE key = $1", &[&key]).await?;
        Ok(())
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
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO invitations (token_hash, user_id, created_by, created_at, expires_at, used_at)
             VALUES ($1, $2, $3, $4, $5, NULL)",
            &[&&hash[..], &user.as_uuid(), &by.as_uuid(), &us(now), &us(expires_at)],
        )
        .await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn redeem_invitation(
        &self,
        hash: &[u8; 32],
        password_hash: &str,
        now: Timestamp,
        audit: Option<&AuditRecord>,
    ) -> Result<Option<UserId>, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                "SELECT i.user_id, u.org_id FROM invitations i JOIN users u ON u.id = i.user_id
                 WHERE i.token_hash = $1 AND i.used_at IS NULL AND i.expires_at > $2 AND u.active
                 FOR UPDATE OF i",
                &[&&hash[..], &us(now)],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let (user, org) = (codec::user_id(row, 0)?, OrgId::from_uuid(codec::uuid(row, 1)?));
        if let Some(t) = audit {
            append_leaves(&*tx, &[crate::identity::user_record_of(t, user, org)]).await?;
        }
        tx.execute(
            "UPDATE invitations SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
            &[&user.as_uuid(), &us(now)],
        )
        .await?;
        tx.execute(
            "UPDATE users SET password_hash = $2, must_change_password = FALSE WHERE id = $1",
            &[&user.as_uuid(), &password_hash],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    async fn has_open_invitation(&self, user: UserId, now: Timestamp) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM invitations WHERE user_id = $1 AND used_at IS NULL AND expires_at > $2)",
                &[&user.as_uuid(), &us(now)],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn upsert_builtin_roles(&self, roles: &[Role], now: Timestamp) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        for r in roles {
            tx.execute(
                "INSERT INTO roles (org_id, key, name, permissions, created_at) VALUES (NULL, $1, $2, $3, $4)
                 ON CONFLICT (key) WHERE org_id IS NULL
                 DO UPDATE SET name = excluded.name, permissions = excluded.permissions",
                &[&r.key, &r.name, &r.permissions.to_names(), &us(now)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn roles(&self, org: OrgId) -> Result<Vec<Role>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT key, name, permissions, org_id IS NULL FROM roles r
                 WHERE org_id = $1
                    OR (org_id IS NULL AND NOT EXISTS (SELECT 1 FROM roles o WHERE o.org_id = $1 AND o.key = r.key))
                 ORDER BY key",
                &[&org.as_uuid()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let names: String = r.try_get(2)?;
                Ok(Role {
                    key: r.try_get(0)?,
                    name: r.try_get(1)?,
                    permissions: Permissions::from_names(&names)
                        .map_err(|n| StoreError::Corrupt(format!("unknown permission {n:?}")))?,
                    builtin: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn create_role(
        &self,
        org: OrgId,
        role: &Role,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let c = c.transaction().await?;
        // Shipped roles change only at start-up, before any request: no race with this check.
        let shipped: bool = c
            .query_one("SELECT EXISTS (SELECT 1 FROM roles WHERE org_id IS NULL AND key = $1)", &[&role.key])
            .await?
            .try_get(0)?;
        if shipped {
            return Err(StoreError::Conflict("a built-in role has this key"));
        }
        let n = c
            .execute(
                "INSERT INTO roles (org_id, key, name, permissions, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                &[&org.as_uuid(), &role.key, &role.name, &role.permissions.to_names(), &us(now)],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict("a role with this key exists"));
        }
        append_leaves(&*c, audit).await?;
        c.commit().await?;
        Ok(())
    }

    async fn user_roles(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT r.key FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1 ORDER BY r.key",
                &[&user.as_uuid()],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn set_user_roles(
        &self,
        user: UserId,
        keys: &[String],
        by: UserId,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let org: Uuid = tx
            .query_opt("SELECT org_id FROM users WHERE id = $1", &[&user.as_uuid()])
            .await?
            .ok_or(StoreError::Conflict("unknown user"))?
            .try_get(0)?;
        // Each key as a role of the user's organization: its own role first, then the shipped
        // one; another organization's role is not found (NULL).
        let rows = tx
            .query(
                "SELECT (SELECT r.id FROM roles r WHERE r.key = k AND (r.org_id = $1 OR r.org_id IS NULL)
                         ORDER BY r.org_id IS NULL LIMIT 1)
                   FROM UNNEST($2::text[]) AS k",
                &[&org, &keys],
            )
            .await?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<_, Option<i64>>(0)?.ok_or(StoreError::Conflict("unknown role")))
            .collect::<Result<Vec<i64>, StoreError>>()?;
        tx.execute("DELETE FROM user_roles WHERE user_id = $1", &[&user.as_uuid()]).await?;
        tx.execute(
            "INSERT INTO user_roles (user_id, role_id, granted_by, granted_at)
             SELECT $1, r, $3, $4 FROM UNNEST($2::bigint[]) AS r ON CONFLICT DO NOTHING",
            &[&user.as_uuid(), &ids, &by.as_uuid(), &us(now)],
        )
        .await?;
        let role = if keys.iter().any(|k| k == ADMINISTRATOR) { SystemRole::Admin } else { SystemRole::User };
        tx.execute("UPDATE users SET role = $2 WHERE id = $1", &[&user.as_uuid(), &role.as_str()]).await?;
        append_leaves(&*tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user_permission_names(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT r.permissions FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1",
                &[&user.as_uuid()],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        append_leaves(&*tx, records).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        let c = self.pool.get().await?;
        let r = c.query_one("SELECT size, frontier FROM audit_head WHERE id = 1", &[]).await?;
        AuditHead::from_stored(r.try_get(0)?, &r.try_get::<_, Vec<u8>>(1)?)
    }

    async fn audit_log(&self, from: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!("SELECT {AUDIT_COLS}, seq, leaf_hash FROM audit_events WHERE seq >= $1 ORDER BY seq LIMIT $2"),
                &[&from, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(audit_entry).collect()
    }

    async fn audit_leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let (from, to) = (i64::try_from(from).unwrap_or(i64::MAX), i64::try_from(to).unwrap_or(i64::MAX));
        let c = self.pool.get().await?;
        let rows = c
            .query("SELECT leaf_hash FROM audit_events WHERE seq >= $1 AND seq < $2 ORDER BY seq", &[&from, &to])
            .await?;
        rows.iter().map(|r| Ok(r.try_get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default())).collect()
    }

    async fn put_tree_head(&self, h: &StoredTreeHead) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let size = i64::try_from(h.head.size).unwrap_or(i64::MAX);
        let n = c
            .execute(
                "INSERT INTO audit_tree_heads (size, root, at, key_id, signature) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (size) DO NOTHING",
                &[&size, &&h.head.root[..], &us(h.head.at), &h.key_id, &h.signature],
            )
            .await?;
        Ok(n > 0)
    }

    async fn latest_tree_head(&self) -> Result<Option<StoredTreeHead>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query("SELECT size, root, at, key_id, signature FROM audit_tree_heads ORDER BY size DESC LIMIT 1", &[])
            .await?;
        rows.first()
            .map(|r| {
                let root: Vec<u8> = r.try_get(1)?;
                stored_tree_head(r.try_get(0)?, &root, codec::ts(r, 2)?, r.try_get(3)?, r.try_get(4)?)
            })
            .transpose()
    }

    async fn search_audit(&self, q: &crate::audit::AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let (sql, params) = crate::audit::search_sql(q, '$');
        let values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = params
            .into_iter()
            .map(|p| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                match p {
                    crate::audit::Param::Uuid(u) => Box::new(u),
                    crate::audit::Param::Text(t) => Box::new(t),
                    crate::audit::Param::Int(i) => Box::new(i),
                }
            })
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            values.iter().map(|v| &**v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let c = self.pool.get().await?;
        let rows = c.query(&sql, &refs).await?;
        rows.iter().map(audit_entry).collect()
    }

    async fn audit_events(&self, after: i64, limit: u32) -> Result<Vec<(i64, AuditRecord)>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!("SELECT {AUDIT_COLS} FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2"),
                &[&after, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn key_check(&self, candidate: Option<&[u8]>, now: Timestamp) -> Result<Option<Vec<u8>>, StoreError> {
        let c = self.pool.get().await?;
        if let Some(v) = candidate {
            c.execute(
                "INSERT INTO server_key_check (id, check_value, created_at) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&v, &us(now)],
            )
            .await?;
        }
        let rows = c.query("SELECT check_value FROM server_key_check WHERE id = 1", &[]).await?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?)
    }

    // --- SSO --------------------------------------------------------------------------------

    async fn create_auth_flow(&self, flow: &AuthFlow) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM auth_flows WHERE expires_at <= $1", &[&us(flow.created_at)]).await?;
        tx.execute(
            "INSERT INTO auth_flows (state_hash, kind, nonce, verifier_enc, return_to, created_at, expires_at, used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
            &[
                &&flow.state_hash[..],
                &flow.kind,
                &flow.nonce,
                &flow.verifier_enc,
                &flow.return_to,
                &us(flow.created_at),
                &us(flow.expires_at),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn consume_auth_flow(
        &self,
        state_hash: &[u8; 32],
        kind: &str,
        now: Timestamp,
    ) -> Result<Option<AuthFlow>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "UPDATE auth_flows SET used_at = $3
                 WHERE state_hash = $1 AND kind = $2 AND used_at IS NULL AND expires_at > $3
                 RETURNING kind, nonce, verifier_enc, return_to, created_at, expires_at",
                &[&&state_hash[..], &kind, &us(now)],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(AuthFlow {
                    state_hash: *state_hash,
                    kind: r.try_get(0)?,
                    nonce: r.try_get(1)?,
                    verifier_enc: r.try_get(2)?,
                    return_to: r.try_get(3)?,
                    created_at: codec::ts(r, 4)?,
                    expires_at: codec::ts(r, 5)?,
                })
            })
            .transpose()
    }

    async fn sso_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserId>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query("SELECT user_id FROM sso_identities WHERE issuer = $1 AND subject = $2", &[&issuer, &subject])
            .await?;
        rows.first().map(|r| codec::user_id(r, 0)).transpose()
    }

    async fn create_sso_user(
        &self,
        user: &UserRecord,
        issuer: &str,
        subject: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        super::batch::insert_user(&*tx, user).await?;
        let linked = tx
            .execute(
                "INSERT INTO sso_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (issuer, subject) DO NOTHING",
                &[&issuer, &subject, &user.user.id.as_uuid(), &us(now)],
            )
            .await?;
        if linked == 0 {
            return Err(StoreError::Conflict("the identity provider subject is already linked"));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_saml_assertion(
        &self,
        assertion_hash: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM saml_replay WHERE expires_at <= $1", &[&us(now)]).await?;
        let inserted = tx
            .execute(
                "INSERT INTO saml_replay (assertion_hash, expires_at) VALUES ($1, $2)
                 ON CONFLICT (assertion_hash) DO NOTHING",
                &[&&assertion_hash[..], &us(expires_at)],
            )
            .await?;
        tx.commit().await?;
        Ok(inserted == 1)
    }
}

use crate::sql::{AUDIT_COL_COUNT, AUDIT_COLS};

fn audit_row(r: &Row) -> Result<(i64, AuditRecord), StoreError> {
    let outcome: String = r.try_get(6)?;
    Ok((
        r.try_get::<_, i64>(0)?,
        AuditRecord {
            at: codec::ts(r, 1)?,
            actor: codec::opt_uuid(r, 2)?.map(UserId::from_uuid),
            session: codec::opt_uuid(r, 3)?.map(SessionId::from_uuid),
            action: r.try_get(4)?,
            target: r.try_get(5)?,
            outcome: Outcome::parse(&outcome)
                .ok_or_else(|| StoreError::Corrupt(format!("audit outcome {outcome:?}")))?,
            reason: r.try_get(7)?,
            ip: r.try_get(8)?,
            version: u8::try_from(r.try_get::<_, i16>(9)?)
                .map_err(|_| StoreError::Corrupt("audit record version".into()))?,
            org: codec::opt_uuid(r, 10)?.map(OrgId::from_uuid),
            device: r.try_get(11)?,
            object_type: r.try_get(12)?,
            object_id: r.try_get(13)?,
            patient_ref: r.try_get(14)?,
            node: r.try_get(15)?,
            region: r.try_get(16)?,
        },
    ))
}

/// Appends the records of the sessions `ended` in `tx` (none without a template).
pub(super) async fn append_session_ends(
    tx: &impl tokio_postgres::GenericClient,
    template: Option<&AuditRecord>,
    ended: &Ended,
) -> Result<(), StoreError> {
    let Some(template) = template else { return Ok(()) };
    if ended.is_empty() {
        return Ok(());
    }
    let users: Vec<Uuid> = ended.iter().map(|(_, u)| u.as_uuid()).collect();
    let rows = tx.query("SELECT id, org_id FROM users WHERE id = ANY($1)", &[&users]).await?;
    let orgs = rows
        .iter()
        .map(|r| Ok((r.try_get::<_, Uuid>(0)?, OrgId::from_uuid(r.try_get::<_, Uuid>(1)?))))
        .collect::<Result<std::collections::HashMap<Uuid, OrgId>, StoreError>>()?;
    let records: Vec<AuditRecord> = ended
        .iter()
        .map(|(s, u)| crate::identity::session_end_record(template, *s, *u, orgs.get(&u.as_uuid()).copied()))
        .collect();
    append_leaves(tx, &records).await
}

/// A row of `AUDIT_COLS, seq, leaf_hash`.
fn audit_entry(r: &Row) -> Result<AuditEntry, StoreError> {
    let seq: i64 = r.try_get(AUDIT_COL_COUNT)?;
    Ok(AuditEntry {
        seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("audit seq {seq}")))?,
        record: audit_row(r)?.1,
        leaf_hash: r.try_get::<_, Option<Vec<u8>>>(AUDIT_COL_COUNT + 1)?.unwrap_or_default(),
    })
}

/// Appends `records` to the audit log inside `tx`, sealing any record from before the log
/// first. The head's row lock queues concurrent appenders, which keeps `seq` dense.
pub(super) async fn append_leaves(
    tx: &impl tokio_postgres::GenericClient,
    records: &[AuditRecord],
) -> Result<(), StoreError> {
    let head = tx.query_one("SELECT size, frontier FROM audit_head WHERE id = 1 FOR UPDATE", &[]).await?;
    let mut tree = AuditHead::from_stored(head.try_get(0)?, &head.try_get::<_, Vec<u8>>(1)?)?.tree()?;
    let seq = |tree: &medhub_core::merkle::Tree| i64::try_from(tree.size()).unwrap_or(i64::MAX);
    let unsealed =
        tx.query(&format!("SELECT {AUDIT_COLS} FROM audit_events WHERE seq IS NULL ORDER BY id"), &[]).await?;
    for row in &unsealed {
        let (id, r) = audit_row(row)?;
        let leaf = medhub_core::merkle::leaf_hash(&r.leaf_data());
        tx.execute("UPDATE audit_events SET seq = $2, leaf_hash = $3 WHERE id = $1", &[&id, &seq(&tree), &&leaf[..]])
            .await?;
        tree.push(leaf);
    }
    if !records.is_empty() {
        let mut at = Vec::with_capacity(records.len());
        let mut seqs = Vec::with_capacity(records.len());
        let mut leaves: Vec<Vec<u8>> = Vec::with_capacity(records.len());
        for r in records {
            let leaf = medhub_core::merkle::leaf_hash(&r.leaf_data());
            at.push(us(r.at));
            seqs.push(seq(&tree));
            leaves.push(leaf.to_vec());
            tree.push(leaf);
        }
        let actor: Vec<Option<Uuid>> = records.iter().map(|r| r.actor.map(|a| a.as_uuid())).collect();
        let session: Vec<Option<Uuid>> = records.iter().map(|r| r.session.map(|s| s.as_uuid())).collect();
        let action: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
        let target: Vec<Option<&str>> = records.iter().map(|r| r.target.as_deref()).collect();
        let outcome: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
        let reason: Vec<Option<&str>> = records.iter().map(|r| r.reason.as_deref()).collect();
        let ip: Vec<Option<&str>> = records.iter().map(|r| r.ip.as_deref()).collect();
        let version: Vec<i16> = records.iter().map(|r| i16::from(r.version)).collect();
        let org: Vec<Option<Uuid>> = records.iter().map(|r| r.org.map(|o| o.as_uuid())).collect();
        let text = |f: fn(&AuditRecord) -> &Option<String>| -> Vec<Option<&str>> {
            records.iter().map(|r| f(r).as_deref()).collect()
        };
        let (device, object_type, object_id) = (text(|r| &r.device), text(|r| &r.object_type), text(|r| &r.object_id));
        let (patient, node, region) = (text(|r| &r.patient_ref), text(|r| &r.node), text(|r| &r.region));
        tx.execute(
            "INSERT INTO audit_events (at, actor_id, session_id, action, target, outcome, reason, ip, seq, leaf_hash,
                 version, org_id, device, object_type, object_id, patient_ref, node, region)
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                                  $8::text[], $9::bigint[], $10::bytea[], $11::smallint[], $12::uuid[], $13::text[],
                                  $14::text[], $15::text[], $16::text[], $17::text[], $18::text[])",
            &[
                &at,
                &actor,
                &session,
                &action,
                &target,
                &outcome,
                &reason,
                &ip,
                &seqs,
                &leaves,
                &version,
                &org,
                &device,
                &object_type,
                &object_id,
                &patient,
                &node,
                &region,
            ],
        )
        .await?;
    }
    tx.execute(
        "UPDATE audit_head SET size = $1, frontier = $2 WHERE id = 1",
        &[&seq(&tree), &AuditHead::stored_frontier(&tree)],
    )
    .await?;
    Ok(())
}
