//! Presence overrides in SQLite.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::UserId;
use medhub_core::presence::{PresenceOverride, PresenceState};
use rusqlite::params;

use super::{SqliteStore, codec};
use crate::StoreError;
use crate::presence::{MAX_ACTIVE_OVERRIDES, PresenceStore};

#[async_trait]
impl PresenceStore for SqliteStore {
    async fn set_presence_override(&self, user: UserId, o: &PresenceOverride) -> Result<(), StoreError> {
        let o = *o;
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO presence_overrides (user_id, state, set_at, until) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id) DO UPDATE SET state = ?2, set_at = ?3, until = ?4",
            )?
            .execute(params![
                user.to_bytes(),
                o.state.as_str(),
                o.set_at.as_microsecond(),
                o.until.as_microsecond()
            ])?;
            Ok(())
        })
        .await
    }

    async fn clear_presence_override(&self, user: UserId, now: Timestamp) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE presence_overrides SET until = ?2 WHERE user_id = ?1 AND until > ?2")?
                .execute(params![user.to_bytes(), now.as_microsecond()])?;
            Ok(())
        })
        .await
    }

    async fn active_presence_overrides(&self, now: Timestamp) -> Result<Vec<(UserId, PresenceOverride)>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT user_id, state, set_at, until FROM presence_overrides WHERE until > ?1 LIMIT ?2",
            )?;
            let rows = st.query_map(params![now.as_microsecond(), MAX_ACTIVE_OVERRIDES], |r| {
                Ok((
                    codec::user_id(r, 0)?,
                    PresenceOverride {
                        state: codec::parse(r, 1, PresenceState::parse)?,
                        set_at: codec::ts(r, 2)?,
                        until: codec::ts(r, 3)?,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
