//! The token endpoint, `POST /connect/token`: client authentication, `authorization_code` and
//! `refresh_token` (rotating), and the id_tokens and access tokens it issues.

use super::{HaravanSim, ID_TOKEN_LIFETIME, Session, SimUser, TokenGrant};
use crate::kit::{
    Params, invalid_grant, left_half_hash, lock, no_store, now, oauth_error, random_hex,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::sync::atomic::Ordering;

impl HaravanSim {
    /// An id_token for `user` in `session`, with `nonce` when given and the hash claim
    /// (`c_hash` of the code, or `at_hash` of the access token).
    pub(super) fn id_token(
        &self,
        user: &SimUser,
        session: &Session,
        nonce: Option<&str>,
        hash: (&str, &str),
    ) -> String {
        let now = now();
        let mut c = Map::new();
        c.insert("nbf".into(), now.into());
        c.insert("exp".into(), (now + ID_TOKEN_LIFETIME).into());
        c.insert("iss".into(), self.inner.own_base.clone().into());
        c.insert("aud".into(), self.inner.client_id.clone().into());
        if let Some(nonce) = nonce {
            c.insert("nonce".into(), nonce.into());
        }
        c.insert("iat".into(), now.into());
        c.insert(hash.0.into(), left_half_hash(hash.1).into());
        c.insert("sid".into(), session.sid.clone().into());
        c.insert("sub".into(), user.sub.clone().into());
        c.insert("auth_time".into(), session.auth_time.into());
        c.insert("idp".into(), "local".into());
        c.insert("role".into(), user.role.clone());
        c.insert("orgid".into(), user.orgid.clone().into());
        c.insert("name".into(), user.name.clone().into());
        c.insert("email".into(), user.email.clone().into());
        c.insert("orgname".into(), user.orgname.clone().into());
        c.insert("orgcat".into(), "Other".into());
        c.insert("amr".into(), json!(["pwd"]));
        if hash.0 == "at_hash" {
            for (k, v) in lock(&self.inner.token_id_token_patch).iter() {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        self.sign_id_token(&Value::Object(c))
    }

    /// A fresh access token (and refresh token when the scope has `offline_access`) for `grant`,
    /// as the token endpoint's JSON answer. `nonce` goes into the id_token when given.
    pub(super) fn issue_tokens(&self, mut grant: TokenGrant, nonce: Option<&str>) -> Response {
        let lifetime = self.inner.access_token_lifetime.load(Ordering::SeqCst);
        grant.expires_at = now() + lifetime;
        let access_token = random_hex(32);
        let id_token = self.id_token(
            &grant.user,
            &grant.session,
            nonce,
            ("at_hash", &access_token),
        );
        let refresh_token = (grant.has_scope("offline_access")
            && !self.inner.withhold_refresh_tokens.load(Ordering::SeqCst))
        .then(|| random_hex(32));
        let mut body = json!({
            "id_token": id_token,
            "access_token": access_token,
            "expires_in": lifetime,
            "token_type": "Bearer",
        });
        let scope = grant.scope.clone();
        let mut grants = lock(&self.inner.grants);
        if let Some(refresh) = &refresh_token {
            body["refresh_token"] = refresh.clone().into();
            grants.refresh.insert(refresh.clone(), grant.clone());
        }
        body["scope"] = scope.into();
        grants.access.insert(access_token, grant);
        no_store(Json(body).into_response())
    }

    pub(super) fn redeem_code(&self, p: &Params) -> Response {
        let (Some(code), Some(redirect_uri)) = (p.get("code"), p.get("redirect_uri")) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code and redirect_uri are required",
            );
        };
        let (grant, nonce) = {
            let mut grants = lock(&self.inner.grants);
            let Some(c) = grants.codes.get_mut(code) else {
                return invalid_grant("unknown code");
            };
            if c.used {
                return invalid_grant("code already used");
            }
            if c.redirect_uri != redirect_uri {
                return invalid_grant("redirect_uri differs from the authorize request's");
            }
            if now() >= c.expires_at {
                return invalid_grant("code expired");
            }
            c.used = true;
            let grant = TokenGrant {
                user: c.user.clone(),
                session: c.session.clone(),
                scope: c.scope.clone(),
                expires_at: 0,
            };
            (grant, c.nonce.clone())
        };
        self.issue_tokens(grant, Some(&nonce))
    }

    pub(super) fn redeem_refresh(&self, p: &Params) -> Response {
        let Some(refresh_token) = p.get("refresh_token") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "refresh_token is required",
            );
        };
        let grant = {
            let mut grants = lock(&self.inner.grants);
            // Rotation: a refresh token is honoured once.
            let Some(mut grant) = grants.refresh.remove(refresh_token) else {
                return invalid_grant("unknown, used or revoked refresh_token");
            };
            if let Some(scope) = p.get("scope") {
                if let Some(extra) = scope.split(' ').find(|s| !grant.has_scope(s)) {
                    // A refused request spends nothing.
                    grants.refresh.insert(refresh_token.to_owned(), grant);
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        &format!("{extra} was not granted"),
                    );
                }
                grant.scope = scope.to_owned();
            }
            grant
        };
        self.issue_tokens(grant, None)
    }
}

/// The client id and secret of HTTP Basic (each form-urlencoded, RFC 6749 §2.3.1).
pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let form_decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((form_decode(id), form_decode(secret)))
}

pub(super) async fn token(
    State(sim): State<HaravanSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = Params::parse(&body);
    let grant_type = parsed
        .as_ref()
        .ok()
        .and_then(|p| p.get("grant_type"))
        .unwrap_or("")
        .to_owned();
    *lock(&sim.inner.token_requests)
        .entry(grant_type.clone())
        .or_default() += 1;
    let delay = *lock(&sim.inner.token_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let params = match parsed {
        Ok(p) => p,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why),
    };

    // Client authentication: HTTP Basic if present, else client_id and client_secret in the body.
    let basic = basic_credentials(&headers);
    let (client_id, secret) = match &basic {
        Some((id, secret)) => {
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id in the body differs from the Basic credentials",
                );
            }
            (Some(id.as_str()), Some(secret.as_str()))
        }
        None => (params.get("client_id"), params.get("client_secret")),
    };
    if client_id != Some(sim.inner.client_id.as_str())
        || secret != Some(sim.inner.client_secret.as_str())
    {
        let mut resp = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
        if basic.is_some() {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"haravan-sim\""),
            );
        }
        return resp;
    }
    match grant_type.as_str() {
        "authorization_code" => sim.redeem_code(&params),
        "refresh_token" => sim.redeem_refresh(&params),
        "" => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {other} is not supported"),
        ),
    }
}
