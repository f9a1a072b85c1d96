//! Administrate WebLink: guest portal tokens, and the PKCE login, callback and refresh.
//!
//! WebLink (docs/platforms.md, "Administrate WebLink") serves portals such as
//! `mycompany.administrateweblink.com`. A guest gets a portal token from the portal-auth service;
//! a user signs in at the portal's identity provider with OAuth 2.0 + PKCE (a public client: there
//! is no client secret, so the verifier is what proves the callback is ours). The IDP settings of
//! a portal (brand, client id, IDP domain) come from Administrate's host lookup service and are
//! cached per container.
//!
//! Portals are never taken freely from a request: only those in `WEBLINK_PORTALS` are served.
//! The IDP domain comes from a third party (the host lookup) and is where the code, the PKCE
//! verifier and later the refresh tokens are sent, so it must be a host name (no IP literal, no
//! `localhost`, no port or userinfo) inside the operator's allow-list `WEBLINK_IDP_DOMAINS`; the
//! login pins it (and the client id) in the flow state and the session, and the callback and
//! refreshes use what was pinned, never a second lookup.
//!
//! - `POST /weblink/guest-token` `{"portal"}` → `{"portal_token", "expires_at"}`: the portal
//!   token cached per container until shortly before it expires (one fetch per portal however
//!   many callers), each client (source IP) limited to `WEBLINK_GUEST_REQUESTS_PER_MINUTE`.
//! - `GET /weblink/login?portal=` → verifier and S256 challenge, a nonce, one-time state
//!   (verifier, nonce, IDP domain, client id) bound to the browser, redirect to the IDP's
//!   authorization endpoint with `scope` (`WEBLINK_SCOPES`, `openid` included) and
//!   `prompt` (`WEBLINK_PROMPT`, `consent`: what `offline_access` needs).
//!
//! The IDP's authorization, token and key endpoints come from its metadata
//! (`https://<domain>/.well-known/openid-configuration`, OpenID Connect Discovery, cached like
//! the keys; its issuer must be an allowed one) unless `WEBLINK_DISCOVERY=false`, in which case
//! they are `https://<domain>/authorize`, `/token` and `WEBLINK_JWKS_URL`; settings override
//! single endpoints either way.
//! - `GET /weblink/callback?code&state` → state consumed once, code exchanged with the
//!   verifier at the pinned IDP, id_token verified (its `nonce` the state's), session stored
//!   with its tokens sealed, session cookie set.
//! - `POST /weblink/refresh` (session cookie) → a fresh access token from the session's IDP,
//!   refreshed once across containers by the shared machinery.

use crate::cache::{Cache, Fetched};
use crate::config::{ConfigError, Vars};
use crate::context::{Deps, Platform};
use crate::crypto;
use crate::error::{Error, Reason, Result};
use crate::flow::{self, CookieSpec};
use crate::http::PlatformCall as _;
use crate::oidc::{self, Discovery, Expect, Jwks};
use crate::refresh::{self, Grant, RefreshError, Refresher, SealedTokens};
use crate::store::{Condition, Key, Record, Write, now};
use crate::web::{self, Params};
use base64::Engine as _;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The platform's name: its store partitions, its routes.
pub const PLATFORM: &str = "weblink";
const STATE_COOKIE: CookieSpec = flow::state_cookie("gh-weblink-state");
const SESSION_SECONDS: i64 = 30 * 24 * 3600;
const SESSION_COOKIE: CookieSpec = CookieSpec {
    name: "gh-weblink-session",
    same_site: cookie::SameSite::Lax,
    max_age: SESSION_SECONDS,
};
/// How long a portal's IDP settings are cached.
const LOOKUP_TTL: Duration = Duration::from_secs(600);
/// A guest portal token lives an hour.
const GUEST_TOKEN_SECONDS: i64 = 3600;
/// A cached portal token is handed out only while it has more than this many seconds left, so
/// that a guest always gets one it can use for a while.
const GUEST_TOKEN_MARGIN: i64 = 300;
/// Past this many tracked clients, the limiter forgets those whose budget is full again (idle
/// clients), so its memory follows the clients of the last minute.
const LIMITER_MAX_CLIENTS: usize = 10_000;
/// The default of `WEBLINK_IDP_DOMAINS`: Administrate's identity service and its own zone.
pub const DEFAULT_IDP_DOMAINS: &str = "identity.getadministrate.com,*.getadministrate.com";
/// The characters RFC 7636 allows in a verifier.
const VERIFIER_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

/// How the token endpoint is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A JSON body (the document).
    Json,
    /// A form body.
    Form,
}

/// WebLink settings (`WEBLINK_*` variables).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WEBLINK_PORTALS`: the portals the app serves, comma-separated (required to serve any).
    pub portals: Vec<String>,
    /// `WEBLINK_GUEST_URL` (default `https://portal-auth.administratehq.com/portal/guest`).
    pub guest_url: String,
    /// `WEBLINK_HOST_LOOKUP_URL` (default `https://host-lookup.getadministrate.com/portal_config`).
    pub host_lookup_url: String,
    /// `WEBLINK_API_BASE` (default `https://weblink-api.administratehq.com`): the WebLink API
    /// the proxy forwards a session's calls to (`/graphql` below it), with the session's token
    /// and its portal as `weblink-portal`.
    pub api_base: String,
    /// `WEBLINK_IDP_BASE`: the IDP's base URL, `{domain}` standing for the looked-up domain
    /// (default `https://{domain}`).
    pub idp_base: String,
    /// `WEBLINK_ISSUERS` (default `https://identity.getadministrate.com/`, trailing slash).
    pub issuers: Vec<String>,
    /// `WEBLINK_AUDIENCES`: allowed `aud` besides the portal's client id (default `weblink2ui`).
    pub audiences: Vec<String>,
    /// `WEBLINK_DISCOVERY` (default `true`): take the authorization, token and key endpoints
    /// from the metadata of the IDP (`<IDP base>/.well-known/openid-configuration`, the IDP base
    /// being `https://<idp domain>`), whose `issuer` must be one of [`Settings::issuers`], and
    /// whose authorization and token endpoints must be on the IDP's own origin or a host inside
    /// `WEBLINK_IDP_DOMAINS`. `false`: `<IDP base>/authorize`, `<IDP base>/token` and
    /// [`Settings::jwks_url`], no metadata fetch.
    pub discovery: bool,
    /// `WEBLINK_AUTHORIZE_URL`: overrides the authorization endpoint, with or without
    /// discovery; `{domain}` stands for the IDP domain.
    pub authorize_url: Option<String>,
    /// `WEBLINK_TOKEN_URL`: overrides the token endpoint likewise.
    pub token_url: Option<String>,
    /// `WEBLINK_JWKS_URL`: the signing keys without discovery (default
    /// `https://identity.getadministrate.com/.well-known/jwks.json`); set, it overrides the
    /// metadata's `jwks_uri` (`jwks_url_set`).
    pub jwks_url: String,
    /// Whether `WEBLINK_JWKS_URL` was set.
    pub jwks_url_set: bool,
    /// `WEBLINK_TOKEN_ENCODING`: `json` (default) or `form`.
    pub token_encoding: Encoding,
    /// `WEBLINK_CLOCK_SKEW_SECONDS` (default 60).
    pub skew: u64,
    /// `WEBLINK_SCOPES`: the authorization request's scope, space-separated (default
    /// `openid profile email offline_access`). It must include `openid`: an OpenID provider
    /// refuses an authorization request without it, and the callback needs the id_token.
    pub scope: String,
    /// `WEBLINK_PROMPT`: the authorization request's `prompt` (default `consent`; `omit` sends
    /// none). The default scope asks `offline_access`, and an OpenID provider grants it (the
    /// refresh token `POST /weblink/refresh` needs) only with consent: without it a standards
    /// OP drops the scope, and the session cannot be refreshed.
    pub prompt: Option<String>,
    /// `WEBLINK_IDP_DOMAINS`: where a portal's IDP may be, comma-separated exact hosts or
    /// `*.suffix` (any host under the suffix, not the suffix itself); default
    /// [`DEFAULT_IDP_DOMAINS`].
    pub idp_domains: Vec<DomainPattern>,
    /// `WEBLINK_GUEST_REQUESTS_PER_MINUTE`: guest-token requests a client (source IP) may make
    /// per minute, in bursts of as many (default 30; 0: no limit).
    pub guest_per_minute: u32,
}

/// One entry of `WEBLINK_IDP_DOMAINS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// This host exactly.
    Exact(String),
    /// Any host ending in `.<suffix>`: at least one label more than the suffix.
    Under(String),
}

impl DomainPattern {
    /// An entry: `host` or `*.suffix`, each a host name as [`idp_host`] accepts it; a suffix
    /// needs two labels at least, so that `*.com` cannot allow the whole internet.
    pub fn parse(entry: &str) -> Option<Self> {
        match entry.strip_prefix("*.") {
            Some(suffix) => idp_host(suffix)
                .filter(|s| s.contains('.'))
                .map(Self::Under),
            None => idp_host(entry).map(Self::Exact),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => host == h,
            Self::Under(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        }
    }
}

impl Settings {
    /// Reads the settings.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let list = |name: &str, default: &str| -> Vec<String> {
            vars.get_or(name, default)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let url = |name: &str, default: &str| -> Result<String, ConfigError> {
            Ok(vars
                .url(name, default)?
                .as_str()
                .trim_end_matches('/')
                .to_owned())
        };
        let idp_base = vars
            .get_or("WEBLINK_IDP_BASE", "https://{domain}")
            .to_owned();
        if !idp_base.contains("{domain}") {
            return Err(ConfigError {
                name: "WEBLINK_IDP_BASE".into(),
                problem: "must contain {domain}".into(),
            });
        }
        // An endpoint override may name the IDP domain as `{domain}`: checked as the URL it is
        // for one domain.
        let endpoint = |name: &str| -> Result<Option<String>, ConfigError> {
            let Some(value) = vars.get(name) else {
                return Ok(None);
            };
            let value = value.trim();
            let example = value.replace("{domain}", "idp.example.com");
            match url::Url::parse(&example) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => {
                    Ok(Some(value.to_owned()))
                }
                _ => Err(ConfigError {
                    name: name.into(),
                    problem: "must be an http(s) URL (`{domain}` standing for the IDP domain)"
                        .into(),
                }),
            }
        };
        Ok(Self {
            portals: list("WEBLINK_PORTALS", ""),
            guest_url: url(
                "WEBLINK_GUEST_URL",
                "https://portal-auth.administratehq.com/portal/guest",
            )?,
            host_lookup_url: url(
                "WEBLINK_HOST_LOOKUP_URL",
                "https://host-lookup.getadministrate.com/portal_config",
            )?,
            api_base: url("WEBLINK_API_BASE", "https://weblink-api.administratehq.com")?,
            idp_base: idp_base.trim_end_matches('/').to_owned(),
            issuers: list("WEBLINK_ISSUERS", "https://identity.getadministrate.com/"),
            audiences: list("WEBLINK_AUDIENCES", "weblink2ui"),
            discovery: vars.flag("WEBLINK_DISCOVERY", true)?,
            authorize_url: endpoint("WEBLINK_AUTHORIZE_URL")?,
            token_url: endpoint("WEBLINK_TOKEN_URL")?,
            jwks_url: url(
                "WEBLINK_JWKS_URL",
                "https://identity.getadministrate.com/.well-known/jwks.json",
            )?,
            jwks_url_set: vars.get("WEBLINK_JWKS_URL").is_some(),
            token_encoding: match vars.get_or("WEBLINK_TOKEN_ENCODING", "json") {
                "json" => Encoding::Json,
                "form" => Encoding::Form,
                _ => {
                    return Err(ConfigError {
                        name: "WEBLINK_TOKEN_ENCODING".into(),
                        problem: "must be `json` or `form`".into(),
                    });
                }
            },
            skew: vars.seconds("WEBLINK_CLOCK_SKEW_SECONDS", 60)?.as_secs(),
            scope: scope(vars)?,
            prompt: oidc::prompt_setting(vars, "WEBLINK_PROMPT")?,
            idp_domains: idp_domains(vars)?,
            guest_per_minute: vars
                .get_or("WEBLINK_GUEST_REQUESTS_PER_MINUTE", "30")
                .trim()
                .parse()
                .map_err(|_| ConfigError {
                    name: "WEBLINK_GUEST_REQUESTS_PER_MINUTE".into(),
                    problem: "must be a whole number (0: no limit)".into(),
                })?,
        })
    }
}

/// `WEBLINK_SCOPES`, normalised to single spaces; it must include `openid`.
fn scope(vars: &Vars) -> Result<String, ConfigError> {
    let scopes: Vec<&str> = vars
        .get_or("WEBLINK_SCOPES", "openid profile email offline_access")
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .collect();
    if !scopes.contains(&"openid") {
        return Err(ConfigError {
            name: "WEBLINK_SCOPES".into(),
            problem: "must include `openid` (the sign-in is OpenID Connect)".into(),
        });
    }
    Ok(scopes.join(" "))
}

/// `WEBLINK_IDP_DOMAINS`: every entry must be valid (a typo must not silently allow nothing, or
/// more than meant), and the list must not be empty.
fn idp_domains(vars: &Vars) -> Result<Vec<DomainPattern>, ConfigError> {
    let problem = |problem: String| ConfigError {
        name: "WEBLINK_IDP_DOMAINS".into(),
        problem,
    };
    let patterns = vars
        .get_or("WEBLINK_IDP_DOMAINS", DEFAULT_IDP_DOMAINS)
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            DomainPattern::parse(e).ok_or_else(|| {
                problem(format!(
                    "`{}` is neither a host name nor `*.` and a domain of two labels or more",
                    web::printable(e)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if patterns.is_empty() {
        return Err(problem("must name at least one domain".into()));
    }
    Ok(patterns)
}

/// `domain`, lower-case, if it is a plain DNS host name. The URL standard's host parser
/// (`url::Host::parse`, what the HTTP client itself applies to `https://{domain}/token`) decides
/// what it is, and only [`url::Host::Domain`] is accepted: an IPv4 literal in any of its
/// spellings (`127.1`, `0x7f.1`, `2130706433`, percent-encoded), an IPv6 literal, or text with a
/// port, userinfo or path (`:`, `@`, `/` are forbidden in a host) is refused by the parse. The
/// domain it gives must be the input as it was (an internationalised name comes back as
/// punycode, a percent-escape decoded: neither is what the lookup meant), of letters, digits
/// and hyphens in non-empty labels (the parser lets through `_`, `*`, an empty label or a
/// trailing dot, which are not host names), of two labels at least, and not `localhost`. A URL
/// built from it therefore names that host and nothing else.
pub fn idp_host(domain: &str) -> Option<String> {
    let lower = domain.to_ascii_lowercase();
    let url::Host::Domain(host) = url::Host::parse(&lower).ok()? else {
        return None;
    };
    if host != lower || !is_host_name(&host) || !host.contains('.') {
        return None;
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return None;
    }
    Some(host)
}

/// A portal's IDP settings, as the host lookup service gives them.
#[derive(Debug, Clone, Deserialize)]
pub struct PortalConfig {
    /// The portal's brand id.
    pub brand: String,
    /// The IDP.
    pub idp: Idp,
}

/// A portal's identity provider.
#[derive(Debug, Clone, Deserialize)]
pub struct Idp {
    /// The OAuth client id of the portal's front end.
    pub client_id: String,
    /// The IDP's host name.
    pub domain: String,
}

/// What asking Administrate for a portal token came to, cached per portal.
#[derive(Clone)]
enum GuestOutcome {
    /// A token, valid until `expires_at` (unix seconds).
    Token {
        token: SecretString,
        expires_at: i64,
    },
    /// Administrate rate-limits the portal until `until`: asking again before would only
    /// prolong it.
    Locked { until: i64 },
}

impl GuestOutcome {
    /// How long, from `now`, the outcome may be handed out: a token while it has more than
    /// the margin left, a lock while it lasts.
    fn usable_for(&self, now: i64) -> Duration {
        let left = match self {
            Self::Token { expires_at, .. } => expires_at - GUEST_TOKEN_MARGIN - now,
            Self::Locked { until } => until - now,
        };
        Duration::from_secs(u64::try_from(left).unwrap_or(0))
    }
}

/// Token buckets per client: `per_minute` requests a minute, in bursts of as many.
struct Limiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    /// Spends one request of `client`'s budget, or says in how many seconds one is available.
    fn spend(&self, client: &str) -> std::result::Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = relock(&self.buckets);
        if buckets.len() >= LIMITER_MAX_CLIENTS && !buckets.contains_key(client) {
            buckets
                .retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < capacity);
        }
        let (tokens, at) = buckets.entry(client.to_owned()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - *tokens) / rate).ceil() as u64).max(1))
        }
    }
}

/// A std mutex's guard even if a panicking holder poisoned it: the maps it guards stay
/// consistent at every step, so what a panic left behind is still usable.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One IDP's metadata and the signing keys it names, when discovery is on.
struct DiscoveredIdp {
    discovery: Arc<Discovery>,
    jwks: Jwks,
}

/// WebLink's per-container state: settings, the IDP keys, cached portal lookups and tokens,
/// and the guest-token limiter.
pub struct Weblink {
    /// What every platform shares.
    pub deps: Arc<Deps>,
    /// The settings.
    pub settings: Settings,
    /// The IDP's signing keys: those of `WEBLINK_JWKS_URL`, used without discovery or when it is
    /// set.
    pub jwks: Jwks,
    /// With discovery, by IDP domain: each IDP's metadata and keys, each cached by the shared
    /// cache (the domains come from lookups of allowed portals, inside `WEBLINK_IDP_DOMAINS`, so
    /// this stays small). The std mutex is held only to find or add a domain's entry.
    discovered: Mutex<HashMap<String, Arc<DiscoveredIdp>>>,
    /// Host lookups by portal, and portal tokens by portal: only allowed portals are ever
    /// keys, so both stay small. Neither holds a lock across the call to Administrate, so one
    /// slow portal holds up only the callers of that portal.
    lookups: Cache<String, PortalConfig, Error>,
    guest_tokens: Cache<String, GuestOutcome, Error>,
    limiter: Limiter,
}

crate::context::derefs_to_deps!(Weblink);

impl Platform for Weblink {
    fn build(deps: Arc<Deps>, vars: &Vars) -> Result<Self, ConfigError> {
        let settings = Settings::from_vars(vars)?;
        Ok(Self {
            deps,
            jwks: Jwks::new(settings.jwks_url.clone()),
            limiter: Limiter {
                per_minute: settings.guest_per_minute,
                buckets: Mutex::new(HashMap::new()),
            },
            settings,
            lookups: Cache::new(),
            guest_tokens: Cache::new(),
            discovered: Mutex::new(HashMap::new()),
        })
    }
}

impl Weblink {
    /// The metadata and keys of the IDP at `domain` (an allowed host), when discovery is on.
    fn discovered(&self, domain: &str) -> Option<Arc<DiscoveredIdp>> {
        if !self.settings.discovery {
            return None;
        }
        let mut map = relock(&self.discovered);
        let idp = map.entry(domain.to_owned()).or_insert_with(|| {
            let discovery = Arc::new(Discovery::new(
                &self.idp_url(domain, ""),
                self.settings.issuers.clone(),
            ));
            Arc::new(DiscoveredIdp {
                jwks: Jwks::discovered(discovery.clone()),
                discovery,
            })
        });
        Some(idp.clone())
    }

    /// The keys that verify the id_tokens of the IDP at `domain`: `WEBLINK_JWKS_URL`'s when it is
    /// set or discovery is off, else those the IDP's metadata names.
    fn jwks_of(&self, domain: &str) -> Option<Arc<DiscoveredIdp>> {
        self.discovered(domain)
            .filter(|_| !self.settings.jwks_url_set)
    }

    /// The IDP's endpoint: the override (`WEBLINK_AUTHORIZE_URL`, `WEBLINK_TOKEN_URL`), else the
    /// metadata's, else `path` under the IDP base.
    async fn endpoint(
        &self,
        http: &reqwest::Client,
        domain: &str,
        which: Endpoint,
    ) -> Result<String> {
        let (configured, path) = match which {
            Endpoint::Authorize => (&self.settings.authorize_url, "/authorize"),
            Endpoint::Token => (&self.settings.token_url, "/token"),
        };
        if let Some(url) = configured {
            return Ok(url.replace("{domain}", domain));
        }
        let Some(idp) = self.discovered(domain) else {
            return Ok(self.idp_url(domain, path));
        };
        let metadata = idp.discovery.metadata(http).await?;
        let url = match which {
            Endpoint::Authorize => &metadata.authorization_endpoint,
            Endpoint::Token => &metadata.token_endpoint,
        };
        self.check_discovered(domain, url)?;
        Ok(url.clone())
    }

    /// A discovered endpoint receives codes, verifiers and refresh tokens, so it must be on the
    /// IDP's own origin (where the metadata was read), or an https URL of a host inside
    /// `WEBLINK_IDP_DOMAINS` with no port or userinfo: metadata cannot send them elsewhere.
    fn check_discovered(&self, domain: &str, endpoint: &str) -> Result<()> {
        let refused = || {
            Error::Upstream(format!(
                "the metadata of the portal's identity provider names an endpoint (`{}`) outside \
                 its origin and WEBLINK_IDP_DOMAINS",
                web::printable(endpoint)
            ))
        };
        let url = url::Url::parse(endpoint).map_err(|_| refused())?;
        let base = url::Url::parse(&self.idp_url(domain, "/")).map_err(|_| refused())?;
        if url.origin() == base.origin() && url.username().is_empty() && url.password().is_none() {
            return Ok(());
        }
        let allowed = url.scheme() == "https"
            && url.port().is_none()
            && url.username().is_empty()
            && url.password().is_none()
            && url.host_str().is_some_and(|h| self.idp_domain(h).is_ok());
        if allowed { Ok(()) } else { Err(refused()) }
    }

    /// `domain` as a host inside `WEBLINK_IDP_DOMAINS`, or why not. Checked when the lookup
    /// answers, and again where a pinned domain is used (the callback, refreshes), so that
    /// narrowing the list takes effect at once.
    pub fn idp_domain(&self, domain: &str) -> Result<String> {
        idp_host(domain)
            .filter(|host| self.settings.idp_domains.iter().any(|p| p.matches(host)))
            .ok_or_else(|| {
                Error::Upstream(format!(
                    "Administrate's host lookup gave an IDP domain (`{}`) that is not a host \
                     name allowed by WEBLINK_IDP_DOMAINS",
                    web::printable(domain)
                ))
            })
    }

    /// Drops the cached portal lookups, as a fresh container starts without them: the next
    /// login asks the host lookup again.
    pub async fn forget_lookups(&self) {
        self.lookups.clear();
    }

    fn allowed(&self, portal: &str) -> Result<()> {
        if self
            .settings
            .portals
            .iter()
            .any(|p| p.eq_ignore_ascii_case(portal))
        {
            Ok(())
        } else {
            Err(Error::refused(
                Reason::NotAllowed,
                format!(
                    "`{}` is not a portal this app serves",
                    web::printable(portal)
                ),
            ))
        }
    }

    fn idp_url(&self, domain: &str, path: &str) -> String {
        format!(
            "{}{path}",
            self.settings.idp_base.replace("{domain}", domain)
        )
    }
}

/// The IDP endpoints the flows call.
#[derive(Clone, Copy)]
enum Endpoint {
    Authorize,
    Token,
}

/// Whether a domain the URL parser accepted is a DNS host name (RFC 1123): letters, digits and
/// hyphens in non-empty labels of at most 63, at most 253 in all.
fn is_host_name(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The S256 code challenge of a verifier: `BASE64URL(SHA256(verifier))`.
pub fn code_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crypto::sha256(verifier.as_bytes()))
}

/// A fresh PKCE verifier: 64 characters of RFC 7636's unreserved set, from the CSPRNG.
pub fn new_verifier() -> Result<String> {
    Ok(crypto::random_string(VERIFIER_ALPHABET, 64)?)
}

/// The portal's IDP settings: cached per container for ten minutes (a failed lookup is not
/// kept), one lookup per portal at a time.
pub async fn portal_config(cx: &Weblink, portal: &str) -> Result<PortalConfig> {
    let w = cx;
    let lookup = async {
        let mut url = url::Url::parse(&w.settings.host_lookup_url)
            .map_err(|_| Error::Internal("bad host lookup URL".into()))?;
        url.query_pairs_mut().append_pair("host", portal);
        let resp = cx
            .http
            .client()?
            .get(url)
            .send_to(PLATFORM, "host_lookup")
            .await
            .map_err(|e| {
                Error::Upstream(format!(
                    "Administrate's host lookup {}",
                    crate::http::describe(&e)
                ))
            })?;
        if resp.status().as_u16() == 404 {
            return Err(Error::refused(
                Reason::UnknownTenant,
                "Administrate does not know this portal",
            ));
        }
        if !resp.status().is_success() {
            return Err(Error::Upstream(format!(
                "Administrate's host lookup answered {}",
                resp.status().as_u16()
            )));
        }
        let config: PortalConfig = resp.json().await.map_err(|_| {
            Error::Upstream("Administrate's host lookup answered unreadably".into())
        })?;
        let mut config = config;
        config.idp.domain = w.idp_domain(&config.idp.domain)?;
        Ok::<_, Error>(config)
    };
    w.lookups
        .get(&portal.to_owned(), |_| async {
            match lookup.await {
                Ok(config) => Fetched::value(config, LOOKUP_TTL),
                Err(e) => Fetched::failed(e),
            }
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// Guest tokens

/// A 429 with `Retry-After: wait` and a JSON body saying why.
fn too_many_requests(message: &str, wait: u64) -> Response<Body> {
    let mut resp = web::json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"error": "Too Many Requests", "message": message, "retry_after": wait}),
    );
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Who is asking, for the per-client limit: API Gateway's source IP. Requests that carry none
/// (the local server, hand-made events) are one client together.
fn client_of(req: &Request) -> String {
    req.extensions()
        .get::<crate::context::RequestInfo>()
        .and_then(|info| info.source_ip.clone())
        .unwrap_or_default()
}

/// `POST /weblink/guest-token`.
pub async fn guest_token(cx: &Weblink, req: &Request) -> Result<Response<Body>> {
    web::require_content_type(req, "application/json")?;
    let body: Map<String, Value> = web::json_body(
        web::body(req, 4096)?,
        "the body must be a JSON object `{\"portal\": ...}`",
    )?;
    let portal = body
        .get("portal")
        .or_else(|| body.get("domain"))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadRequest("`portal` is missing".into()))?;
    cx.allowed(portal)?;
    // The requests that can reach Administrate count against the client's budget; those refused
    // above cost nothing upstream and are answered as what they are.
    if let Err(wait) = cx.limiter.spend(&client_of(req)) {
        return Ok(too_many_requests(
            "too many guest-token requests from this client; retry later",
            wait,
        ));
    }
    let portal = portal.to_ascii_lowercase();
    match cached_guest_token(cx, &portal).await? {
        GuestOutcome::Token { token, expires_at } => Ok(web::json(
            StatusCode::OK,
            &json!({ "portal_token": token.expose_secret(), "expires_at": expires_at }),
        )),
        GuestOutcome::Locked { until } => Ok(too_many_requests(
            "Administrate is rate limiting guest tokens for this portal",
            u64::try_from(until - now()).unwrap_or(1).max(1),
        )),
    }
}

/// The portal's token (or Administrate's lock) from the cache, fetched once when missing or
/// stale: callers of one portal share its one fetch, other portals are never held up, and a
/// failed fetch is not kept. A freshly fetched outcome is used as it is.
async fn cached_guest_token(cx: &Weblink, portal: &str) -> Result<GuestOutcome> {
    cx.guest_tokens
        .get(&portal.to_owned(), |_| async {
            match fetch_guest_token(cx, portal).await {
                Ok(outcome) => {
                    let ttl = outcome.usable_for(now());
                    Fetched::value(outcome, ttl)
                }
                Err(e) => Fetched::failed(e),
            }
        })
        .await
}

/// Asks Administrate's portal auth for a token of `portal`.
async fn fetch_guest_token(cx: &Weblink, portal: &str) -> Result<GuestOutcome> {
    let resp = cx
        .http
        .client()?
        .post(&cx.settings.guest_url)
        .json(&json!({ "domain": portal }))
        .send_to(PLATFORM, "guest_token")
        .await
        .map_err(|e| {
            Error::Upstream(format!(
                "Administrate's portal auth {}",
                crate::http::describe(&e)
            ))
        })?;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    match status {
        200..=299 => {
            let token = answer
                .get("portal_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Error::Upstream("Administrate's portal auth gave no token".into())
                })?;
            Ok(GuestOutcome::Token {
                token: SecretString::from(token.to_owned()),
                expires_at: now() + GUEST_TOKEN_SECONDS,
            })
        }
        404 => Err(Error::refused(
            Reason::UnknownTenant,
            "Administrate does not know this portal",
        )),
        403 => {
            let wait = answer
                .get("lock_duration")
                .and_then(Value::as_i64)
                .unwrap_or(60)
                .clamp(1, 24 * 3600);
            Ok(GuestOutcome::Locked {
                until: now() + wait,
            })
        }
        _ => Err(Error::Upstream(format!(
            "Administrate's portal auth answered {status}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Login, callback, refresh

/// `GET /weblink/login?portal=`, or `?link=` (a connect link: a session for one of the app's
/// users, on the link's portal or the first of `WEBLINK_PORTALS`; consumed with the storing of
/// the flow's state).
pub async fn login(cx: &Weblink, req: &Request) -> Result<Response<Body>> {
    let q = Params::from_query(req)?;
    let link = match q.get("link") {
        Some(id) => Some(crate::connect::read_link(cx, PLATFORM, id).await?),
        None => None,
    };
    let portal = match (&link, q.get("portal")) {
        (Some((_, l)), _) if l.portal.is_some() => l.portal.clone().unwrap_or_default(),
        (_, Some(p)) => p.to_owned(),
        (Some(_), None) => cx.settings.portals.first().cloned().ok_or_else(|| {
            Error::refused(Reason::NotAllowed, "no portal is served (WEBLINK_PORTALS)")
        })?,
        (None, None) => q.require("portal")?.to_owned(),
    }
    .to_ascii_lowercase();
    cx.allowed(&portal)?;
    let config = portal_config(cx, &portal).await?;
    // Everything that can fail comes before the state is stored: a refusal stores nothing.
    let keys = cx.secrets.app_keys().await?;
    let redirect_uri = cx.public_url(req, "/weblink/callback")?;
    let authorize = cx
        .endpoint(cx.http.client()?, &config.idp.domain, Endpoint::Authorize)
        .await?;
    let mut url = url::Url::parse(&authorize).map_err(|_| {
        Error::Upstream(
            "the URL of Administrate's sign-in service for the portal is invalid".into(),
        )
    })?;
    let verifier = new_verifier()?;
    let nonce = crypto::random_token(32)?;
    // What the callback uses: the IDP and client pinned here, never looked up again.
    let data = FlowState {
        portal: portal.clone(),
        verifier: verifier.clone(),
        nonce: nonce.clone(),
        idp_domain: config.idp.domain.clone(),
        client_id: config.idp.client_id.clone(),
        end_user: link.as_ref().map(|(_, l)| l.end_user.clone()),
        return_to: link.as_ref().map(|(_, l)| l.return_to.clone()),
    };
    let state = crate::connect::begin_flow(cx, PLATFORM, data.to_attrs()?, link.as_ref()).await?;
    url.query_pairs_mut()
        .append_pair("brand", &config.brand)
        .append_pair("client_id", &config.idp.client_id)
        .append_pair("code_challenge", &code_challenge(&verifier))
        .append_pair("code_challenge_method", "S256")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", &cx.settings.scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce);
    if let Some(prompt) = &cx.settings.prompt {
        url.query_pairs_mut().append_pair("prompt", prompt);
    }
    let mut resp = web::redirect(url.as_str())?;
    web::set_cookie(&mut resp, &STATE_COOKIE.set(cx, &keys, &state))?;
    Ok(resp)
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: SecretString,
    id_token: Option<String>,
    expires_in: Option<i64>,
    refresh_token: Option<SecretString>,
}

async fn token_call(
    cx: &Weblink,
    domain: &str,
    fields: &[(&str, &str)],
) -> std::result::Result<TokenReply, RefreshError> {
    let url = cx
        .endpoint(cx.http.client()?, domain, Endpoint::Token)
        .await
        .map_err(RefreshError::Failed)?;
    let request = cx.http.client()?.post(&url);
    let request = match cx.settings.token_encoding {
        Encoding::Json => {
            let body: Map<String, Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect();
            request.json(&body)
        }
        Encoding::Form => request.form(fields),
    };
    refresh::token_request(
        request,
        PLATFORM,
        "Administrate's sign-in service for the portal",
    )
    .await
}

/// A session's random id is its partition: sessions are only ever read by id.
pub fn session_key(session_id: &str) -> Key {
    Key::single(&format!("session#{PLATFORM}"), session_id)
}

/// The one-time state of a sign-in: what the callback needs, pinned at login. Each is empty
/// in a state an older version stored without it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FlowState {
    #[serde(default)]
    portal: String,
    /// The PKCE verifier.
    #[serde(default)]
    verifier: String,
    #[serde(default)]
    nonce: String,
    /// The IDP the code goes to.
    #[serde(default)]
    idp_domain: String,
    #[serde(default)]
    client_id: String,
    /// Started by a connect link: the app's user the session is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_user: Option<String>,
    /// Started by a connect link: where the browser goes afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    return_to: Option<String>,
}

impl Record for FlowState {
    const NAME: &'static str = "WebLink flow state";
}

/// A stored session (`session#weblink` / `<session id>`, expiring): who signed in to which
/// portal, the IDP and client its tokens are refreshed at (pinned at sign-in), and the tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Session {
    /// The portal signed in to.
    #[serde(default)]
    pub portal: Option<String>,
    /// The id_token's `sub`.
    #[serde(default)]
    pub sub: String,
    /// The id_token's `email`.
    #[serde(default)]
    pub email: String,
    /// Given and family name, as the id_token gave them.
    #[serde(default)]
    pub name: String,
    /// The IDP that issued the tokens.
    #[serde(default)]
    pub idp_domain: String,
    /// The portal's client id at that IDP.
    #[serde(default)]
    pub client_id: String,
    /// The tokens, sealed to this item.
    #[serde(flatten)]
    pub tokens: SealedTokens,
    /// What every connection carries (end user, status, times, index attributes).
    #[serde(flatten)]
    pub connection: crate::connection::Common,
}

impl Record for Session {
    const NAME: &'static str = "WebLink session";
}

/// `GET /weblink/callback?code&state`. Started by a connect link, the browser goes back to
/// the link's `return_to` with the outcome (the session's id, or the reason it failed), the
/// session cookie set as on the page otherwise shown.
pub async fn callback(cx: &Weblink, req: &Request) -> Result<Response<Body>> {
    // Whether this flow came from a link: a read of this browser's state, which the sign-in
    // below reads (and consumes) again.
    let return_to = match Params::from_query(req) {
        Ok(q) => match flow::read_bound(cx, &STATE_COOKIE, req, PLATFORM, q.get("state")).await {
            Ok(state) => state.record::<FlowState>().ok().and_then(|f| f.return_to),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let Some(return_to) = return_to else {
        return signed_in(cx, req).await.map(|(resp, _)| resp);
    };
    let (location, cookies) = match signed_in(cx, req).await {
        Ok((resp, session_id)) => (
            crate::connect::outcome_url(&return_to, Ok((PLATFORM, &session_id))),
            resp.headers()
                .get_all(lambda_http::http::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect::<Vec<_>>(),
        ),
        Err(e) => {
            tracing::warn!(status = e.status().as_u16(), error = %e, "weblink linked sign-in refused");
            (
                crate::connect::outcome_url(&return_to, Err(e.code())),
                vec![STATE_COOKIE.clear(cx)],
            )
        }
    };
    let mut resp = web::redirect(&location)?;
    for cookie in cookies {
        web::set_cookie(&mut resp, &cookie)?;
    }
    Ok(resp)
}

/// The sign-in completed: the page, and the new session's id.
async fn signed_in(cx: &Weblink, req: &Request) -> Result<(Response<Body>, String)> {
    let q = Params::from_query(req)?;
    if let Some(error) = q.get("error") {
        return Err(Error::refused(
            Reason::PlatformRefused,
            format!(
                "the sign-in ended with `{}`; start again",
                web::printable(error)
            ),
        ));
    }
    let code = q.require("code")?;
    let state_id = q.require("state")?;
    let state = flow::read_bound(cx, &STATE_COOKIE, req, PLATFORM, Some(state_id)).await?;
    let keys = cx.secrets.app_keys().await?;
    // A state that does not decode is as unusable as one that lacks a field.
    let FlowState {
        portal,
        verifier,
        nonce,
        idp_domain: pinned,
        client_id,
        end_user,
        return_to,
    } = state.record::<FlowState>().unwrap_or_default();
    if [&portal, &verifier, &nonce, &client_id, &pinned]
        .iter()
        .any(|v| v.is_empty())
    {
        return Err(Error::BadRequest(
            "this sign-in was started by an older version of the app; start again".into(),
        ));
    }
    // Pinned at login; checked again so that a narrowed allow-list holds for flows under way.
    let domain = cx.idp_domain(&pinned)?;
    let redirect_uri = cx.public_url(req, "/weblink/callback")?;
    let reply = token_call(
        cx,
        &domain,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", &client_id),
            ("code_verifier", &verifier),
            ("redirect_uri", &redirect_uri),
        ],
    )
    .await
    .map_err(|e| match e {
        RefreshError::InvalidGrant => Error::refused(
            Reason::PlatformRefused,
            "the portal's sign-in service refused the code; sign in again",
        ),
        RefreshError::Failed(e) | RefreshError::TimedOut(e) => e,
    })?;
    let id_token = reply.id_token.as_deref().ok_or_else(|| {
        Error::Upstream("Administrate's sign-in service for the portal returned no id_token".into())
    })?;
    let s = &cx.settings;
    let mut audiences = s.audiences.clone();
    audiences.push(client_id.clone());
    // The pinned IDP's keys (discovered), or those configured.
    let discovered = cx.jwks_of(&domain);
    let jwks = discovered.as_ref().map_or(&cx.jwks, |idp| &idp.jwks);
    let claims = oidc::verify_id_token(
        cx.http.client()?,
        jwks,
        id_token,
        &Expect {
            issuers: &s.issuers,
            audiences: &audiences,
            nonce: Some(&nonce),
            code: None,
            access_token: Some(reply.access_token.expose_secret()),
            skew: s.skew,
        },
    )
    .await?;
    let claim = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = [claim("given_name"), claim("family_name")]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");

    let session_id = crypto::random_token(24)?;
    let key = session_key(&session_id);
    let grant = Grant {
        access_token: reply.access_token,
        refresh_token: reply.refresh_token,
        expires_in: reply.expires_in.unwrap_or(3600),
        extra: Vec::new(),
    };
    let session = Session {
        portal: Some(portal.clone()),
        sub: claim("sub"),
        email: claim("email"),
        name: name.clone(),
        idp_domain: domain.clone(),
        client_id: client_id.clone(),
        tokens: SealedTokens::seal(&keys, &key, &grant)?,
        connection: crate::connection::Common {
            return_to,
            ..crate::connection::Common::new(PLATFORM, &key, end_user.as_deref(), None, now())
        },
    };
    let item = session.to_item(key)?.expiring_at(now() + SESSION_SECONDS);
    // A new session (its id is fresh): the lifecycle event commits with it.
    let event =
        crate::connection::view(&item)?.event_write(crate::events::names::CONNECTION_CREATED)?;
    // The state's consumption and the session commit together.
    flow::commit(
        cx,
        &[state.consume(), Write::Put(item, Condition::Absent), event],
    )
    .await?;
    crate::metrics::count(
        crate::metrics::names::INSTALLS,
        PLATFORM,
        &[],
        &[("tenant", &portal)],
    );
    tracing::info!(portal, "weblink session started");

    let who = if name.is_empty() {
        claim("email")
    } else {
        name
    };
    let mut resp = web::html_page(
        StatusCode::OK,
        "Signed in",
        &format!(
            "<p>Signed in to <strong>{}</strong> as <strong>{}</strong> (<code>{}</code>).</p>",
            web::escape(&portal),
            web::escape(&who),
            web::escape(&claim("email"))
        ),
    );
    web::set_cookie(&mut resp, &SESSION_COOKIE.set(cx, &keys, &session_id))?;
    web::set_cookie(&mut resp, &STATE_COOKIE.clear(cx))?;
    Ok((resp, session_id))
}

/// The refresher of `session`'s tokens: at the IDP and client it was signed in with.
pub fn refresher<'a>(cx: &'a Weblink, session: &'a Session) -> impl Refresher + 'a {
    WeblinkRefresher {
        cx,
        domain: &session.idp_domain,
        client_id: &session.client_id,
    }
}

/// Refreshes WebLink tokens at the session's IDP.
pub struct WeblinkRefresher<'a> {
    cx: &'a Weblink,
    domain: &'a str,
    client_id: &'a str,
}

impl<'a> WeblinkRefresher<'a> {
    /// The refresher of `session`'s tokens: at the IDP and client pinned at its sign-in.
    pub fn for_session(cx: &'a Weblink, session: &'a Session) -> Self {
        Self {
            cx,
            domain: &session.idp_domain,
            client_id: &session.client_id,
        }
    }
}

#[async_trait::async_trait]
impl Refresher for WeblinkRefresher<'_> {
    async fn refresh(
        &self,
        refresh_token: &SecretString,
    ) -> std::result::Result<Grant, RefreshError> {
        let cx = self.cx;
        // The session's IDP, pinned at sign-in; still inside the allow-list, or no refresh token
        // is sent there.
        let domain = cx.idp_domain(self.domain).map_err(|_| {
            RefreshError::Failed(Error::refused(
                Reason::SessionMissing,
                "the session's identity provider is not allowed any more; sign in again",
            ))
        })?;
        let reply = token_call(
            cx,
            &domain,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
                ("client_id", self.client_id),
            ],
        )
        .await?;
        Ok(Grant {
            access_token: reply.access_token,
            refresh_token: reply.refresh_token,
            expires_in: reply.expires_in.unwrap_or(3600),
            extra: Vec::new(),
        })
    }
}

/// `POST /weblink/refresh`: the session's access token, fresh.
pub async fn refresh(cx: &Weblink, req: &Request) -> Result<Response<Body>> {
    let keys = cx.secrets.app_keys().await?;
    let session_id = SESSION_COOKIE
        .read(cx, &keys, req)
        .map_err(|_| Error::refused(Reason::SessionMissing, "no valid session; sign in"))?;
    let key = session_key(&session_id);
    let session: Session = cx
        .store
        .get(&key)
        .await?
        .ok_or_else(|| Error::refused(Reason::SessionMissing, "the session has ended; sign in"))?
        .record()?;
    let refresher = WeblinkRefresher {
        cx,
        domain: &session.idp_domain,
        client_id: &session.client_id,
    };
    let item = refresh::fresh_item(cx, &key, &refresher)
        .await
        .map_err(|e| match e {
            // The shared machinery's refusal (the grant is gone) is worded for an app install
            // ("an admin must install the app again"); what a user of a session must do is
            // sign in again, and why it came to that tells them whether consent is the fix.
            Error::Refused {
                reason: Reason::NeedsReauth,
                ..
            } => {
                let why = if session.tokens.refresh_token_sealed.is_some() {
                    "the portal's sign-in service no longer accepts this session: its grant was \
                     revoked, its consent withdrawn, or it expired"
                } else {
                    "this session cannot be renewed: its sign-in granted no offline access (no \
                     refresh token was issued), and its access token has expired"
                };
                let portal = session.portal.as_deref().unwrap_or_default();
                Error::refused(
                    Reason::NeedsReauth,
                    format!(
                        "{why}; sign in again (GET /weblink/login?portal={}) and, if asked, allow \
                     offline access",
                        web::printable(portal)
                    ),
                )
            }
            other => other,
        })?;
    let fresh: Session = item.record()?;
    let tokens = fresh.tokens.open(&keys, &key)?;
    Ok(web::json(
        StatusCode::OK,
        &json!({
            "access_token": tokens.access_token.expose_secret(),
            "expires_at": tokens.expires_at,
            "portal": fresh.portal,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/platforms.md, "Public test vectors": RFC 7636 appendix B, the Administrate document's.
    #[test]
    fn pkce_vectors() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(
            code_challenge("unique_and_r@nd0M!_string"),
            "Ia6CrXEp0F-eOk_i1JHCLF_LkHW4zBoRYBADp6b0kjg"
        );
    }

    #[test]
    fn verifiers_are_long_and_unreserved() {
        let v = new_verifier().unwrap();
        assert!((43..=128).contains(&v.len()));
        assert!(v.bytes().all(|b| VERIFIER_ALPHABET.contains(&b)));
        assert_ne!(v, new_verifier().unwrap());
    }

    #[test]
    fn idp_domains_must_be_host_names() {
        assert!(is_host_name("identity.demo"));
        assert!(is_host_name("auth.example-1.com"));
        for bad in ["", "evil.com/x", "a@b.com", "b.com:443", "a..b", "x y"] {
            assert!(!is_host_name(bad), "{bad}");
        }
        assert_eq!(
            idp_host("Identity.GetAdministrate.com").as_deref(),
            Some("identity.getadministrate.com")
        );
        for bad in [
            "127.0.0.1",
            "169.254.169.254",
            "0x7f.1",
            "2130706433",
            "1.2.3",
            "[::1]",
            "::1",
            "localhost",
            "a.localhost",
            "identity",
            "identity.getadministrate.com.",
            "identity.getadministrate.com:443",
            "u@identity.getadministrate.com",
            "https://identity.getadministrate.com",
            "ídentity.getadministrate.com",
            "xn--.com",
            // IPv4 in the parser's other spellings, and percent-encoded.
            "127.1",
            "0177.0.0.1",
            "0x7f000001",
            "%31%32%37.0.0.1",
            "1.2.3.4.",
            "[::ffff:127.0.0.1]",
            "[fe80::1%25eth0]",
            // What the parser reads as a domain but is no host name.
            "_dmarc.getadministrate.com",
            "a*b.getadministrate.com",
            "a..getadministrate.com",
            ".getadministrate.com",
            "identity%2egetadministrate.com",
            // Ports, userinfo, paths, queries, fragments and spaces, however written.
            "identity.getadministrate.com:",
            "user:pw@identity.getadministrate.com",
            "identity.getadministrate.com/x",
            "identity.getadministrate.com\\x",
            "identity.getadministrate.com?x",
            "identity.getadministrate.com#x",
            "identity.getadministrate.com%2fx",
            " identity.getadministrate.com",
            "identity.getadministrate.com\t",
            "",
        ] {
            assert_eq!(idp_host(bad), None, "{bad}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert_eq!(idp_host(&long), None, "a label of 64");
    }

    fn settings(pairs: &[(&str, &str)]) -> std::result::Result<Settings, ConfigError> {
        Settings::from_vars(&Vars::from_pairs(pairs.iter().copied()))
    }

    /// WebLink's context with `pairs` set, on an embedded store in a directory of its own.
    async fn weblink(pairs: &[(&str, &str)]) -> (tempfile::TempDir, Weblink) {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = Vars::from_pairs(pairs.iter().copied());
        vars.set("GATEHOUSE_DATA_DIR", dir.path().to_str().unwrap());
        let deps = Arc::new(Deps::from_vars(&vars).await.unwrap());
        let w = Weblink::build(deps, &vars).unwrap();
        (dir, w)
    }

    #[tokio::test]
    async fn the_idp_allow_list() {
        let (_dir, w) = weblink(&[]).await;
        assert_eq!(
            w.settings.idp_domains,
            [
                DomainPattern::Exact("identity.getadministrate.com".into()),
                DomainPattern::Under("getadministrate.com".into())
            ]
        );
        for good in [
            "identity.getadministrate.com",
            "demo.identity.getadministrate.com",
            "IDENTITY.getadministrate.com",
        ] {
            assert!(w.idp_domain(good).is_ok(), "{good}");
        }
        for bad in [
            "getadministrate.com",
            "evilgetadministrate.com",
            "getadministrate.com.evil.com",
            "identity.getadministrate.co",
            "127.0.0.1",
            "localhost",
            "",
        ] {
            let err = w.idp_domain(bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{bad}");
        }
        for bad in [
            "*", "*.com", "*.", "**.a.com", "1.2.3.4", "a.com:1", ",", " ",
        ] {
            assert!(
                settings(&[("WEBLINK_IDP_DOMAINS", bad)]).is_err(),
                "`{bad}` is refused"
            );
        }
        let s = settings(&[("WEBLINK_IDP_DOMAINS", " a.example.com , *.Example.org ")]).unwrap();
        assert_eq!(
            s.idp_domains,
            [
                DomainPattern::Exact("a.example.com".into()),
                DomainPattern::Under("example.org".into())
            ]
        );
    }

    #[test]
    fn scope_and_limit_settings() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.scope, "openid profile email offline_access");
        assert_eq!(s.guest_per_minute, 30);
        assert_eq!(s.prompt.as_deref(), Some("consent"));
        assert_eq!(
            settings(&[("WEBLINK_PROMPT", "omit")]).unwrap().prompt,
            None
        );
        assert!(settings(&[("WEBLINK_PROMPT", "always")]).is_err());
        let s = settings(&[("WEBLINK_SCOPES", "profile,openid")]).unwrap();
        assert_eq!(s.scope, "profile openid");
        assert!(settings(&[("WEBLINK_SCOPES", "profile email")]).is_err());
        assert!(settings(&[("WEBLINK_GUEST_REQUESTS_PER_MINUTE", "-1")]).is_err());
        assert!(settings(&[("WEBLINK_GUEST_REQUESTS_PER_MINUTE", "many")]).is_err());
    }

    /// Discovery is on by default, the keys' URL overrides the metadata only when set, and an
    /// endpoint override must be an http(s) URL.
    #[test]
    fn discovery_settings() {
        let s = settings(&[]).unwrap();
        assert!(s.discovery);
        assert!(!s.jwks_url_set);
        assert_eq!((s.authorize_url, s.token_url), (None, None));
        let s = settings(&[
            ("WEBLINK_DISCOVERY", "false"),
            ("WEBLINK_JWKS_URL", "https://keys.example.com/jwks"),
            ("WEBLINK_TOKEN_URL", "https://{domain}/oauth/token"),
        ])
        .unwrap();
        assert!(!s.discovery && s.jwks_url_set);
        assert_eq!(s.token_url.as_deref(), Some("https://{domain}/oauth/token"));
        assert!(settings(&[("WEBLINK_DISCOVERY", "maybe")]).is_err());
        assert!(settings(&[("WEBLINK_AUTHORIZE_URL", "{domain}/authorize")]).is_err());
    }

    /// The metadata's authorization and token endpoints must be on the IDP's origin or an
    /// https host inside the allow-list, with no port or userinfo.
    #[tokio::test]
    async fn discovered_endpoints_stay_with_the_idp() {
        let (_dir, w) = weblink(&[]).await;
        let d = "identity.getadministrate.com";
        for good in [
            "https://identity.getadministrate.com/connect/token",
            "https://identity.getadministrate.com:443/token",
            "https://login.getadministrate.com/token",
        ] {
            assert!(w.check_discovered(d, good).is_ok(), "{good}");
        }
        for bad in [
            "https://evil.example.com/token",
            "http://identity.getadministrate.com/token",
            "https://identity.getadministrate.com:8443/token",
            "https://u@identity.getadministrate.com/token",
            "https://u:p@login.getadministrate.com/token",
            "https://127.0.0.1/token",
            "https://getadministrate.com.evil.example.com/token",
            "not a url",
        ] {
            let err = w.check_discovered(d, bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{bad}");
        }
        // A test deployment's http IDP base: its own origin, and only that.
        let (_dir, w) = weblink(&[("WEBLINK_IDP_BASE", "http://127.0.0.1:9/idp/{domain}")]).await;
        assert!(
            w.check_discovered(d, "http://127.0.0.1:9/idp/x/token")
                .is_ok()
        );
        assert!(w.check_discovered(d, "http://127.0.0.1:10/token").is_err());
    }

    /// Each client has its own budget: one client spending all of it does not limit another.
    #[test]
    fn the_limiter_counts_per_client() {
        let limiter = Limiter {
            per_minute: 3,
            buckets: Mutex::new(HashMap::new()),
        };
        for _ in 0..3 {
            assert_eq!(limiter.spend("203.0.113.7"), Ok(()));
        }
        let wait = limiter.spend("203.0.113.7").unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert_eq!(limiter.spend("198.51.100.1"), Ok(()));
        let unlimited = Limiter {
            per_minute: 0,
            buckets: Mutex::new(HashMap::new()),
        };
        assert!((0..100).all(|_| unlimited.spend("x").is_ok()));
    }

    /// The client is API Gateway's source IP, carried from the event; a header cannot set it.
    #[test]
    fn the_client_is_the_events_source_ip() {
        let event = json!({
            "version": "2.0", "routeKey": "POST /weblink/guest-token",
            "rawPath": "/weblink/guest-token", "rawQueryString": "",
            "headers": {"x-forwarded-for": "192.0.2.99", "content-type": "application/json"},
            "requestContext": {"http": {"method": "POST", "path": "/weblink/guest-token",
                                        "sourceIp": "203.0.113.7"}},
            "isBase64Encoded": false, "body": "{}"
        });
        let req = crate::lambda::request_from_json(&event.to_string()).unwrap();
        assert_eq!(client_of(&req), "203.0.113.7");
        assert_eq!(client_of(&Request::new(Body::Empty)), "");
    }
}
