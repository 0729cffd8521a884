//! Roles as data: listing the catalogue, adding an organization's own roles, and granting
//! roles to users. A user's permissions are re-read on every request, so a grant takes effect
//! at once; a removal also ends the user's sessions, so nothing keeps a privilege it lost.
//! Each organization's catalogue is the shipped roles and its own: another organization's
//! roles are neither listed nor granted.

use medhub_core::audit::Outcome;
use medhub_core::authz::{ADMINISTRATOR, BUILTIN_ROLES, Permission, Permissions, Role, valid_role_key};
use medhub_core::{DomainError, UserId, validate};

use super::{AuthService, Principal};
use crate::ServiceError;

impl AuthService {
    /// The caller's organization's roles with their permissions (administrators of users or
    /// roles).
    pub async fn roles(&self, principal: &Principal) -> Result<Vec<Role>, ServiceError> {
        if !principal.permissions.contains(Permission::UserAdmin) {
            principal.require(Permission::RoleAdmin)?;
        }
        Ok(self.store.roles(principal.user.org).await?)
    }

    /// Adds a role of the caller's organization (role administrators, step-up). Its key must
    /// be new in the organization and not one of the shipped roles'.
    pub async fn create_role(
        &self,
        principal: &Principal,
        key: &str,
        name: &str,
        permissions: &[String],
    ) -> Result<Role, ServiceError> {
        principal.require(Permission::RoleAdmin)?;
        principal.require_step_up(self.now())?;
        if !valid_role_key(key) {
            return Err(ServiceError::InvalidRequest("role keys are 1-64 characters of [a-z0-9_]".into()));
        }
        if BUILTIN_ROLES.iter().any(|(k, _, _)| *k == key) {
            return Err(ServiceError::InvalidRequest(format!("{key} is a built-in role's key; choose another")));
        }
        let name = validate::display_name(name)?;
        let perms = Permissions::from_names(&permissions.join(" "))
            .map_err(|n| ServiceError::InvalidRequest(format!("unknown permission {n:?}")))?;
        let role = Role { key: key.to_owned(), name, permissions: perms, builtin: false };
        let what = format!("{} = {}", role.key, role.permissions.to_names());
        let r = self.audit_record("admin.role_create", Some(principal), Some(what), Outcome::Success, None, None);
        let r = r.object("role", &role.key);
        self.store.create_role(principal.user.org, &role, self.now(), &[r]).await.map_err(|e| match e {
            medhub_store::StoreError::Conflict(why) => ServiceError::InvalidRequest(why.into()),
            other => other.into(),
        })?;
        tracing::info!(target: "medhub::auth", by = %principal.user.id, role = %role.key, "role created");
        Ok(role)
    }

    /// A user's roles.
    pub async fn user_roles(&self, principal: &Principal, user: UserId) -> Result<Vec<String>, ServiceError> {
        principal.require(Permission::RoleAdmin)?;
        self.user_in_org(principal, user).await?;
        Ok(self.store.user_roles(user).await?)
    }

    /// Replaces a user's roles (role administrators, step-up). Removing any role ends the
    /// user's sessions. Nobody can take the administrator role from themselves.
    pub async fn set_user_roles(
        &self,
        principal: &Principal,
        user: UserId,
        keys: &[String],
    ) -> Result<Vec<String>, ServiceError> {
        principal.require(Permission::RoleAdmin)?;
        principal.require_step_up(self.now())?;
        if !self.user_in_org(principal, user).await?.active {
            return Err(DomainError::UserNotFound.into());
        }
        if keys.is_empty() || keys.len() > 32 {
            return Err(ServiceError::InvalidRequest("give 1 to 32 roles".into()));
        }
        let before = self.store.user_roles(user).await?;
        if user == principal.user.id
            && before.iter().any(|k| k == ADMINISTRATOR)
            && !keys.iter().any(|k| k == ADMINISTRATOR)
        {
            return Err(ServiceError::InvalidRequest("you cannot remove your own administrator role".into()));
        }
        let mut asked: Vec<String> = keys.to_vec();
        asked.sort();
        asked.dedup();
        let what = format!("roles={}", asked.join(","));
        let r = self.audit_record("admin.role_grant", Some(principal), Some(what), Outcome::Success, None, None);
        let r = r.object("user", user);
        self.store.set_user_roles(user, keys, principal.user.id, self.now(), &[r]).await.map_err(|e| match e {
            medhub_store::StoreError::Conflict(why) => ServiceError::InvalidRequest(why.into()),
            other => other.into(),
        })?;
        let after = self.store.user_roles(user).await?;
        if before.iter().any(|k| !after.contains(k)) {
            self.end_user_sessions(user, None, "role_removed").await?;
        }
        tracing::info!(target: "medhub::auth", by = %principal.user.id, user = %user, roles = ?after, "roles changed");
        Ok(after)
    }
}
