//! The signing key: discovery (`GET /.well-known/openid-configuration`), the JWKS, and the
//! knobs tests turn (rotation, a key the JWKS never lists).

use super::{HaravanSim, PLAIN_SCOPES, SigningKey};
use crate::kit::lock;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl HaravanSim {
    /// `claims`, signed RS256 with the current key, its kid in the header: for tests to craft
    /// tokens with bad claims and a good signature.
    pub fn sign_id_token(&self, claims: &Value) -> String {
        let key = lock(&self.inner.key).clone();
        key.sign(claims)
    }

    /// `claims`, signed with a key whose kid the JWKS never lists.
    pub fn sign_with_unpublished_key(&self, claims: &Value) -> String {
        self.inner
            .unpublished
            .get_or_init(SigningKey::generate)
            .sign(claims)
    }

    /// Replaces the signing key: the JWKS then lists only the new key, and every token signed
    /// afterwards uses it.
    pub fn rotate_key(&self) {
        let key = Arc::new(SigningKey::generate());
        *lock(&self.inner.key) = key;
    }

    /// The current key's kid.
    pub fn current_kid(&self) -> String {
        lock(&self.inner.key).kid.clone()
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.inner.jwks_fetches.load(Ordering::SeqCst)
    }
}

pub(super) async fn discovery(State(sim): State<HaravanSim>) -> Json<Value> {
    let b = &sim.inner.own_base;
    Json(json!({
        "issuer": b,
        "jwks_uri": format!("{b}/.well-known/openid-configuration/jwks"),
        "authorization_endpoint": format!("{b}/connect/authorize"),
        "token_endpoint": format!("{b}/connect/token"),
        "userinfo_endpoint": format!("{b}/connect/userinfo"),
        "end_session_endpoint": format!("{b}/connect/endsession"),
        "frontchannel_logout_supported": true,
        "frontchannel_logout_session_supported": true,
        "scopes_supported": PLAIN_SCOPES,
        "claims_supported": [
            "sub", "name", "email", "role", "orgid", "orgname", "orgcat", "sid", "auth_time",
            "idp", "amr",
        ],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code id_token"],
        "response_modes_supported": ["form_post"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

pub(super) async fn jwks(State(sim): State<HaravanSim>) -> Json<Value> {
    sim.inner.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let key = lock(&sim.inner.key).clone();
    Json(json!({ "keys": [key.jwk()] }))
}
