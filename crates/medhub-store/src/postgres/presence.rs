//! Presence overrides in PostgreSQL.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::UserId;
use medhub_core::presence::{PresenceOverride, PresenceState};

use super::{PgStore, codec};
use crate::StoreError;
use crate::presence::{MAX_ACTIVE_OVERRIDES, PresenceStore};

#[async_trait]
impl PresenceStore for PgStore {
    async fn set_presence_override(&self, user: UserId, o: &PresenceOverride) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO presence_overrides (user_id, state, set_at, until) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET state = $2, set_at = $3, until = $4",
            &[&user.as_uuid(), &o.state.as_str(), &o.set_at.as_microsecond(), &o.until.as_microsecond()],
        )
        .await?;
        Ok(())
    }

    async fn clear_presence_override(&self, user: UserId, now: Timestamp) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "UPDATE presence_overrides SET until = $2 WHERE user_id = $1 AND until > $2",
            &[&user.as_uuid(), &now.as_microsecond()],
        )
        .await?;
        Ok(())
    }

    async fn active_presence_overrides(&self, now: Timestamp) -> Result<Vec<(UserId, PresenceOverride)>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT user_id, state, set_at, until FROM presence_overrides WHERE until > $1 LIMIT $2",
                &[&now.as_microsecond(), &i64::from(MAX_ACTIVE_OVERRIDES)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(1)?;
                let state = PresenceState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("presence state {state:?}")))?;
                Ok((
                    codec::user_id(r, 0)?,
                    PresenceOverride { state, set_at: codec::ts(r, 2)?, until: codec::ts(r, 3)? },
                ))
            })
            .collect()
    }
}
