//! SAML 2.0 Web SSO, service-provider side: SP-initiated, the AuthnRequest sent with the
//! HTTP-Redirect binding, the answer received with the HTTP-POST binding. Shares provisioning,
//! the session and the audit records with OpenID Connect (`sso.rs`).
//!
//! `samael` (with libxmlsec1) parses the XML and checks the signatures; it also validates, but
//! against the system clock, with 180 s of skew, and it accepts a signed Response around an
//! unsigned Assertion. So medhub uses only its signature check (every signature in the
//! document must verify with the configured IdP certificate, RSA or ECDSA with SHA-256 or
//! better) and its reduction of the document to the signed content, and checks the rest
//! itself with the service's clock: the Assertion itself signed, exactly one Assertion and
//! no encrypted one, the Issuer, the Audience, the bearer SubjectConfirmation's Recipient,
//! NotBefore/NotOnOrAfter with 60 s of skew, InResponseTo against a pending flow (single use,
//! 10 minutes), and the assertion's ID in a replay cache kept in the database. Everything
//! medhub reads (NameID, attributes, AuthnContext) comes from the signed assertion, and that
//! assertion must be the one the response carries, so a signature cannot be wrapped around
//! other content.

use std::sync::Arc;

use base64::Engine;
use jiff::Timestamp;
use medhub_store::AuthFlow;
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer, CryptoProvider, ReduceMode, XmlSec};
use samael::schema::{Assertion, AuthnRequest, Issuer, NameIdPolicy, Response};
use sha2::{Digest, Sha256};

use super::saml_config::{SamlConfig, pem_certificates};
use super::sso::{CLOCK_SKEW, FLOW_TTL, SsoProfile, SsoSignIn, check_return_to};
use super::{AuthService, ClientInfo, new_token, token_hash};
use crate::ServiceError;

const FLOW_KIND: &str = "saml";
/// The largest `SAMLResponse` accepted, base64 as posted. A signed response with a few
/// attributes is 5 to 15 KiB.
pub const MAX_SAML_RESPONSE_BYTES: usize = 48 * 1024;
const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
const HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
/// Signatures medhub accepts: no SHA-1, no DSA.
const ALLOWED_ALGS: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// libxml2 and xmlsec keep global state; medhub checks one response at a time (a check
/// takes a few milliseconds).
static XMLSEC: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The service-provider side of one identity provider.
pub(super) struct Saml {
    config: SamlConfig,
    certs: Vec<CertificateDer>,
}

fn failed(why: &str) -> ServiceError {
    ServiceError::SsoFailed(why.to_owned())
}

impl Saml {
    pub(super) fn new(config: SamlConfig) -> Result<Self, String> {
        let certs = pem_certificates(&config.idp_certificate_pem)?.into_iter().map(CertificateDer::from).collect();
        Ok(Self { config, certs })
    }

    /// Checks the signatures and the structure, and returns the signed assertion with the
    /// (possibly unsigned) response around it. Blocking: libxml2 and xmlsec.
    fn verify(&self, xml: &str) -> Result<Verified, ServiceError> {
        let shape = Shape::of(xml)?;
        if shape.doctype {
            return Err(failed("the response has a document type declaration"));
        }
        if shape.root != (PROTOCOL_NS.to_vec(), b"Response".to_vec()) {
            return Err(failed("the document is not a SAML Response"));
        }
        if shape.encrypted_assertions > 0 {
            return Err(failed("encrypted assertions are not supported"));
        }
        if shape.assertions != 1 {
            return Err(failed("the response must carry exactly one assertion"));
        }
        let response: Response = xml.parse().map_err(|_| failed("unreadable SAML Response"))?;
        if let Some(code) = response.status.as_ref().and_then(|s| s.status_code.value.as_deref())
            && code != STATUS_SUCCESS
        {
            return Err(ServiceError::SsoFailed(format!("the identity provider answered {code}")));
        }
        let claimed = response.assertion.as_ref().ok_or_else(|| failed("the response carries no assertion"))?;
        // The assertion itself must carry a signature over itself (a signed response around
        // an unsigned assertion is not enough); that signature is checked below with all the
        // others in the document.
        let own = format!("#{}", claimed.id);
        let signed_itself = claimed.signature.as_ref().is_some_and(|s| {
            s.signed_info.reference.len() == 1 && s.signed_info.reference[0].uri.as_deref() == Some(own.as_str())
        });
        if !signed_itself {
            return Err(failed("the assertion is not signed"));
        }
        let reduced = {
            let _one_at_a_time = XMLSEC.lock().unwrap_or_else(|e| e.into_inner());
            XmlSec::reduce_xml_to_signed_with_allowed_algorithms(
                xml,
                &self.certs,
                ReduceMode::ValidateAndMarkNoAncestors,
                Some(ALLOWED_ALGS),
            )
        }
        .map_err(|_| failed("a signature is invalid, not the identity provider's, or uses a refused algorithm"))?;
        // What is left is signed content only. Read the assertion from it, and only if it is
        // the assertion the response carries.
        let root = Shape::of(&reduced)?.root;
        let assertion: Assertion = if root == (ASSERTION_NS.to_vec(), b"Assertion".to_vec()) {
            reduced.parse().map_err(|_| failed("unreadable signed assertion"))?
        } else if root == (PROTOCOL_NS.to_vec(), b"Response".to_vec()) {
            let signed: Response = reduced.parse().map_err(|_| failed("unreadable signed response"))?;
            signed.assertion.ok_or_else(|| failed("the signed response carries no assertion"))?
        } else {
            return Err(failed("the signed content is not an assertion"));
        };
        if assertion.id != claimed.id {
            return Err(failed("the signed assertion is not the one the response carries"));
        }
        Ok(Verified { response, assertion })
    }

    /// Checks what the signed assertion says against this SP and the time `now`.
    fn check(&self, v: &Verified, now: Timestamp) -> Result<Accepted, ServiceError> {
        let c = &self.config;
        let (r, a) = (&v.response, &v.assertion);
        if r.issuer.as_ref().and_then(|i| i.value.as_deref()).is_some_and(|i| i != c.idp_entity_id) {
            return Err(failed("the response's Issuer is not the identity provider"));
        }
        if r.destination.as_deref().is_some_and(|d| d != c.acs_url) {
            return Err(failed("the response's Destination is not medhub's ACS URL"));
        }
        if a.issuer.value.as_deref() != Some(c.idp_entity_id.as_str()) {
            return Err(failed("the assertion's Issuer is not the identity provider"));
        }
        if a.version != "2.0" {
            return Err(failed("not a SAML 2.0 assertion"));
        }
        let late = |t: Timestamp| now >= t.checked_add(CLOCK_SKEW).unwrap_or(Timestamp::MAX);
        let early = |t: Timestamp| now < t.checked_sub(CLOCK_SKEW).unwrap_or(Timestamp::MIN);
        if early(ts(a.issue_instant)?) {
            return Err(failed("the assertion was issued in the future"));
        }

        let cond = a.conditions.as_ref().ok_or_else(|| failed("the assertion has no Conditions"))?;
        if let Some(t) = cond.not_before
            && early(ts(t)?)
        {
            return Err(failed("the assertion is not valid yet (NotBefore)"));
        }
        let mut valid_until = None;
        if let Some(t) = cond.not_on_or_after {
            let t = ts(t)?;
            if late(t) {
                return Err(failed("the assertion has expired (Conditions NotOnOrAfter)"));
            }
            valid_until = Some(t);
        }
        // Every AudienceRestriction must name us (they are and-ed), and there must be one.
        let audiences = cond.audience_restrictions.as_deref().unwrap_or_default();
        if audiences.is_empty() || !audiences.iter().all(|r| r.audience.contains(&c.sp_entity_id)) {
            return Err(failed("the assertion is meant for another audience"));
        }

        let subject = a.subject.as_ref().ok_or_else(|| failed("the assertion has no Subject"))?;
        let name_id = subject.name_id.as_ref().ok_or_else(|| failed("the assertion has no NameID"))?;
        let subject_id = name_id.value.trim();
        if subject_id.is_empty() || subject_id.len() > 1024 {
            return Err(failed("the NameID is empty or too long"));
        }
        if name_id.format.as_deref() == Some(TRANSIENT) {
            return Err(failed("a transient NameID cannot identify a user from one sign-in to the next"));
        }
        // A bearer confirmation for our ACS, unexpired, answering one of our requests.
        let mut why = "the assertion has no bearer SubjectConfirmation";
        let mut confirmed = None;
        for sc in subject.subject_confirmations.iter().flatten() {
            if sc.method.as_deref() != Some(BEARER) {
                continue;
            }
            let Some(d) = sc.subject_confirmation_data.as_ref() else {
                why = "the SubjectConfirmation has no SubjectConfirmationData";
                continue;
            };
            if d.recipient.as_deref() != Some(c.acs_url.as_str()) {
                why = "the SubjectConfirmation's Recipient is not medhub's ACS URL";
                continue;
            }
            let Some(until) = d.not_on_or_after.map(ts).transpose()? else {
                why = "the SubjectConfirmation has no NotOnOrAfter";
                continue;
            };
            if late(until) {
                why = "the assertion has expired (SubjectConfirmation NotOnOrAfter)";
                continue;
            }
            if d.not_before.map(ts).transpose()?.is_some_and(early) {
                why = "the SubjectConfirmation is not valid yet";
                continue;
            }
            let Some(irt) = d.in_response_to.as_deref().filter(|i| !i.is_empty() && i.len() <= 256) else {
                why = "unsolicited responses are not accepted (no InResponseTo)";
                continue;
            };
            confirmed = Some((irt.to_owned(), until));
            break;
        }
        let (in_response_to, until) = confirmed.ok_or_else(|| failed(why))?;
        if r.in_response_to.as_deref().is_some_and(|i| i != in_response_to) {
            return Err(failed("the response and its assertion answer different requests"));
        }
        let valid_until = valid_until.map_or(until, |v| v.max(until));

        let statements = a.authn_statements.as_deref().unwrap_or_default();
        if statements.is_empty() {
            return Err(failed("the assertion has no AuthnStatement"));
        }
        let authn_contexts: Vec<String> = statements
            .iter()
            .filter_map(|s| s.authn_context.as_ref()?.value.as_ref()?.value.clone())
            .map(|v| v.trim().to_owned())
            .collect();

        let attribute = |name: &str| -> Vec<String> {
            a.attribute_statements
                .iter()
                .flatten()
                .flat_map(|s| s.attributes.iter())
                .filter(|at| at.name.as_deref() == Some(name) || at.friendly_name.as_deref() == Some(name))
                .flat_map(|at| at.values.iter().filter_map(|v| v.value.as_deref().map(|s| s.trim().to_owned())))
                .collect()
        };
        let profile = SsoProfile {
            issuer: c.idp_entity_id.clone(),
            subject: subject_id.to_owned(),
            username: attribute(&c.username_attribute).into_iter().next(),
            username_source: format!("{} attribute", c.username_attribute),
            display_name: attribute(&c.display_name_attribute).into_iter().next(),
            groups: attribute(&c.groups_attribute),
        };
        Ok(Accepted {
            assertion_id: a.id.clone(),
            in_response_to,
            replay_until: valid_until.checked_add(CLOCK_SKEW).unwrap_or(Timestamp::MAX),
            profile,
            authn_contexts,
        })
    }

    /// The SP metadata an IdP administrator imports: entity id, the ACS (HTTP-POST), the
    /// persistent NameID format, and that assertions must be signed.
    fn metadata(&self) -> String {
        let c = &self.config;
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="false" WantAssertionsSigned="true">
    <md:NameIDFormat>{PERSISTENT}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{HTTP_POST}" Location="{acs}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
            entity = xml_escape(&c.sp_entity_id),
            acs = xml_escape(&c.acs_url),
        )
    }
}

/// A response whose signatures verified: the envelope as sent (unsigned unless the IdP signs
/// responses too) and the signed assertion.
struct Verified {
    response: Response,
    assertion: Assertion,
}

/// What an accepted assertion says.
struct Accepted {
    assertion_id: String,
    in_response_to: String,
    /// Until when a second use must be refused: the assertion's NotOnOrAfter plus the skew.
    replay_until: Timestamp,
    profile: SsoProfile,
    authn_contexts: Vec<String>,
}

/// The element structure of a document, read without resolving anything.
struct Shape {
    /// (namespace, local name) of the root element.
    root: (Vec<u8>, Vec<u8>),
    assertions: usize,
    encrypted_assertions: usize,
    doctype: bool,
}

impl Shape {
    fn of(xml: &str) -> Result<Self, ServiceError> {
        use quick_xml::events::Event;
        use quick_xml::name::ResolveResult;
        let mut reader = quick_xml::NsReader::from_str(xml);
        let mut shape =
            Shape { root: (Vec::new(), Vec::new()), assertions: 0, encrypted_assertions: 0, doctype: false };
        let mut seen_root = false;
        loop {
            let (ns, event) = reader.read_resolved_event().map_err(|_| failed("malformed XML"))?;
            match event {
                Event::Start(e) | Event::Empty(e) => {
                    let ns = match ns {
                        ResolveResult::Bound(n) => n.as_ref().to_vec(),
                        _ => Vec::new(),
                    };
                    let local = e.local_name().as_ref().to_vec();
                    if !seen_root {
                        shape.root = (ns.clone(), local.clone());
                        seen_root = true;
                    }
                    if ns == ASSERTION_NS && local == b"Assertion" {
                        shape.assertions += 1;
                    }
                    if ns == ASSERTION_NS && local == b"EncryptedAssertion" {
                        shape.encrypted_assertions += 1;
                    }
                }
                Event::DocType(_) => shape.doctype = true,
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(shape)
    }
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> Result<Timestamp, ServiceError> {
    Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos().min(999_999_999) as i32)
        .map_err(|_| failed("a time out of range"))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

impl AuthService {
    fn saml(&self) -> Result<&Arc<Saml>, ServiceError> {
        self.saml.as_ref().ok_or(ServiceError::SsoNotConfigured)
    }

    /// Fails with `SsoNotConfigured` unless SAML sign-in is set up.
    pub fn saml_configured(&self) -> Result<(), ServiceError> {
        self.saml().map(|_| ())
    }

    /// The SP metadata XML.
    pub fn saml_metadata(&self) -> Result<String, ServiceError> {
        Ok(self.saml()?.metadata())
    }

    /// Starts a SAML sign-in: stores the flow (SHA-256 of the new AuthnRequest's ID,
    /// `return_to`, 10 minutes) and returns the IdP's SSO URL with the AuthnRequest
    /// (HTTP-Redirect binding) to send the browser to.
    pub async fn saml_begin(&self, return_to: Option<&str>) -> Result<String, ServiceError> {
        let saml = self.saml()?.clone();
        let c = &saml.config;
        let return_to = return_to.map(check_return_to).transpose()?;
        let now = self.now();
        // 256 random bits; an XML ID must not start with a digit or `-`.
        let request_id = format!("_{}", new_token("")?);
        let instant = chrono::DateTime::from_timestamp(now.as_second(), 0)
            .ok_or_else(|| ServiceError::SsoUnavailable("clock out of range".into()))?;
        let request = AuthnRequest {
            id: request_id.clone(),
            version: "2.0".into(),
            issue_instant: instant,
            destination: Some(c.idp_sso_url.clone()),
            issuer: Some(Issuer { value: Some(c.sp_entity_id.clone()), ..Issuer::default() }),
            name_id_policy: Some(NameIdPolicy {
                format: Some(PERSISTENT.into()),
                allow_create: Some(true),
                ..NameIdPolicy::default()
            }),
            assertion_consumer_service_url: Some(c.acs_url.clone()),
            protocol_binding: Some(HTTP_POST.into()),
            ..AuthnRequest::default()
        };
        let url = request
            .redirect("")
            .ok()
            .flatten()
            .ok_or_else(|| ServiceError::SsoUnavailable("the AuthnRequest could not be encoded".into()))?;
        self.store
            .create_auth_flow(&AuthFlow {
                state_hash: token_hash(&request_id),
                kind: FLOW_KIND.into(),
                nonce: String::new(),
                verifier_enc: Vec::new(),
                return_to,
                created_at: now,
                expires_at: now.checked_add(FLOW_TTL).unwrap_or(Timestamp::MAX),
            })
            .await?;
        Ok(url.to_string())
    }

    /// Finishes a SAML sign-in with the `SAMLResponse` the browser posted: verifies it, records
    /// the assertion in the replay cache, uses the flow its InResponseTo names once, finds or
    /// creates the user, applies the role from the groups attribute, and opens a session.
    /// Failures are throttled per client address and audited, like OpenID Connect's.
    pub async fn saml_finish(&self, saml_response: &str, client: &ClientInfo) -> Result<SsoSignIn, ServiceError> {
        let saml = self.saml()?.clone();
        self.sso_attempt("saml", client, self.saml_finish_inner(saml, saml_response, client)).await
    }

    async fn saml_finish_inner(
        &self,
        saml: Arc<Saml>,
        saml_response: &str,
        client: &ClientInfo,
    ) -> Result<SsoSignIn, ServiceError> {
        if saml_response.is_empty() || saml_response.len() > MAX_SAML_RESPONSE_BYTES {
            return Err(failed("missing or oversized SAMLResponse"));
        }
        let compact: String = saml_response.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let xml = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| failed("SAMLResponse is not base64 of UTF-8 XML"))?;
        let now = self.now();
        let checker = saml.clone();
        let verified = tokio::task::spawn_blocking(move || checker.verify(&xml))
            .await
            .map_err(|_| failed("the signature check did not finish"))??;
        let accepted = saml.check(&verified, now)?;

        let mut h = Sha256::new();
        h.update(saml.config.idp_entity_id.as_bytes());
        h.update([0]);
        h.update(accepted.assertion_id.as_bytes());
        let assertion_hash: [u8; 32] = h.finalize().into();
        if !self.store.record_saml_assertion(&assertion_hash, accepted.replay_until, now).await? {
            return Err(failed("the assertion was used before (replay)"));
        }
        let flow = self
            .store
            .consume_auth_flow(&token_hash(&accepted.in_response_to), FLOW_KIND, now)
            .await?
            .ok_or_else(|| failed("InResponseTo names no pending sign-in (unknown, used or expired)"))?;

        let c = &saml.config;
        let user = self.sso_user(&accepted.profile, c.organization.as_deref(), &c.admin_groups, &c.role_groups).await?;
        let idp_mfa = c.idp_enforces_mfa
            && accepted.authn_contexts.iter().any(|x| c.accepted_authn_contexts.iter().any(|a| a == x));
        let issued = self.sso_session(&user, idp_mfa, "saml", client).await?;
        Ok(SsoSignIn { issued, return_to: flow.return_to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_of_a_document_counts_assertions_by_namespace() {
        let xml = r#"<p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion"><a:Assertion ID="x"/><Assertion ID="y"/><a:Advice><a:Assertion ID="z"/></a:Advice></p:Response>"#;
        let s = Shape::of(xml).unwrap();
        assert_eq!(s.root, (PROTOCOL_NS.to_vec(), b"Response".to_vec()));
        assert_eq!((s.assertions, s.encrypted_assertions, s.doctype), (2, 0, false));
        let s = Shape::of(r#"<!DOCTYPE x [<!ENTITY a "b">]><x/>"#).unwrap();
        assert!(s.doctype);
    }

    #[test]
    fn metadata_escapes_what_it_embeds() {
        let c = SamlConfig::new("https://idp", "https://idp/sso", "", "https://sp/?a=1&b=\"2\"", "https://sp/acs");
        let saml = Saml { config: c, certs: Vec::new() };
        let m = saml.metadata();
        assert!(m.contains(r#"entityID="https://sp/?a=1&amp;b=&quot;2&quot;""#), "{m}");
        assert!(m.contains(r#"Location="https://sp/acs""#));
    }
}
