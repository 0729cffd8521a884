//! OpenID Connect sign-in: the authorization code flow with PKCE, `state` and `nonce`, strict
//! ID-token validation, just-in-time provisioning and the system role from IdP groups. The
//! provisioning, session and audit steps at the end are shared with SAML (`saml.rs`).
//!
//! `openidconnect` does the protocol and the signature and claim checks. What it leaves to
//! its caller, medhub does here: it finds the flow by the SHA-256 of `state` (so nothing
//! secret is compared byte by byte), gives 60 s of clock leeway through the verifier's clock,
//! refuses an `iat` in the future, checks `azp`, refetches the provider's keys when a token
//! names an unknown `kid` (at most once per 60 s), and sets the algorithm allowlist. Every
//! HTTP request to the provider goes through one reqwest client that follows no redirects,
//! gives up after 5 s, and reads at most 1 MiB.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::Outcome;
use medhub_core::model::{Org, SessionState, SystemRole, User};
use medhub_core::session as rules;
use medhub_core::{UserId, validate};
use medhub_store::{AuthFlow, StoreError, UserRecord};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse,
    IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse,
};
use tokio::sync::Mutex;

use super::{AuthService, ClientInfo, IssuedSession, address_throttle_key, new_token, token_hash};
use crate::ServiceError;

/// How long a user has to finish signing in at the identity provider.
pub const FLOW_TTL: SignedDuration = SignedDuration::from_mins(10);
/// Clock difference with the identity provider that `exp` and `iat` tolerate.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);
/// The provider's keys are refetched for an unknown `kid` at most this often.
pub const JWKS_REFETCH_INTERVAL: SignedDuration = SignedDuration::from_secs(60);
/// Discovery documents are fetched again after this long.
const METADATA_TTL: SignedDuration = SignedDuration::from_hours(24);
/// Every request to the provider: connect, send and read within this time.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response read from the provider.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// `amr` values (RFC 8176) that show a second factor, when none are configured.
pub const DEFAULT_ACCEPTED_AMR: &[&str] = &["mfa", "otp", "hwk", "swk", "fpt", "face"];
/// Only asymmetric signatures: never `none`, never a MAC keyed with the client secret.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 4] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EdDsa,
];
const FLOW_KIND: &str = "oidc";

/// The identity provider and what medhub takes from its tokens.
#[derive(Clone)]
pub struct OidcConfig {
    /// The issuer URL, exactly as in the provider's discovery document and tokens.
    pub issuer: String,
    pub client_id: String,
    /// Never logged; `Debug` hides it.
    pub client_secret: String,
    /// Where the provider sends the browser back, as registered at the provider.
    pub redirect_uri: String,
    /// Scopes besides `openid` (always asked for).
    pub scopes: Vec<String>,
    /// The claim the username comes from.
    pub username_claim: String,
    /// The claim that lists the user's groups.
    pub groups_claim: String,
    /// Members of any of these groups are administrators; everyone else is a user.
    pub admin_groups: Vec<String>,
    /// Roles from the provider's groups, as (group, role key) pairs. When any are set, the
    /// provider is the source of the user's roles: they are re-applied at every sign-in, a
    /// role lost ends the user's other sessions, and a user in none of these groups gets the
    /// default role of their system role (clinician or administrator).
    pub role_groups: Vec<(String, String)>,
    /// The organization (by name, letter case aside) whose users sign in with this
    /// provider; `None` for the first organization. Users are created there, and an account
    /// of another organization linked to a subject of this provider is refused.
    pub organization: Option<String>,
    /// The provider always requires a second factor: an SSO sign-in whose `amr` shows one
    /// counts as medhub's second factor.
    pub idp_enforces_mfa: bool,
    /// The `amr` values that show a second factor.
    pub accepted_amr: Vec<String>,
}

impl OidcConfig {
    /// A provider with medhub's defaults for everything else.
    pub fn new(issuer: &str, client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scopes: vec!["profile".into(), "email".into()],
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            admin_groups: Vec::new(),
            role_groups: Vec::new(),
            organization: None,
            idp_enforces_mfa: false,
            accepted_amr: DEFAULT_ACCEPTED_AMR.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .field("username_claim", &self.username_claim)
            .field("groups_claim", &self.groups_claim)
            .field("admin_groups", &self.admin_groups)
            .field("role_groups", &self.role_groups)
            .field("idp_enforces_mfa", &self.idp_enforces_mfa)
            .field("accepted_amr", &self.accepted_amr)
            .finish_non_exhaustive()
    }
}

/// A finished SSO sign-in (OpenID Connect or SAML).
#[derive(Debug)]
pub struct SsoSignIn {
    pub issued: IssuedSession,
    /// The relative path given when the flow began.
    pub return_to: Option<String>,
}

/// Why a request to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderHttpError {
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("the response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Http(#[from] openidconnect::http::Error),
}

/// The HTTP client `openidconnect` calls: no redirects, 5 s, at most 1 MiB. (A struct rather
/// than a closure, so that its futures are `Send` for every lifetime, as axum needs.)
#[derive(Clone)]
struct ProviderHttp(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for ProviderHttp {
    type Error = ProviderHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, ProviderHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(send(self.0.clone(), request))
    }
}

async fn send(http: reqwest::Client, req: HttpRequest) -> Result<HttpResponse, ProviderHttpError> {
    let (parts, body) = req.into_parts();
    let mut resp = http.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
    if resp.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(ProviderHttpError::TooLarge);
    }
    let mut out = openidconnect::http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ProviderHttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(out.body(body)?)
}

/// The provider's discovery document and keys, as last fetched.
struct Provider {
    metadata: CoreProviderMetadata,
    fetched_at: Timestamp,
    keys: CoreJsonWebKeySet,
    /// When an unknown `kid` last made medhub refetch the keys.
    last_refetch: Option<Timestamp>,
}

/// The client side of one identity provider.
pub(super) struct Oidc {
    config: OidcConfig,
    http: ProviderHttp,
    /// Fetched at first use, so that a provider that is down does not stop medhub starting
    /// (password sign-in still works). One fetch at a time.
    provider: Mutex<Option<Provider>>,
}

impl Oidc {
    pub(super) fn new(config: OidcConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            .build()?;
        Ok(Self { config, http: ProviderHttp(http), provider: Mutex::new(None) })
    }

    fn issuer(&self) -> Result<IssuerUrl, ServiceError> {
        IssuerUrl::new(self.config.issuer.clone()).map_err(|e| ServiceError::SsoUnavailable(format!("issuer URL: {e}")))
    }

    /// The discovery document, fetched at first use and again after a day.
    async fn metadata(&self, now: Timestamp) -> Result<CoreProviderMetadata, ServiceError> {
        let mut guard = self.provider.lock().await;
        if let Some(p) = guard.as_ref()
            && now.duration_since(p.fetched_at) < METADATA_TTL
        {
            return Ok(p.metadata.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer()?, &self.http)
            .await
            .map_err(|e| ServiceError::SsoUnavailable(format!("discovery: {}", error_chain(&e))))?;
        let keys = metadata.jwks().clone();
        let last_refetch = guard.as_ref().and_then(|p| p.last_refetch);
        *guard = Some(Provider { metadata: metadata.clone(), fetched_at: now, keys, last_refetch });
        tracing::info!(target: "medhub::auth", issuer = %self.config.issuer, "identity provider metadata fetched");
        Ok(metadata)
    }

    async fn keys(&self) -> CoreJsonWebKeySet {
        self.provider.lock().await.as_ref().map(|p| p.keys.clone()).unwrap_or_else(|| CoreJsonWebKeySet::new(vec![]))
    }

    /// Fetches the keys again because a token named one we do not have; refused when the last
    /// such refetch was less than 60 s ago, so forged `kid`s cannot make medhub hammer the
    /// provider.
    async fn refetch_keys(&self, now: Timestamp) -> Result<bool, ServiceError> {
        let mut guard = self.provider.lock().await;
        let Some(p) = guard.as_mut() else { return Ok(false) };
        if p.last_refetch.is_some_and(|t| now.duration_since(t) < JWKS_REFETCH_INTERVAL) {
            return Ok(false);
        }
        p.last_refetch = Some(now);
        let keys = CoreJsonWebKeySet::fetch_async(p.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| ServiceError::SsoUnavailable(format!("keys: {}", error_chain(&e))))?;
        p.keys = keys;
        tracing::info!(target: "medhub::auth", issuer = %self.config.issuer, "identity provider keys refetched");
        Ok(true)
    }

    /// Checks the ID token: signature with an allowed algorithm and a key of the provider,
    /// issuer, audience (our client id only; `azp` must be us when present), expiry with 60 s
    /// of leeway, `iat` not in the future, and the nonce. Returns its verified claims as JSON.
    async fn verify(&self, token: &CoreIdToken, nonce: &Nonce, now: Timestamp) -> Result<Claims, ServiceError> {
        let mut keys = self.keys().await;
        let mut refetched = false;
        loop {
            let verifier = self.verifier(keys, now)?;
            match token.claims(&verifier, nonce) {
                Ok(claims) => {
                    if let Some(azp) = claims.authorized_party()
                        && azp.as_str() != self.config.client_id
                    {
                        return Err(ServiceError::SsoFailed("ID token authorized for another party (azp)".into()));
                    }
                    if claims.audiences().len() > 1 && claims.authorized_party().is_none() {
                        return Err(ServiceError::SsoFailed("ID token with several audiences and no azp".into()));
                    }
                    return Claims::from_verified(token);
                }
                Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey))
                    if !refetched =>
                {
                    refetched = true;
                    if !self.refetch_keys(now).await? {
                        return Err(ServiceError::SsoFailed(
                            "ID token signed with an unknown key, and the keys were refetched less than 60 s ago"
                                .into(),
                        ));
                    }
                    keys = self.keys().await;
                }
                Err(e) => return Err(ServiceError::SsoFailed(format!("ID token refused: {e}"))),
            }
        }
    }

    fn verifier(&self, keys: CoreJsonWebKeySet, now: Timestamp) -> Result<CoreIdTokenVerifier<'static>, ServiceError> {
        let skew = CLOCK_SKEW.as_secs();
        let now_s = now.as_second();
        // `exp` is compared with the verifier's clock: running it 60 s behind accepts tokens
        // up to 60 s past their expiry, and no later.
        let behind = chrono::DateTime::from_timestamp(now_s - skew, 0)
            .ok_or_else(|| ServiceError::SsoFailed("clock out of range".into()))?;
        // A public-client verifier never knows the client secret, so no MAC can ever verify,
        // whatever the allowlist says.
        Ok(CoreIdTokenVerifier::new_public_client(ClientId::new(self.config.client_id.clone()), self.issuer()?, keys)
            .set_allowed_algs(ALLOWED_ALGS)
            .require_audience_match(true)
            .require_issuer_match(true)
            .set_time_fn(move || behind)
            .set_issue_time_verifier_fn(move |iat| {
                if iat.timestamp() > now_s + skew { Err("issued in the future".to_owned()) } else { Ok(()) }
            }))
    }
}

/// Who the identity provider says signed in, whatever the protocol: what provisioning reads.
pub(super) struct SsoProfile {
    /// The provider (OIDC `iss`, SAML IdP entity id) and its stable id of the user (`sub`,
    /// persistent NameID): users are matched by this pair, never by name.
    pub issuer: String,
    pub subject: String,
    /// The username at first sign-in, before medhub's normalization.
    pub username: Option<String>,
    /// Where the username comes from, for the refusal message (`preferred_username claim`).
    pub username_source: String,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
}

/// The claims medhub reads, from a verified token.
struct Claims {
    issuer: String,
    subject: String,
    payload: serde_json::Value,
}

impl Claims {
    /// Reads the payload of a token whose signature and claims were just verified.
    fn from_verified(token: &CoreIdToken) -> Result<Self, ServiceError> {
        let jwt = token.to_string();
        let payload = jwt
            .split('.')
            .nth(1)
            .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .ok_or_else(|| ServiceError::SsoFailed("unreadable ID token payload".into()))?;
        let text = |k: &str| payload.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(issuer), Some(subject)) = (text("iss"), text("sub")) else {
            return Err(ServiceError::SsoFailed("ID token without iss or sub".into()));
        };
        Ok(Self { issuer, subject, payload })
    }

    fn text(&self, claim: &str) -> Option<&str> {
        self.payload.get(claim).and_then(|v| v.as_str())
    }

    /// A claim that is a list of strings, or one string.
    fn list(&self, claim: &str) -> Vec<String> {
        match self.payload.get(claim) {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

/// A medhub username from an IdP claim: lower case, and every character outside
/// `[a-z0-9._-]` replaced by `_` (so `Alice.Smith@example.org` becomes
/// `alice.smith_example.org`), at most 64 characters. `None` if nothing usable remains.
pub fn sso_username(raw: &str) -> Option<String> {
    let name: String = raw
        .trim()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .take(64)
        .collect();
    if !name.chars().any(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    validate::username(&name).ok()
}

/// A `return_to` value: a relative path on this server, nothing that a browser could read as
/// another origin (`//host`, `/\host`, `https://...`).
pub fn check_return_to(raw: &str) -> Result<String, ServiceError> {
    let bad = || ServiceError::InvalidRequest("return_to must be a relative path such as /conversations".into());
    let ok = raw.starts_with('/')
        && !raw.starts_with("//")
        && !raw.starts_with("/\\")
        && raw.len() <= 512
        && !raw.chars().any(|c| c.is_control() || c == '\\');
    if ok { Ok(raw.to_owned()) } else { Err(bad()) }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// 256 random bits, base64url: a `state`, a `nonce`, or a PKCE verifier (43 characters).
fn random_string() -> Result<String, ServiceError> {
    new_token("")
}

impl AuthService {
    fn oidc(&self) -> Result<&Arc<Oidc>, ServiceError> {
        self.oidc.as_ref().ok_or(ServiceError::SsoNotConfigured)
    }

    /// Fails with `SsoNotConfigured` unless OpenID Connect sign-in is set up.
    pub fn oidc_configured(&self) -> Result<(), ServiceError> {
        self.oidc().map(|_| ())
    }

    /// Starts an OIDC sign-in: stores the flow (state hash, nonce, PKCE verifier encrypted
    /// with the server key, `return_to`, 10 minutes) and returns the provider's authorization
    /// URL to send the browser to.
    pub async fn oidc_begin(&self, return_to: Option<&str>) -> Result<String, ServiceError> {
        let oidc = self.oidc()?.clone();
        let return_to = return_to.map(check_return_to).transpose()?;
        let now = self.now();
        let metadata = oidc.metadata(now).await?;
        let redirect = RedirectUrl::new(oidc.config.redirect_uri.clone())
            .map_err(|e| ServiceError::SsoUnavailable(format!("redirect URI: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(oidc.config.client_id.clone()),
            Some(ClientSecret::new(oidc.config.client_secret.clone())),
        )
        .set_redirect_uri(redirect);
        let (state, nonce, verifier) = (random_string()?, random_string()?, random_string()?);
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.clone()));
        let (s, n) = (state.clone(), nonce.clone());
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, move || CsrfToken::new(s), move || Nonce::new(n))
            .set_pkce_challenge(challenge);
        for scope in oidc.config.scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, _, _) = request.url();
        let state_hash = token_hash(&state);
        // The state hash is the associated data: a verifier cannot be moved to another flow.
        let verifier_enc = self.key.seal(verifier.as_bytes(), &state_hash)?;
        self.store
            .create_auth_flow(&AuthFlow {
                state_hash,
                kind: FLOW_KIND.into(),
                nonce,
                verifier_enc,
                return_to,
                created_at: now,
                expires_at: now.checked_add(FLOW_TTL).unwrap_or(Timestamp::MAX),
            })
            .await?;
        Ok(url.to_string())
    }

    /// Finishes an OIDC sign-in with the provider's `code` and `state`: uses the flow once,
    /// exchanges the code (with the PKCE verifier), verifies the ID token, finds or creates
    /// the user, applies the role from the groups claim, and opens a session. Failures are
    /// throttled per client address.
    pub async fn oidc_finish(&self, code: &str, state: &str, client: &ClientInfo) -> Result<SsoSignIn, ServiceError> {
        let oidc = self.oidc()?.clone();
        self.sso_attempt("oidc", client, self.oidc_finish_inner(&oidc, code, state, client)).await
    }

    async fn oidc_finish_inner(
        &self,
        oidc: &Oidc,
        code: &str,
        state: &str,
        client: &ClientInfo,
    ) -> Result<SsoSignIn, ServiceError> {
        if state.is_empty() || state.len() > 256 || code.is_empty() || code.len() > 4096 {
            return Err(ServiceError::SsoFailed("malformed code or state".into()));
        }
        let now = self.now();
        let state_hash = token_hash(state);
        let flow = self
            .store
            .consume_auth_flow(&state_hash, FLOW_KIND, now)
            .await?
            .ok_or_else(|| ServiceError::SsoFailed("unknown, used or expired state".into()))?;
        let verifier = self
            .key
            .open(&flow.verifier_enc, &state_hash)
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| ServiceError::SsoFailed("the flow's verifier does not decrypt".into()))?;

        let metadata = oidc.metadata(now).await?;
        let redirect = RedirectUrl::new(oidc.config.redirect_uri.clone())
            .map_err(|e| ServiceError::SsoUnavailable(format!("redirect URI: {e}")))?;
        let oauth = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(oidc.config.client_id.clone()),
            Some(ClientSecret::new(oidc.config.client_secret.clone())),
        )
        .set_redirect_uri(redirect);
        let response = oauth
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| ServiceError::SsoUnavailable(format!("token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&oidc.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    ServiceError::SsoFailed(format!("the provider refused the code: {}", r.error()))
                }
                RequestTokenError::Request(e) => ServiceError::SsoUnavailable(format!("token endpoint: {e}")),
                RequestTokenError::Parse(..) => ServiceError::SsoFailed("unreadable token response".into()),
                RequestTokenError::Other(m) => ServiceError::SsoFailed(format!("token endpoint: {m}")),
            })?;
        let id_token =
            response.id_token().ok_or_else(|| ServiceError::SsoFailed("the token response has no ID token".into()))?;
        let claims = oidc.verify(id_token, &Nonce::new(flow.nonce), now).await?;

        let c = &oidc.config;
        let profile = SsoProfile {
            issuer: claims.issuer.clone(),
            subject: claims.subject.clone(),
            username: claims.text(&c.username_claim).map(str::to_owned),
            username_source: format!("{} claim", c.username_claim),
            display_name: claims.text("name").map(str::to_owned),
            groups: claims.list(&c.groups_claim),
        };
        let user = self.sso_user(&profile, c.organization.as_deref(), &c.admin_groups, &c.role_groups).await?;
        let amr = claims.list("amr");
        let idp_mfa = c.idp_enforces_mfa && amr.iter().any(|m| c.accepted_amr.iter().any(|a| a == m));
        let issued = self.sso_session(&user, idp_mfa, "oidc", client).await?;
        Ok(SsoSignIn { issued, return_to: flow.return_to })
    }

    // --- shared by OpenID Connect and SAML ---------------------------------------------------

    /// Runs one SSO sign-in attempt (`method` is `oidc` or `saml`): throttled per client
    /// address, and reported to the audit interface whatever its outcome. Refusals are logged
    /// with their reason; the client only ever sees the error's fixed message.
    pub(super) async fn sso_attempt(
        &self,
        method: &'static str,
        client: &ClientInfo,
        attempt: impl Future<Output = Result<SsoSignIn, ServiceError>>,
    ) -> Result<SsoSignIn, ServiceError> {
        let keys: Vec<String> = address_throttle_key("sso", client).into_iter().collect();
        self.check_throttle(&keys).await?;
        let ip = client.ip.map(|i| i.to_string());
        match attempt.await {
            // The session and its audit record were committed together.
            Ok(done) => Ok(done),
            Err(e) => {
                if matches!(e, ServiceError::SsoFailed(_)) {
                    self.record_failure(&keys).await?;
                }
                let reason = match &e {
                    ServiceError::SsoFailed(_) => "sso_failed",
                    ServiceError::SsoUnavailable(_) => "sso_unavailable",
                    ServiceError::SsoAccountConflict => "sso_account_conflict",
                    _ => "error",
                };
                self.audit_event("auth.sign_in", None, Some(method.into()), Outcome::Failure, Some(reason), ip).await?;
                if let ServiceError::SsoFailed(why) | ServiceError::SsoUnavailable(why) = &e {
                    tracing::info!(target: "medhub::auth", outcome = "denied", method, reason = %why, "SSO sign-in refused");
                }
                Err(e)
            }
        }
    }

    /// Opens the session of an SSO sign-in. The identity provider's sign-in counts as the
    /// second factor only when the organization says the provider enforces one *and* the
    /// sign-in shows it (`idp_mfa`); the session is then `active` with the factor just
    /// proven. Otherwise medhub's own factor follows, as after a password.
    pub(super) async fn sso_session(
        &self,
        user: &User,
        idp_mfa: bool,
        method: &'static str,
        client: &ClientInfo,
    ) -> Result<IssuedSession, ServiceError> {
        let now = self.now();
        let (state, mfa_at) = if idp_mfa {
            (SessionState::Active, Some(now))
        } else {
            (rules::after_password(false, self.mfa_enrolled(user.id).await?), None)
        };
        let issued = self.new_session(user, state, mfa_at, client, method).await?;
        tracing::info!(target: "medhub::auth", user = %user.id, session = %issued.session.id,
            state = state.as_str(), idp_mfa, method, "signed in with SSO");
        Ok(issued)
    }

    /// The user of an IdP subject: found by (issuer, subject), or created on first sign-in.
    /// The system role follows the groups at every sign-in (a member of any of
    /// `admin_groups` is an administrator); losing the administrator group ends the user's
    /// other sessions. With `role_groups`, the roles follow the groups too.
    pub(super) async fn sso_user(
        &self,
        profile: &SsoProfile,
        organization: Option<&str>,
        admin_groups: &[String],
        role_groups: &[(String, String)],
    ) -> Result<User, ServiceError> {
        let org = self.sso_org(organization).await?;
        let user = self.sso_user_inner(profile, &org, admin_groups).await?;
        self.sso_roles(&user, &profile.groups, role_groups).await?;
        Ok(user)
    }

    /// Applies the roles the provider's groups map to. Keys unknown in the user's
    /// organization's catalogue are skipped (and logged); a user in no mapped group gets the
    /// default role of their system role. A role lost ends the user's sessions, as when an
    /// administrator removes it.
    async fn sso_roles(
        &self,
        user: &User,
        groups: &[String],
        role_groups: &[(String, String)],
    ) -> Result<(), ServiceError> {
        if role_groups.is_empty() {
            return Ok(());
        }
        let known: std::collections::BTreeSet<String> =
            self.store.roles(user.org).await?.into_iter().map(|r| r.key).collect();
        let mut keys = std::collections::BTreeSet::new();
        for (group, key) in role_groups.iter().filter(|(g, _)| groups.contains(g)) {
            if known.contains(key) {
                keys.insert(key.clone());
            } else {
                tracing::warn!(target: "medhub::auth", group = %group, role = %key, "SSO group maps to an unknown role; skipped");
            }
        }
        if user.role == SystemRole::Admin {
            keys.insert(medhub_core::authz::ADMINISTRATOR.to_owned());
        }
        if keys.is_empty() {
            keys.insert(user.role.default_role_key().to_owned());
        }
        let keys: Vec<String> = keys.into_iter().collect();
        let mut before = self.store.user_roles(user.id).await?;
        before.sort();
        if before == keys {
            return Ok(());
        }
        let what = Some(format!("roles={}", keys.join(",")));
        let r = self.audit_record("sso.roles", None, what, Outcome::Success, None, None).object("user", user.id);
        let r = medhub_core::audit::AuditRecord { org: Some(user.org), ..r };
        self.store.set_user_roles(user.id, &keys, user.id, self.now(), &[r]).await?;
        if before.iter().any(|k| !keys.contains(k)) {
            self.end_user_sessions(user.id, None, "role_removed").await?;
        }
        tracing::info!(target: "medhub::auth", user = %user.id, roles = ?keys, "roles set by the identity provider's groups");
        Ok(())
    }

    /// The organization a provider signs users into: the one named in its settings, or the
    /// first one.
    async fn sso_org(&self, name: Option<&str>) -> Result<Org, ServiceError> {
        let orgs = self.store.orgs().await?;
        let found = match name {
            None => orgs.into_iter().next(),
            Some(n) => orgs.into_iter().find(|o| o.is_named(n)),
        };
        found.ok_or_else(|| {
            tracing::error!(target: "medhub::auth", organization = ?name,
                "SSO sign-in refused: the provider's organization does not exist (medhub admin org list)");
            ServiceError::SsoFailed("the organization this provider signs into does not exist".into())
        })
    }

    async fn sso_user_inner(
        &self,
        profile: &SsoProfile,
        org: &Org,
        admin_groups: &[String],
    ) -> Result<User, ServiceError> {
        let role =
            if profile.groups.iter().any(|g| admin_groups.contains(g)) { SystemRole::Admin } else { SystemRole::User };
        let (issuer, subject) = (profile.issuer.as_str(), profile.subject.as_str());
        if let Some(id) = self.store.sso_identity(issuer, subject).await? {
            return self.sso_existing(id, org, role).await;
        }
        let username = sso_username(profile.username.as_deref().unwrap_or_default())
            .ok_or_else(|| ServiceError::SsoFailed(format!("no usable username in the {}", profile.username_source)))?;
        let display_name = profile
            .display_name
            .as_deref()
            .and_then(|n| validate::display_name(n).ok())
            .unwrap_or_else(|| username.clone());
        let user = User {
            id: UserId::new_v7(),
            org: org.id,
            username,
            display_name,
            role,
            active: true,
            created_at: self.now(),
        };
        let record = UserRecord { user: user.clone(), password_hash: None, must_change_password: false };
        match self.store.create_sso_user(&record, issuer, subject, self.now()).await {
            Ok(()) => {
                tracing::info!(target: "medhub::auth", user = %user.id, role = role.as_str(), "user created at first SSO sign-in");
                Ok(user)
            }
            // A local account has this name. Linking it would let whoever controls that name
            // at the provider take the account over: refuse, and let an administrator decide.
            Err(StoreError::UsernameTaken) => {
                tracing::warn!(target: "medhub::auth", username = %user.username,
                    "SSO sign-in refused: a local account has this username");
                Err(ServiceError::SsoAccountConflict)
            }
            // Two first sign-ins of the same subject raced; the other one created the user.
            Err(StoreError::Conflict(_)) => match self.store.sso_identity(issuer, subject).await? {
                Some(id) => self.sso_existing(id, org, role).await,
                None => Err(ServiceError::SsoFailed("could not link the identity".into())),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn sso_existing(&self, id: UserId, org: &Org, role: SystemRole) -> Result<User, ServiceError> {
        let mut user = self
            .store
            .user(id)
            .await?
            .filter(|u| u.active)
            .ok_or_else(|| ServiceError::SsoFailed("the linked account is deactivated".into()))?;
        if user.org != org.id {
            // The provider was moved to another organization after this account was linked:
            // signing it in would carry it across tenants. An operator decides.
            tracing::warn!(target: "medhub::auth", user = %id,
                "SSO sign-in refused: the linked account belongs to another organization than the provider's");
            return Err(ServiceError::SsoFailed("the linked account belongs to another organization".into()));
        }
        if user.role != role {
            let what = Some(format!("system_role={}", role.as_str()));
            let r = self.audit_record("sso.roles", None, what, Outcome::Success, None, None).object("user", id);
            let r = medhub_core::audit::AuditRecord { org: Some(user.org), ..r };
            self.store.set_user_role(id, role, &[r]).await?;
            if role == SystemRole::User {
                self.end_user_sessions(id, None, "role_removed").await?;
            }
            tracing::info!(target: "medhub::auth", user = %id, role = role.as_str(), "role changed by the identity provider's groups");
            user.role = role;
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_from_the_provider_follow_medhubs_rules() {
        assert_eq!(sso_username("Alice").as_deref(), Some("alice"));
        assert_eq!(sso_username(" Alice.Smith@Example.org ").as_deref(), Some("alice.smith_example.org"));
        assert_eq!(sso_username("jürgen").as_deref(), Some("j_rgen"));
        assert_eq!(sso_username("dr who").as_deref(), Some("dr_who"));
        assert_eq!(sso_username(&"x".repeat(100)).map(|s| s.len()), Some(64));
        assert_eq!(sso_username(""), None);
        assert_eq!(sso_username("@@@"), None);
        assert_eq!(sso_username("..."), None);
    }

    #[test]
    fn return_to_is_a_relative_path_only() {
        assert_eq!(check_return_to("/conversations/1?x=2").unwrap(), "/conversations/1?x=2");
        for bad in ["https://evil.example/", "//evil.example", "/\\evil.example", "evil", "/a\nb", "/a\\b", ""] {
            assert!(check_return_to(bad).is_err(), "{bad:?}");
        }
        assert!(check_return_to(&format!("/{}", "a".repeat(600))).is_err());
    }

    #[test]
    fn the_client_secret_never_prints() {
        let c = OidcConfig::new("https://idp.example", "medhub", "hunter2-secret", "https://medhub.example/cb");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.accepted_amr, ["mfa", "otp", "hwk", "swk", "fpt", "face"]);
    }
}
