//! Haravan's login and install against a standards OpenID Provider: panva's oidc-provider
//! (`tests/op/`), started by the test on a free port, configured as Haravan's accounts server
//! is (hybrid `code id_token`, form_post, client_secret_post, RS256, `offline_access` with
//! refresh token rotation, `orgid`/`orgname`/`role` in the id_token). The simulator agrees with
//! our reading of the protocol; this OP agrees with the standard's.
//!
//! The OP needs Node and `npm ci --prefix tests/op` (tests/run.sh does it). Without them the
//! tests are skipped, unless `GATEHOUSE_REQUIRE_MOTO` is set (as by tests/run.sh): then a
//! missing OP fails the run.

use crate::harness::{Backend, Browser, Harness, Page, query_param, resolve};
use gatehouse::config::Vars;
use gatehouse::haravan::{self, install_key, org_sessions_partition};
use gatehouse::store::Condition;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const ADMIN: &str = "200000011111";
const ORG: &str = "1000111111";

/// A running OP; dropping it ends the process.
struct Op {
    child: Child,
    /// `http://127.0.0.1:<port>`: where its test-only routes are.
    origin: String,
    http: reqwest::Client,
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Op {
    /// Starts the OP on 127.0.0.1:`port` for the app's Haravan client. `None` when Node or
    /// the OP's packages are missing and the run does not require it.
    fn start(port: u16, client_id: &str, client_secret: &str, app: &Harness) -> Option<Op> {
        let config = json!({
            "port": port,
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uris": [
                app.url("/haravan/install/login"),
                app.url("/haravan/install/grandservice"),
            ],
            "accounts": [{
                "sub": ADMIN, "orgid": ORG, "orgname": "demo-one", "role": "admin",
                "name": "Lan Nguyen", "email": "lan@example.com",
            }],
        });
        Self::spawn(port, &config, &format!("http://127.0.0.1:{port}"))
    }

    /// Starts the OP on 127.0.0.1:`port` with `config` (tests/op/server.mjs says what it
    /// holds); it must announce `issuer`. `None` as for [`Op::start`].
    fn spawn(port: u16, config: &Value, issuer: &str) -> Option<Op> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../op");
        let required = std::env::var_os("GATEHOUSE_REQUIRE_MOTO").is_some_and(|v| !v.is_empty());
        if !dir.join("node_modules/oidc-provider").is_dir() {
            assert!(
                !required,
                "the standards OP is not installed: run `npm ci --prefix tests/op` (tests/run.sh \
                 does)"
            );
            eprintln!("skipped: the standards OP is not installed (npm ci --prefix tests/op)");
            return None;
        }
        let spawned = Command::new("node")
            .arg(dir.join("server.mjs"))
            .env("OP_CONFIG", config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                assert!(!required, "node could not be started: {e}");
                eprintln!("skipped: node could not be started: {e}");
                return None;
            }
        };
        // Its first line, read on a thread of its own so that an OP that never says it listens
        // fails this test in 30 s instead of blocking it for good. The rest of its output goes
        // to the test's stderr: a closed pipe would end it.
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let (first, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = stdout.read_line(&mut line);
            if first.send(read.map(|_| line)).is_err() {
                return;
            }
            for line in stdout.lines().map_while(Result::ok) {
                eprintln!("op: {line}");
            }
        });
        let line = match said.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(read) => read.expect("the OP's first line"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the OP said nothing within 30 s of starting");
            }
        };
        let announced = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the OP did not start: {line:?}"));
        assert_eq!(announced, issuer);
        Some(Op {
            child,
            origin: format!("http://127.0.0.1:{port}"),
            http: crate::support::http(),
        })
    }

    async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_admin/stats", self.origin))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats are JSON")
    }

    async fn rotate_key(&self) -> String {
        let v: Value = self
            .http
            .post(format!("{}/_admin/rotate", self.origin))
            .send()
            .await
            .expect("rotate")
            .json()
            .await
            .expect("rotate answers JSON");
        v["kid"].as_str().expect("kid").to_owned()
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The app on `backend`, pointed at an OP on `port`, with `extra` settings.
async fn app_for_op(backend: Backend, port: u16, extra: &[(&str, &str)]) -> Option<Harness> {
    let issuer = format!("http://127.0.0.1:{port}");
    let mut vars = Vars::default();
    // The endpoints and the keys' URL come from the OP's metadata (discovery).
    vars.set("HARAVAN_ACCOUNTS_BASE", &issuer);
    vars.set("HARAVAN_ISSUERS", &issuer);
    for (k, v) in extra {
        vars.set(*k, *v);
    }
    Harness::start(backend, vars).await
}

async fn start(backend: Backend, extra: &[(&str, &str)]) -> Option<(Harness, Op)> {
    let port = free_port();
    let h = app_for_op(backend, port, extra).await?;
    let creds = h.server.app.secrets.credentials("haravan").await.unwrap();
    let op = Op::start(
        port,
        &creds.client_id,
        creds.client_secret.expose_secret(),
        &h,
    )?;
    Some((h, op))
}

/// `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&#39;` and `&#NN;` back to text.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            _ => entity
                .strip_prefix('#')
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value of `attr="..."` in `tag`.
fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// A page's first form: its action and its hidden inputs.
fn form(body: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = body.find("<form")?;
    let head = &body[start..start + body[start..].find('>')?];
    let action = attr(head, "action")?;
    let fields = body[start..]
        .split("<input")
        .skip(1)
        .filter_map(|input| {
            let tag = &input[..input.find('>')?];
            tag.contains("type=\"hidden\"")
                .then(|| Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default())))?
        })
        .collect();
    Some((action, fields))
}

/// How the OP sent the browser back to the app.
enum Back {
    /// A redirect (the code flow's query response): the URL, not yet visited.
    Redirect(String),
    /// A form_post: the app's answer to it, and the fields the OP posted.
    FormPost(Page, Vec<(String, String)>),
}

/// From the app's redirect to the OP, walks the OP as a browser without JavaScript: follows
/// its redirects, signs in as `sub` when asked, and stops where it sends the browser back to
/// the app: a redirect to `app` (the app's base URL) is returned unvisited, a form_post is
/// POSTed.
async fn walk(b: &mut Browser, to_op: &Page, sub: &str, app: Option<&str>) -> Back {
    assert_eq!(to_op.status, 302, "{}", to_op.body);
    let mut url = to_op.location.clone().expect("a redirect to the OP");
    let mut page = b.get(&url).await;
    for _ in 0..10 {
        match page.status {
            302 | 303 => {
                url = resolve(&url, page.location.as_deref().expect("location"));
                if app.is_some_and(|app| url.starts_with(app)) {
                    return Back::Redirect(url);
                }
                page = b.get(&url).await;
            }
            200 => {
                let (action, fields) = form(&page.body).expect("a form");
                let target = resolve(&url, &action);
                if action.starts_with("/interaction/") {
                    page = b.post_form(&target, &[("login", sub)]).await;
                } else {
                    let pairs: Vec<(&str, &str)> = fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let answer = b.post_form(&target, &pairs).await;
                    return Back::FormPost(answer, fields);
                }
            }
            other => panic!("the OP answered {other} at {url}: {}", page.body),
        }
    }
    panic!("the OP never answered the app");
}

/// [`walk`] for the hybrid flow: the app's answer to the form_post, and the fields posted.
async fn walk_op(b: &mut Browser, to_op: &Page, sub: &str) -> (Page, Vec<(String, String)>) {
    match walk(b, to_op, sub, None).await {
        Back::FormPost(page, fields) => (page, fields),
        Back::Redirect(url) => panic!("a form_post was expected, not a redirect to {url}"),
    }
}

/// A login, then (for a new org's admin) the install; returns the app's last answer and the
/// fields of the install's form_post.
async fn install(h: &Harness, b: &mut Browser) -> (Page, Vec<(String, String)>) {
    let start = b.get(&h.url("/haravan/install/login")).await;
    let (to_install, _) = walk_op(b, &start, ADMIN).await;
    let location = to_install.location.clone().unwrap_or_default();
    assert!(
        location.contains("/connect/authorize"),
        "a new org's admin is sent to install: {} {}",
        to_install.status,
        to_install.body
    );
    walk_op(b, &to_install, ADMIN).await
}

async fn stored(h: &Harness) -> gatehouse::store::Item {
    h.server
        .app
        .store
        .get(&install_key(ORG))
        .await
        .unwrap()
        .expect("installed")
}

/// Makes the stored access token due, as time would.
async fn make_due(h: &Harness) {
    let mut set = Map::new();
    set.insert("expires_at".into(), gatehouse::store::now().into());
    h.server
        .app
        .store
        .update(&install_key(ORG), &set, Condition::Exists)
        .await
        .unwrap();
}

async fn install_refresh_and_rotation(backend: Backend) {
    let Some((h, op)) = start(backend, &[]).await else {
        return;
    };
    let mut b = Browser::new();
    let (page, fields) = install(&h, &mut b).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Lan Nguyen"), "{}", page.body);
    for name in ["code", "id_token", "state"] {
        assert!(
            fields.iter().any(|(k, _)| k == name),
            "form_post has {name}"
        );
    }
    assert!(!page.body.contains("no refresh token"), "{}", page.body);
    let stats = op.stats().await;
    assert_eq!(stats["token"]["authorization_code"], json!(1), "{stats}");

    // What was stored: the org from the OP's `orgid` claim, both tokens, sealed.
    let item = stored(&h).await;
    assert_eq!(item.attrs["orgname"], json!("demo-one"));
    assert_eq!(item.attrs["installed_by"], json!(ADMIN));
    assert_eq!(item.attrs["no_refresh_token"], json!(false));
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let first = gatehouse::refresh::open(&keys, &item).unwrap();
    let first_refresh = first
        .refresh_token
        .as_ref()
        .expect("offline_access with consent gave a refresh token")
        .expose_secret()
        .to_owned();
    assert_eq!(h.items(&org_sessions_partition(ORG)).await.len(), 1);

    // Not due: the stored token, no call.
    let token = haravan::access_token(&h.server.app.haravan, ORG)
        .await
        .unwrap();
    assert_eq!(token.expose_secret(), first.access_token.expose_secret());
    assert!(op.stats().await["token"]["refresh_token"].is_null());

    // Due: refreshed at the OP, which rotates the refresh token; twice, so the second refresh
    // uses the rotated token (the OP refuses a reused one, and revokes the grant).
    let mut previous = first_refresh.clone();
    for n in 1..=2 {
        make_due(&h).await;
        let token = haravan::access_token(&h.server.app.haravan, ORG)
            .await
            .unwrap();
        let now = gatehouse::refresh::open(&keys, &stored(&h).await).unwrap();
        assert_eq!(token.expose_secret(), now.access_token.expose_secret());
        assert_ne!(token.expose_secret(), first.access_token.expose_secret());
        let rotated = now.refresh_token.expect("a rotated refresh token");
        assert_ne!(rotated.expose_secret(), previous, "the OP rotated it");
        previous = rotated.expose_secret().to_owned();
        assert_eq!(op.stats().await["token"]["refresh_token"], json!(n));
    }

    // The OP rotates its signing key: the next sign-in's id_token names a kid we have not
    // seen, and we follow with one refetch.
    let jwks_before = op.stats().await["jwks"].as_u64().unwrap();
    let kid = op.rotate_key().await;
    let mut c = Browser::new();
    let start = c.get(&h.url("/haravan/install/login")).await;
    let (page, fields) = walk_op(&mut c, &start, ADMIN).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Signed in as"), "{}", page.body);
    let id_token = fields
        .iter()
        .find(|(k, _)| k == "id_token")
        .map(|(_, v)| v.clone())
        .unwrap();
    let header = jsonwebtoken::decode_header(&id_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    assert_eq!(op.stats().await["jwks"].as_u64().unwrap(), jwks_before + 1);
    assert_eq!(h.items(&org_sessions_partition(ORG)).await.len(), 2);
    // The metadata was read once for all of it: two sign-ins, an install, two refreshes.
    assert_eq!(op.stats().await["discovery"], json!(1));
}

#[tokio::test]
async fn install_refresh_and_key_rotation_at_a_standards_op_on_the_embedded_store() {
    install_refresh_and_rotation(Backend::Embedded).await;
}

#[tokio::test]
async fn install_refresh_and_key_rotation_at_a_standards_op_on_dynamodb() {
    install_refresh_and_rotation(Backend::Dynamo).await;
}

/// Without `prompt=consent` a standards OP drops `offline_access` (OIDC Core 11), and the
/// install comes back without a refresh token: recorded, and said to the admin.
#[tokio::test]
async fn without_consent_a_standards_op_grants_no_refresh_token_and_the_admin_is_told() {
    let Some((h, _op)) = start(Backend::Embedded, &[("HARAVAN_INSTALL_PROMPT", "omit")]).await
    else {
        return;
    };
    let mut b = Browser::new();
    let (page, _) = install(&h, &mut b).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("no refresh token"), "{}", page.body);
    let item = stored(&h).await;
    assert_eq!(item.attrs["no_refresh_token"], json!(true));
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    assert!(
        gatehouse::refresh::open(&keys, &item)
            .unwrap()
            .refresh_token
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// Administrate WebLink: the PKCE code flow of a public client, at the same OP.

/// The portal the WebLink tests sign in to, its client at the OP, and the IDP domain the
/// simulator's host lookup names for it: a host name inside the default `WEBLINK_IDP_DOMAINS`.
const PORTAL: &str = "op.administrateweblink.com";
const WEBLINK_CLIENT: &str = "op-portal-client";
const IDP_DOMAIN: &str = "op.identity.getadministrate.com";
const GUEST: &str = "weblink-user-1";

/// The app and an OP serving the IDP of [`IDP_DOMAIN`]. The looked-up domain stays a host name
/// checked against the allow-list; only `WEBLINK_IDP_BASE` maps it to the OP, with the domain
/// as a path segment (`http://127.0.0.1:<port>/idp/{domain}`), as the simulator is mapped.
async fn start_weblink(backend: Backend, extra: &[(&str, &str)]) -> Option<(Harness, Op)> {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let idp_path = format!("/idp/{IDP_DOMAIN}");
    let mut vars = Vars::default();
    vars.set("WEBLINK_PORTALS", PORTAL);
    vars.set("WEBLINK_IDP_BASE", format!("{origin}/idp/{{domain}}"));
    // The endpoints and the keys come from the OP's metadata (WEBLINK_DISCOVERY, the default),
    // read under the IDP base: `{origin}{idp_path}/.well-known/openid-configuration`.
    // The OP's issuer, with the trailing slash Administrate's has.
    vars.set("WEBLINK_ISSUERS", format!("{origin}/"));
    // Only the portal's client id is an allowed audience: the OP's `aud` must be it.
    vars.set("WEBLINK_AUDIENCES", "none-but-the-portals-client");
    // RFC 6749 3.2: a token endpoint takes a form; a standards OP refuses the JSON body.
    vars.set("WEBLINK_TOKEN_ENCODING", "form");
    for (k, v) in extra {
        vars.set(*k, *v);
    }
    let h = Harness::start(backend, vars).await?;
    h.server
        .weblink
        .add_portal(PORTAL, "op-brand", WEBLINK_CLIENT, IDP_DOMAIN);
    let config = json!({
        "profile": "weblink",
        "port": port,
        "client_id": WEBLINK_CLIENT,
        "idp_path": idp_path,
        "redirect_uris": [h.url("/weblink/callback")],
        "accounts": [{
            "sub": GUEST, "given_name": "Ada", "family_name": "Lovelace",
            "email": "ada@example.com",
        }],
    });
    let op = Op::spawn(port, &config, &format!("{origin}/"))?;
    Some((h, op))
}

/// login → the OP's login and consent → the callback; returns the callback's page.
async fn weblink_sign_in(h: &Harness, op: &Op, b: &mut Browser) -> Page {
    let start = b
        .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
        .await;
    let authorize = start.location.clone().unwrap_or_default();
    assert!(
        authorize.starts_with(&format!("{}/idp/{IDP_DOMAIN}/authorize?", op.origin)),
        "{} {authorize}",
        start.status
    );
    let scope = query_param(&authorize, "scope").unwrap_or_default();
    assert!(scope.split(' ').any(|s| s == "openid"), "{scope}");
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&authorize, "nonce").is_some(), "{authorize}");
    let Back::Redirect(callback) = walk(b, &start, GUEST, Some(&h.url("/"))).await else {
        panic!("the code flow answers with a redirect");
    };
    assert!(
        callback.starts_with(&h.url("/weblink/callback?")),
        "{callback}"
    );
    assert!(query_param(&callback, "error").is_none(), "{callback}");
    b.get(&callback).await
}

/// The session's sealed tokens, and the session item itself.
async fn weblink_session(h: &Harness) -> (gatehouse::store::Item, gatehouse::refresh::Tokens) {
    let items = h.items("session#weblink").await;
    assert_eq!(items.len(), 1, "one session");
    let item = items.into_iter().next().unwrap();
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let tokens = gatehouse::refresh::open(&keys, &item).unwrap();
    (item, tokens)
}

async fn weblink_refresh(h: &Harness, b: &Browser) -> Value {
    let (status, body) = weblink_refresh_status(h, b).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `POST /weblink/refresh` with the browser's cookies: the status and the JSON answer.
async fn weblink_refresh_status(h: &Harness, b: &Browser) -> (u16, Value) {
    let cookie = b
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let resp = crate::support::http()
        .post(h.url("/weblink/refresh"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn weblink_pkce_refresh_and_rotation(backend: Backend) {
    let Some((h, op)) = start_weblink(backend, &[]).await else {
        return;
    };
    let mut b = Browser::new();
    let page = weblink_sign_in(&h, &op, &mut b).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Ada Lovelace"), "{}", page.body);
    let stats = op.stats().await;
    assert_eq!(stats["token"]["authorization_code"], json!(1), "{stats}");
    assert_eq!(stats["jwks"], json!(1), "{stats}");
    assert_eq!(stats["discovery"], json!(1), "the metadata once: {stats}");
    let (item, first) = weblink_session(&h).await;
    assert_eq!(item.attrs["sub"], json!(GUEST));
    assert_eq!(item.attrs["idp_domain"], json!(IDP_DOMAIN));
    assert_eq!(item.attrs["client_id"], json!(WEBLINK_CLIENT));
    let mut previous = first
        .refresh_token
        .as_ref()
        .expect("offline_access gave a refresh token")
        .expose_secret()
        .to_owned();

    // Not due: the stored token, no call.
    let v = weblink_refresh(&h, &b).await;
    assert_eq!(v["access_token"], json!(first.access_token.expose_secret()));
    assert!(op.stats().await["token"]["refresh_token"].is_null());

    // Due: refreshed at the OP, which rotates the refresh token; twice, and each time with the
    // token the last rotation gave (the OP would refuse a reused one, and revoke the grant).
    for n in 1..=2 {
        let mut set = Map::new();
        set.insert("expires_at".into(), gatehouse::store::now().into());
        let (item, before) = weblink_session(&h).await;
        h.server
            .app
            .store
            .update(&item.key, &set, Condition::Exists)
            .await
            .unwrap();
        let v = weblink_refresh(&h, &b).await;
        let (_, now) = weblink_session(&h).await;
        assert_eq!(v["access_token"], json!(now.access_token.expose_secret()));
        assert_ne!(
            now.access_token.expose_secret(),
            before.access_token.expose_secret()
        );
        let stats = op.stats().await;
        assert_eq!(stats["token"]["refresh_token"], json!(n), "{stats}");
        assert_eq!(stats["refresh_tokens"][n - 1], json!(previous), "{stats}");
        let rotated = now.refresh_token.expect("a rotated refresh token");
        assert_ne!(rotated.expose_secret(), previous, "the OP rotated it");
        previous = rotated.expose_secret().to_owned();
    }

    // Another sign-in with the same key: the cached keys, no fetch.
    let page = weblink_sign_in(&h, &op, &mut Browser::new()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(op.stats().await["jwks"], json!(1));

    // The OP rotates its signing key: the next sign-in's id_token names a kid we have not
    // seen, and we follow with one refetch.
    op.rotate_key().await;
    let mut c = Browser::new();
    let page = weblink_sign_in(&h, &op, &mut c).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Ada Lovelace"), "{}", page.body);
    let stats = op.stats().await;
    assert_eq!(stats["jwks"], json!(2), "{stats}");
    assert_eq!(stats["token"]["authorization_code"], json!(3), "{stats}");
    assert_eq!(h.items("session#weblink").await.len(), 3);
}

#[tokio::test]
async fn weblink_pkce_refresh_and_key_rotation_at_a_standards_op_on_the_embedded_store() {
    weblink_pkce_refresh_and_rotation(Backend::Embedded).await;
}

#[tokio::test]
async fn weblink_pkce_refresh_and_key_rotation_at_a_standards_op_on_dynamodb() {
    weblink_pkce_refresh_and_rotation(Backend::Dynamo).await;
}

/// Without `prompt=consent` the OP drops `offline_access` (OIDC Core 11): the sign-in works, but
/// the session has no refresh token, and once its access token is due it must sign in again.
/// What `WEBLINK_PROMPT`'s default, `consent`, is for.
#[tokio::test]
async fn without_consent_a_standards_op_gives_a_weblink_session_no_refresh_token() {
    let Some((h, op)) = start_weblink(Backend::Embedded, &[("WEBLINK_PROMPT", "omit")]).await
    else {
        return;
    };
    let mut b = Browser::new();
    let page = weblink_sign_in(&h, &op, &mut b).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (item, tokens) = weblink_session(&h).await;
    assert!(tokens.refresh_token.is_none());
    let mut set = Map::new();
    set.insert("expires_at".into(), gatehouse::store::now().into());
    h.server
        .app
        .store
        .update(&item.key, &set, Condition::Exists)
        .await
        .unwrap();
    let (status, body) = weblink_refresh_status(&h, &b).await;
    assert_eq!(status, 403, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no refresh token") && message.contains("sign in again"),
        "what happened and what to do: {message}"
    );
    assert!(op.stats().await["token"]["refresh_token"].is_null());
}
