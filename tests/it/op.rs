//! Haravan's login and install against a standards OpenID Provider: panva's oidc-provider
//! (`tests/op/`), started by the test on a free port, configured as Haravan's accounts server
//! is (hybrid `code id_token`, form_post, client_secret_post, RS256, `offline_access` with
//! refresh token rotation, `orgid`/`orgname`/`role` in the id_token). The simulator agrees with
//! our reading of the protocol; this OP agrees with the standard's.
//!
//! The OP needs Node and `npm ci --prefix tests/op` (tests/run.sh does it). Without them the
//! tests are skipped, unless `GATEHOUSE_REQUIRE_MOTO` is set (as by tests/run.sh): then a
//! missing OP fails the run.

use crate::harness::{Backend, Browser, Harness, Page, resolve};
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
    issuer: String,
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
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("op");
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
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        stdout.read_line(&mut line).expect("the OP's first line");
        // The rest of its output goes to the test's stderr: a closed pipe would end it.
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                eprintln!("op: {line}");
            }
        });
        let issuer = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the OP did not start: {line:?}"))
            .to_owned();
        assert_eq!(issuer, format!("http://127.0.0.1:{port}"));
        Some(Op {
            child,
            issuer,
            http: reqwest::Client::new(),
        })
    }

    async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_admin/stats", self.issuer))
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
            .post(format!("{}/_admin/rotate", self.issuer))
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

/// From the app's redirect to the OP, walks the OP as a browser without JavaScript: follows
/// its redirects, signs in as `sub` when asked, and POSTs the form_post answer to the app.
/// Returns the app's answer and the fields the OP posted.
async fn walk_op(b: &mut Browser, to_op: &Page, sub: &str) -> (Page, Vec<(String, String)>) {
    assert_eq!(to_op.status, 302, "{}", to_op.body);
    let mut url = to_op.location.clone().expect("a redirect to the OP");
    let mut page = b.get(&url).await;
    for _ in 0..10 {
        match page.status {
            302 | 303 => {
                url = resolve(&url, page.location.as_deref().expect("location"));
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
                    return (answer, fields);
                }
            }
            other => panic!("the OP answered {other} at {url}: {}", page.body),
        }
    }
    panic!("the OP never answered the app");
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
    let token = haravan::access_token(&h.server.app, ORG).await.unwrap();
    assert_eq!(token.expose_secret(), first.access_token.expose_secret());
    assert!(op.stats().await["token"]["refresh_token"].is_null());

    // Due: refreshed at the OP, which rotates the refresh token; twice, so the second refresh
    // uses the rotated token (the OP refuses a reused one, and revokes the grant).
    let mut previous = first_refresh.clone();
    for n in 1..=2 {
        make_due(&h).await;
        let token = haravan::access_token(&h.server.app, ORG).await.unwrap();
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
