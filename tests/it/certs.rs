//! The CA store is loaded once per container: by the AWS SDK's HTTPS client, and by the platform
//! client only when a request calls a platform. Loading it costs a cold start the parsing of
//! every certificate of the system bundle (about 150), so a second load at init doubled the init
//! time of functions that never call a platform.
//!
//! How it is counted: a child process (this test binary, running [`child`] alone) starts as a
//! function's container does (its platform context from the environment, then one invocation)
//! with `SSL_CERT_FILE` naming a copy of the system bundle that nothing else opens. Both TLS
//! stacks (the SDK's and reqwest's) read their roots from that file when it is set; inotify
//! counts the opens (and closes: the kernel merges identical events queued back to back). The
//! SDK loads them once for all its clients (DynamoDB and Secrets Manager); reqwest when the platform
//! client is built.

use gatehouse::store::{Condition, Item, Store};
use inotify::{EventMask, Inotify, WatchMask};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that tells [`child`] what to do: unset, it is not the child.
const MODE: &str = "GATEHOUSE_CERTS_CHILD";

/// The org of events/haravan-webhooks-shop-update.json.
const ORG: &str = "1000444444";

/// The system CA bundles of the distributions we build on, in the order rustls-native-certs
/// looks for them.
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn repo_root() -> PathBuf {
    gatehouse_local::events::dir()
        .parent()
        .expect("events/ is at the repository's root")
        .to_owned()
}

/// `events/local.env`'s settings, under which the sample events are valid.
fn local_env(root: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(root.join("events/local.env"))
        .expect("events/local.env")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Runs the child in `mode` with a copy of the CA bundle and returns how often it was opened.
async fn opens_in_child(mode: &str) -> Option<usize> {
    let sm = crate::support::secrets_client().await?;
    let dynamo = crate::support::dynamo_client().await?;
    let root = repo_root();
    let Some(bundle) = BUNDLES.iter().map(Path::new).find(|p| p.exists()) else {
        panic!("no system CA bundle at any of {BUNDLES:?}");
    };

    // A deployed function's world: its table and its secrets in Secrets Manager.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("certs-{id}");
    gatehouse::store::create_table(&dynamo, &table)
        .await
        .unwrap();
    // The org the sample `shop/update` is for, installed.
    let store = gatehouse::store::DynamoStore::new(dynamo, table.clone());
    let mut attrs = serde_json::Map::new();
    attrs.insert("orgid".into(), json!(ORG));
    attrs.insert("installed_at".into(), json!(gatehouse::store::now()));
    let install = Item::new(gatehouse::haravan::install_key(ORG), attrs);
    store.put(&install, Condition::Always).await.unwrap();
    let values: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("events/secrets.json")).unwrap())
            .unwrap();
    let mut secret_env = Vec::new();
    for (name, var) in [("app", "APP_SECRET_ID"), ("haravan", "HARAVAN_SECRET_ID")] {
        let arn = sm
            .create_secret()
            .name(format!("certs-{name}-{id}"))
            .secret_string(values[name].to_string())
            .send()
            .await
            .unwrap()
            .arn()
            .unwrap()
            .to_owned();
        secret_env.push((var, arn));
    }

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("bundle.pem");
    std::fs::copy(bundle, &copy).unwrap();
    let mut inotify = Inotify::init().unwrap();
    // Closes too: the kernel merges identical events queued back to back, so two opens in a row
    // would count as one; an open, a close, an open are three.
    inotify
        .watches()
        .add(&copy, WatchMask::OPEN | WatchMask::CLOSE_NOWRITE)
        .unwrap();

    let exe = std::env::current_exe().unwrap();
    let mut command = std::process::Command::new(exe);
    command
        .args(["certs::child", "--exact", "--ignored", "--nocapture"])
        .current_dir(&root)
        .envs(local_env(&root))
        .envs(secret_env)
        .env("TABLE_NAME", &table)
        .env("GATEHOUSE_DATA_DIR", dir.path().join("data"))
        .env("SSL_CERT_FILE", &copy)
        .env_remove("SSL_CERT_DIR")
        .env(MODE, mode);
    let out = crate::support::output_within(command, std::time::Duration::from_secs(120)).await;
    assert!(
        out.status.success(),
        "the child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
    let mut buffer = [0u8; 4096];
    let mut opens = 0;
    loop {
        match inotify.read_events(&mut buffer) {
            Ok(events) => {
                let mut any = false;
                for event in events {
                    any = true;
                    opens += usize::from(event.mask.contains(EventMask::OPEN));
                }
                if !any {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("inotify: {e}"),
        }
    }
    Some(opens)
}

#[tokio::test]
async fn a_function_that_calls_no_platform_loads_the_ca_store_once() {
    let Some(opens) = opens_in_child("webhook").await else {
        return;
    };
    assert_eq!(
        opens, 1,
        "haravan-webhooks' init and first request opened the CA bundle {opens} times"
    );
}

/// The platform client has its own root store: building it loads the bundle a second time. This
/// is the cost a function that calls a platform pays on its first such request (the client is
/// built on first use), and what the count above would show if the client were built at init
/// again. It also shows that the count sees a second load at all.
#[tokio::test]
async fn building_the_platform_client_is_a_second_load() {
    let Some(opens) = opens_in_child("platform").await else {
        return;
    };
    assert_eq!(opens, 2, "the CA bundle was opened {opens} times");
}

/// The child: a container's init and first invocation of `haravan-webhooks` (a signed
/// `shop/update`), as `gatehouse::lambda::run` does them, and the platform client built; in mode
/// `platform` it then builds the platform client, as the first request that calls a platform
/// does. Run only by the tests above, with their environment.
#[tokio::test]
#[ignore = "run by the CA-store tests in a child process"]
async fn child() {
    let mode = std::env::var(MODE).expect("run by the CA-store tests");
    let cx = gatehouse::context::from_env::<gatehouse::haravan::Haravan>()
        .await
        .expect("the function's configuration");
    let event = std::fs::read_to_string("events/haravan-webhooks-shop-update.json").unwrap();
    let event: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest =
        serde_json::from_str(&event).unwrap();
    let mut context = lambda_http::lambda_runtime::Context::default();
    context.deadline = (std::time::SystemTime::now() + Duration::from_secs(30))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let resp = gatehouse::lambda::invoke(
        &cx,
        &gatehouse::routes::HARAVAN_WEBHOOKS,
        lambda_http::lambda_runtime::LambdaEvent::new(event, context),
    )
    .await;
    // Acknowledged: the secret was read and the delivery recorded, so both AWS clients ran.
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    if mode == "platform" {
        cx.http.client().expect("the platform client builds");
    }
}
