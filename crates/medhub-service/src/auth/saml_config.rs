//! The settings of SAML sign-in. Compiled with or without the `saml` feature, so that the
//! binary's configuration is the same in both builds (without it, a `[saml]` section makes
//! start-up fail).

use base64::Engine;

/// AuthnContextClassRef values that show a second factor, when none are configured: the
/// REFEDS MFA profile, Microsoft Entra ID's multi-factor class, and SAML 2.0's two-factor
/// mobile classes.
pub const DEFAULT_ACCEPTED_AUTHN_CONTEXTS: &[&str] = &[
    "https://refeds.org/profile/mfa",
    "http://schemas.microsoft.com/claims/multipleauthn",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered",
];

/// The identity provider, this service provider, and what medhub takes from assertions.
#[derive(Clone, Debug)]
pub struct SamlConfig {
    /// The IdP's entity id: the Issuer of its assertions.
    pub idp_entity_id: String,
    /// The IdP's single sign-on URL for the HTTP-Redirect binding.
    pub idp_sso_url: String,
    /// The IdP's signing certificate(s), PEM. Several during a key rollover.
    pub idp_certificate_pem: String,
    /// medhub's entity id: the Audience its assertions must name.
    pub sp_entity_id: String,
    /// medhub's assertion consumer service URL (`.../api/v1/auth/saml/acs`): the Recipient.
    pub acs_url: String,
    /// The attribute (Name or FriendlyName) the username comes from.
    pub username_attribute: String,
    /// The attribute the display name comes from.
    pub display_name_attribute: String,
    /// The attribute that lists the user's groups.
    pub groups_attribute: String,
    /// Members of any of these groups are administrators; everyone else is a user.
    pub admin_groups: Vec<String>,
    /// Roles from the provider's groups, as (group, role key) pairs. When any are set, the
    /// provider is the source of the user's roles: they are re-applied at every sign-in, a
    /// role lost ends the user's other sessions, and a user in none of these groups gets the
    /// default role of their system role (clinician or administrator).
    pub role_groups: Vec<(String, String)>,
    /// The organization (by name, letter case aside) whose users sign in with this IdP;
    /// `None` for the first organization. See `OidcConfig::organization`.
    pub organization: Option<String>,
    /// The IdP always requires a second factor: a sign-in whose AuthnContextClassRef is
    /// one of `accepted_authn_contexts` counts as medhub's second factor.
    pub idp_enforces_mfa: bool,
    pub accepted_authn_contexts: Vec<String>,
}

impl SamlConfig {
    /// An IdP with medhub's defaults for everything else.
    pub fn new(
        idp_entity_id: &str,
        idp_sso_url: &str,
        idp_certificate_pem: &str,
        sp_entity_id: &str,
        acs_url: &str,
    ) -> Self {
        Self {
            idp_entity_id: idp_entity_id.to_owned(),
            idp_sso_url: idp_sso_url.to_owned(),
            idp_certificate_pem: idp_certificate_pem.to_owned(),
            sp_entity_id: sp_entity_id.to_owned(),
            acs_url: acs_url.to_owned(),
            username_attribute: "uid".into(),
            display_name_attribute: "displayName".into(),
            groups_attribute: "groups".into(),
            admin_groups: Vec::new(),
            role_groups: Vec::new(),
            organization: None,
            idp_enforces_mfa: false,
            accepted_authn_contexts: DEFAULT_ACCEPTED_AUTHN_CONTEXTS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// The DER bytes of every certificate in a PEM text; an error when there is none or one is
/// not base64.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let b64 = body.take().ok_or("END CERTIFICATE without BEGIN")?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("a certificate is not valid base64: {e}"))?;
            // Every X.509 certificate is a DER SEQUENCE.
            if der.first() != Some(&0x30) {
                return Err("a certificate is not DER".into());
            }
            out.push(der);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if out.is_empty() { Err("no PEM certificate found".into()) } else { Ok(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_yield_every_certificate_and_nothing_else() {
        let one = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(one).unwrap(), vec![vec![0x30, 0x03, 0x02, 0x01, 0x01]]);
        assert_eq!(pem_certificates(&format!("junk\n{one}{one}")).unwrap().len(), 2);
        assert!(pem_certificates("").is_err());
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").is_err());
        assert!(pem_certificates("-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----").is_err());
    }
}
