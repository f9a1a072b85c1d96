//! The operator command, `gatehouse-admin` (`gatehouse::admin`), on both stores: a key
//! rotation end to end (tokens sealed under the old key stay readable, cookies signed under it
//! keep verifying, a re-seal interrupted after one batch and run again moves everything to the
//! new key with nothing lost, a refresh racing the re-seal is not overwritten, the old key then
//! retires), a revocation (record and tokens gone, one `connection.removed` event), replay from
//! the outbox and from the dead-letter queue onto moto's EventBridge, listings without a token,
//! and the built binary itself.

use gatehouse::admin::{self, Command, keys};
use gatehouse::config::Vars;
use gatehouse::connection::Common;
use gatehouse::context::Deps;
use gatehouse::crypto::{KeyRing, sealed_key_id};
use gatehouse::events::{Event, names};
use gatehouse::refresh::{Grant, SealedTokens};
use gatehouse::store::{Condition, Item, Key, Record, Store, StoreError, Write};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A store on one backend, its dependencies, and what to keep alive.
struct Setup {
    deps: Arc<Deps>,
    vars: Vars,
    _dir: tempfile::TempDir,
}

/// The embedded store with the local secrets file (development keys written first).
async fn embedded() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_DATA_DIR", dir.path().to_string_lossy());
    gatehouse::secrets::ensure_local_file(&dir.path().join("secrets.json"), &["momo"]).unwrap();
    let deps = Arc::new(Deps::from_vars(&vars).await.unwrap());
    Setup {
        deps,
        vars,
        _dir: dir,
    }
}

/// A fresh table and app secret on moto (DynamoDB and Secrets Manager); `None` without moto.
async fn on_moto() -> Option<Setup> {
    let sdk = crate::support::sdk_config().await?;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("gatehouse-admin-{}", uuid::Uuid::new_v4().simple());
    gatehouse::store::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &name)
        .await
        .unwrap();
    let key = gatehouse::crypto::random_token(32).unwrap();
    let arn = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&name)
        .secret_string(json!({"key_id": "old1", "key": key}).to_string())
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_DATA_DIR", dir.path().to_string_lossy());
    vars.set("TABLE_NAME", &name);
    vars.set("APP_SECRET_ID", arn);
    let deps = Arc::new(Deps::from_vars(&vars).await.unwrap());
    Some(Setup {
        deps,
        vars,
        _dir: dir,
    })
}

/// Stores a Haravan install for `org` whose tokens (`access-<org>`, `refresh-<org>`) are
/// sealed under `keys`' current key.
async fn haravan_install(store: &dyn Store, keys: &KeyRing, org: &str, end_user: Option<&str>) {
    let key = gatehouse::haravan::install_key(org);
    let grant = Grant {
        access_token: SecretString::from(format!("access-{org}")),
        refresh_token: Some(SecretString::from(format!("refresh-{org}"))),
        expires_in: 3600,
        extra: Vec::new(),
    };
    let Value::Object(mut attrs) = json!({"orgid": org, "scope": "openid org"}) else {
        unreachable!()
    };
    attrs.extend(
        SealedTokens::seal(keys, &key, &grant)
            .unwrap()
            .to_attrs()
            .unwrap(),
    );
    attrs.extend(
        Common::new("haravan", &key, end_user, None, gatehouse::store::now())
            .to_attrs()
            .unwrap(),
    );
    store
        .put(&Item::new(key, attrs), Condition::Absent)
        .await
        .unwrap();
}

/// Stores a Sesami install for `shop` whose token (`sesami-<shop>`) is sealed under `keys`.
async fn sesami_install(store: &dyn Store, keys: &KeyRing, shop: &str) {
    let key = gatehouse::sesami::install_key(shop);
    let install = gatehouse::sesami::Install {
        shop_id: shop.into(),
        name: Some(format!("Shop {shop}")),
        token_sealed: keys
            .seal(
                &format!("sesami-{shop}"),
                &format!("{}/{}", key.pk, key.sk),
                "token_sealed",
            )
            .unwrap(),
        expire_at: Some("NEVER".into()),
        scopes: vec!["Shop:Read".into()],
        installed_at: gatehouse::store::now(),
        connection: Common::new("sesami", &key, None, None, gatehouse::store::now()),
    };
    store
        .put(&install.to_item(key).unwrap(), Condition::Absent)
        .await
        .unwrap();
}

/// Every stored token opened, by item and attribute, and the key id each is sealed under.
async fn tokens(store: &dyn Store, keys: &KeyRing) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for prefix in ["install#haravan#", "install#sesami#", "token#momo#"] {
        for item in store.scan_prefix(prefix).await.unwrap() {
            let ctx = format!("{}/{}", item.key.pk, item.key.sk);
            for (name, value) in &item.attrs {
                let Some(sealed) = value.as_str().filter(|_| name.ends_with("_sealed")) else {
                    continue;
                };
                let plain = keys
                    .open(sealed, &ctx, name)
                    .unwrap_or_else(|_| panic!("{ctx} {name} does not open after the rotation"));
                out.insert(
                    format!("{ctx} {name}"),
                    (
                        plain.expose_secret().to_owned(),
                        sealed_key_id(sealed).unwrap().to_owned(),
                    ),
                );
            }
        }
    }
    out
}

/// A store that, at the re-seal's first write, lets a refresh by a container still holding the
/// old key ring land first on the same item (new tokens, sealed under the old key, written on
/// its token version as a refresh writes them), then passes the re-seal's write on.
struct RefreshRacer {
    inner: Arc<dyn Store>,
    old_keys: Arc<KeyRing>,
    fired: AtomicBool,
    raced: Mutex<Option<Key>>,
}

#[async_trait::async_trait]
impl Store for RefreshRacer {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        self.inner.put(item, condition).await
    }
    async fn update(
        &self,
        key: &Key,
        set: &Map<String, Value>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        if key.pk.starts_with("install#haravan#") && !self.fired.swap(true, Ordering::SeqCst) {
            let current = self.inner.get(key).await?.unwrap();
            let version = current.attrs["token_version"].clone();
            let grant = Grant {
                access_token: SecretString::from(format!("refreshed-{}", key.sk)),
                refresh_token: Some(SecretString::from(format!("refreshed-r-{}", key.sk))),
                expires_in: 3600,
                extra: Vec::new(),
            };
            let refreshed = SealedTokens::seal(&self.old_keys, key, &grant)
                .unwrap()
                .to_attrs()
                .unwrap();
            self.inner
                .update(
                    key,
                    &refreshed,
                    Condition::AttrEquals("token_version".into(), version),
                )
                .await?;
            *self.raced.lock().unwrap() = Some(key.clone());
        }
        self.inner.update(key, set, condition).await
    }
    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.take(key).await
    }
    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.query(pk).await
    }
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
    async fn transact(&self, writes: &[Write]) -> Result<(), StoreError> {
        self.inner.transact(writes).await
    }
    async fn query_index(
        &self,
        index: &gatehouse::store::Index,
        pk: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        self.inner.query_index(index, pk, after, limit).await
    }
}

/// Runs one command line through the code the binary runs, and returns what it printed.
async fn command(setup: &Setup, line: &str) -> Result<String, admin::AdminError> {
    let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let command = admin::parse(&args)?;
    let mut out = Vec::new();
    admin::execute(&setup.deps, &setup.vars, command, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

/// The whole rotation on one backend.
async fn rotation_end_to_end(setup: &Setup) {
    let store = setup.deps.store.clone();
    let old = setup.deps.secrets.app_keys().await.unwrap();
    let old_id = old.current_id().to_owned();
    for n in 0..7 {
        haravan_install(store.as_ref(), &old, &format!("{}", 1000 + n), None).await;
    }
    for n in 0..3 {
        sesami_install(store.as_ref(), &old, &format!("shop-{n}")).await;
    }
    // MoMo's cached access token, sealed like the connections' tokens but not a connection.
    let momo = Key::new("token#momo#collection", "collection");
    let cached = json!({"token_sealed": old.seal("momo-token", "token#momo#collection/collection",
                                                  "token_sealed").unwrap(),
                        "expires_at": gatehouse::store::now() + 3600});
    let Value::Object(cached) = cached else {
        unreachable!()
    };
    store
        .put(
            &Item::new(momo, cached).expiring_at(gatehouse::store::now() + 3600),
            Condition::Absent,
        )
        .await
        .unwrap();
    let before = tokens(store.as_ref(), &old).await;
    assert_eq!(before.len(), 7 * 2 + 3 + 1);
    let (signed_by, tag) = old.sign(b"a cookie's value");
    assert_eq!(signed_by, old_id);

    // Rotate: a new current key, the old one kept as a previous key.
    let printed = command(setup, "keys rotate").await.unwrap();
    let new = setup.deps.secrets.app_keys().await.unwrap();
    let new_id = new.current_id().to_owned();
    assert_ne!(new_id, old_id);
    assert_eq!(new.ids().collect::<Vec<_>>(), [new_id.as_str(), &old_id]);
    assert!(printed.contains(&new_id), "{printed}");
    let secret = setup.deps.secrets.raw_json("app").await.unwrap();
    assert!(secret["key"].as_str().unwrap().len() >= 32);
    assert!(!printed.contains(secret["key"].as_str().unwrap()));
    assert!(
        new.verify(&old_id, b"a cookie's value", &tag),
        "a cookie signed under the old key keeps verifying"
    );
    assert_eq!(
        tokens(store.as_ref(), &new).await,
        before,
        "every token opens under the new ring"
    );
    // A second rotation keeps every earlier key.
    let again = keys::rotate(&setup.deps.secrets, Some("third"))
        .await
        .unwrap();
    assert_eq!(again.previous, [new_id.as_str(), &old_id]);
    let new = setup.deps.secrets.app_keys().await.unwrap();
    let new_id = new.current_id().to_owned();
    assert_eq!(new_id, "third");

    // The old key cannot retire while tokens are sealed under it.
    assert!(matches!(
        keys::retire(&setup.deps.secrets, store.as_ref(), &old_id).await,
        Err(admin::AdminError::Refused(_))
    ));

    // Interrupted after one batch of two: two connections moved, the rest still readable.
    let printed = command(setup, "keys reseal --batch 2 --max-batches 1")
        .await
        .unwrap();
    assert!(printed.contains("stopped after 1 batch"), "{printed}");
    assert!(printed.contains("incomplete"), "{printed}");
    let midway = tokens(store.as_ref(), &new).await;
    let moved = midway.values().filter(|(_, id)| *id == new_id).count();
    assert!((1..=4).contains(&moved), "{midway:?}");
    let plain = |m: &BTreeMap<String, (String, String)>| -> BTreeMap<String, String> {
        m.iter().map(|(k, (p, _))| (k.clone(), p.clone())).collect()
    };
    assert_eq!(plain(&midway), plain(&before), "nothing lost midway");

    // Run again, with a refresh by a container still on the old ring racing the first write.
    let racer = Arc::new(RefreshRacer {
        inner: store.clone(),
        old_keys: old.clone(),
        fired: AtomicBool::new(false),
        raced: Mutex::new(None),
    });
    let mut lines = Vec::new();
    let report = keys::reseal(
        racer.as_ref(),
        &new,
        &keys::ResealOptions {
            batch: 3,
            max_batches: None,
        },
        &mut |line| lines.push(line.to_owned()),
    )
    .await
    .unwrap();
    assert!(report.complete, "{report:?}");
    assert!(report.remaining.is_empty(), "{report:?}");
    assert_eq!(report.raced, 1, "{report:?}");
    assert!(lines.iter().any(|l| l.starts_with("batch ")), "{lines:?}");
    let raced = racer.raced.lock().unwrap().clone().unwrap();
    let after = tokens(store.as_ref(), &new).await;
    assert!(
        after.values().all(|(_, id)| *id == new_id),
        "every value under the new key: {after:?}"
    );
    let mut expected = plain(&before);
    let ctx = format!("{}/{}", raced.pk, raced.sk);
    expected.insert(
        format!("{ctx} access_token_sealed"),
        format!("refreshed-{}", raced.sk),
    );
    expected.insert(
        format!("{ctx} refresh_token_sealed"),
        format!("refreshed-r-{}", raced.sk),
    );
    assert_eq!(
        plain(&after),
        expected,
        "the refresh's tokens kept, the rest as before"
    );
    // The token version is the refresh's: the re-seal did not change it.
    let item = store.get(&raced).await.unwrap().unwrap();
    assert!(item.attrs["token_version"].is_string());

    // Run a third time: nothing to do. Then the old keys retire.
    let printed = command(setup, "keys reseal").await.unwrap();
    assert!(
        printed.contains("0 re-sealed") && printed.contains("nothing remains"),
        "{printed}"
    );
    let left = keys::retire(&setup.deps.secrets, store.as_ref(), &old_id)
        .await
        .unwrap();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&old_id));
    let ring = setup.deps.secrets.app_keys().await.unwrap();
    assert_eq!(plain(&tokens(store.as_ref(), &ring).await), expected);
    assert!(matches!(
        keys::retire(&setup.deps.secrets, store.as_ref(), "third").await,
        Err(admin::AdminError::Refused(_))
    ));
}

#[tokio::test]
async fn key_rotation_end_to_end_on_the_embedded_store() {
    let setup = embedded().await;
    let file = setup.deps.config.secrets_file.clone();
    rotation_end_to_end(&setup).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secrets file stays private");
}

#[tokio::test]
async fn key_rotation_end_to_end_on_dynamodb_and_secrets_manager() {
    let Some(setup) = on_moto().await else { return };
    rotation_end_to_end(&setup).await;
}

/// The outbox's events for `tenant`.
async fn events_of(store: &dyn Store, tenant: &str) -> Vec<Event> {
    store
        .scan_prefix("outbox#")
        .await
        .unwrap()
        .iter()
        .map(|i| Event::from_attrs(&i.attrs).unwrap())
        .filter(|e| e.tenant == tenant)
        .collect()
}

async fn revoke_and_list(setup: &Setup) {
    let store = setup.deps.store.clone();
    let keys = setup.deps.secrets.app_keys().await.unwrap();
    haravan_install(store.as_ref(), &keys, "2001", Some("user-1")).await;
    haravan_install(store.as_ref(), &keys, "2002", None).await;
    sesami_install(store.as_ref(), &keys, "shop-9").await;
    let sealed: Vec<String> = store
        .scan_prefix("install#")
        .await
        .unwrap()
        .iter()
        .flat_map(|i| {
            i.attrs
                .iter()
                .filter(|(n, _)| n.ends_with("_sealed"))
                .map(|(_, v)| v.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(sealed.len(), 5);
    let no_token = |text: &str| {
        for secret in &sealed {
            assert!(!text.contains(secret.as_str()), "{text}");
        }
        for plain in ["access-", "refresh-", "sesami-shop"] {
            assert!(!text.contains(plain), "{text}");
        }
    };

    let table = command(setup, "connections list").await.unwrap();
    assert!(
        table.contains("2001") && table.contains("shop-9"),
        "{table}"
    );
    assert!(table.contains("3 connection(s)"), "{table}");
    no_token(&table);
    let json = command(setup, "connections list --platform haravan --json")
        .await
        .unwrap();
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["status"] == "active"));
    no_token(&json);
    let mine = command(setup, "connections list --end-user user-1 --json")
        .await
        .unwrap();
    assert_eq!(mine.lines().count(), 1, "{mine}");
    assert!(mine.contains("2001"));
    for line in [
        "connections show haravan 2001",
        "connections show haravan 2001 --json",
        "connections show sesami shop-9",
    ] {
        let shown = command(setup, line).await.unwrap();
        assert!(shown.contains("active"), "{shown}");
        no_token(&shown);
    }
    assert!(matches!(
        command(setup, "connections show haravan 9999").await,
        Err(admin::AdminError::NotFound(_))
    ));

    // Revoke: the record and its tokens gone, one connection.removed event, status revoked.
    let printed = command(setup, "connections revoke haravan 2001")
        .await
        .unwrap();
    assert!(printed.contains("revoked haravan 2001"), "{printed}");
    assert!(
        store
            .get(&gatehouse::haravan::install_key("2001"))
            .await
            .unwrap()
            .is_none()
    );
    let events = events_of(store.as_ref(), "2001").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].name, names::CONNECTION_REMOVED);
    assert_eq!(events[0].data["status"], "revoked");
    no_token(&events[0].data.to_string());
    let table = command(setup, "connections list").await.unwrap();
    assert!(
        !table.contains("2001") && table.contains("2 connection(s)"),
        "{table}"
    );
    assert!(matches!(
        command(setup, "connections revoke haravan 2001").await,
        Err(admin::AdminError::NotFound(_))
    ));
    assert_eq!(events_of(store.as_ref(), "2001").await.len(), 1);
    command(setup, "connections revoke sesami shop-9")
        .await
        .unwrap();
    assert_eq!(events_of(store.as_ref(), "shop-9").await.len(), 1);
}

#[tokio::test]
async fn revoke_and_list_on_the_embedded_store() {
    revoke_and_list(&embedded().await).await;
}

#[tokio::test]
async fn revoke_and_list_on_dynamodb() {
    let Some(setup) = on_moto().await else { return };
    revoke_and_list(&setup).await;
}

/// Replay from the outbox and from the dead-letter queue, onto a bus on moto; the store is the
/// embedded one (the bus is independent of it).
#[tokio::test]
async fn replay_from_the_outbox_and_from_the_dead_letter_queue() {
    let Some(bus) = crate::publisher::Bus::create().await else {
        return;
    };
    let mut setup = embedded().await;
    setup.vars.set("EVENT_BUS_NAME", &bus.name);
    let store = setup.deps.store.clone();
    let first = Event::new(
        "haravan",
        names::CONNECTION_CREATED,
        "3001",
        json!({"a": 1}),
    );
    let second = Event::new("momo", names::PAYMENT_SUCCEEDED, "ref-1", json!({"b": 2}));
    store
        .transact(&[first.write().unwrap(), second.write().unwrap()])
        .await
        .unwrap();

    let printed = command(&setup, &format!("events replay haravan {}", first.id))
        .await
        .unwrap();
    assert!(printed.contains(&first.id), "{printed}");
    let delivered = bus.drain().await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["detail"]["id"], first.id.as_str());
    assert_eq!(delivered[0]["source"], "gatehouse.haravan");
    assert_eq!(delivered[0]["detail-type"], names::CONNECTION_CREATED);
    assert!(matches!(
        command(&setup, &format!("events replay haravan {}", second.id)).await,
        Err(admin::AdminError::NotFound(_))
    ));

    // The dead-letter queue: one range covering both events, one message that is not a range.
    let sqs = aws_sdk_sqs::Client::new(&bus.sdk);
    let dlq = sqs
        .create_queue()
        .queue_name(format!("dlq-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let at = gatehouse::rfc3339::format(first.time);
    let range = json!({
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
        "DDBStreamBatchInfo": {"shardId": "shardId-0001", "batchSize": 2,
            "approximateArrivalOfFirstRecord": at, "approximateArrivalOfLastRecord": at,
            "streamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"}
    });
    for body in [range.to_string(), "not a range".to_owned()] {
        sqs.send_message()
            .queue_url(&dlq)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let printed = command(&setup, &format!("events replay --dlq {dlq}"))
        .await
        .unwrap();
    assert!(
        printed.contains(
            "1 message(s) re-driven and deleted, 2 event(s) published, 1 message(s) left"
        ),
        "{printed}"
    );
    let mut ids: Vec<String> = bus
        .drain()
        .await
        .iter()
        .map(|d| d["detail"]["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected = vec![first.id.clone(), second.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    // Only the message that is not a range is left (invisible for its timeout meanwhile).
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let count = |name: aws_sdk_sqs::types::QueueAttributeName| -> u64 {
        attrs.attributes().unwrap()[&name].parse().unwrap()
    };
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        1
    );
}

/// The binary as built (`cargo build -p gatehouse-admin`): help,
/// a usage error's exit status, and a listing on the embedded store. The test command builds it
/// and names it in `GATEHOUSE_ADMIN_BIN`, which must then exist; without that variable the
/// workspace's debug build is used if there is one, else the test says it is skipped.
#[tokio::test]
async fn the_built_binary_lists_without_tokens() {
    let binary = match std::env::var_os("GATEHOUSE_ADMIN_BIN").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            assert!(
                path.exists(),
                "GATEHOUSE_ADMIN_BIN={} does not exist",
                path.display()
            );
            path
        }
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
                std::path::PathBuf::from,
            );
            let binary = target.join("debug/gatehouse-admin");
            if !binary.exists() {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "{} is not built: the binary's own test is skipped",
                    binary.display()
                );
                return;
            }
            binary
        }
    };
    let setup = embedded().await;
    let keys = setup.deps.secrets.app_keys().await.unwrap();
    haravan_install(setup.deps.store.as_ref(), &keys, "4001", None).await;
    let run = |args: &[&str]| {
        let mut command = std::process::Command::new(&binary);
        command.args(args).env_clear().env(
            "GATEHOUSE_DATA_DIR",
            setup.vars.get("GATEHOUSE_DATA_DIR").unwrap(),
        );
        crate::support::output_within(command, std::time::Duration::from_secs(60))
    };
    let help = run(&["--help"]).await;
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("keys reseal"));
    assert_eq!(run(&["keys", "spin"]).await.status.code(), Some(2));
    let listed = run(&["connections", "list", "--json"]).await;
    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8(listed.stdout).unwrap();
    let row: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(row["tenant"], "4001");
    assert!(
        !text.contains("access-4001") && !text.contains("v2."),
        "{text}"
    );
    assert_eq!(
        admin::parse(&["connections".into(), "list".into()]).unwrap(),
        Command::ConnectionsList {
            platform: None,
            end_user: None,
            json: false
        }
    );
}

/// Without a bus, a replay POSTs the event to `GATEHOUSE_LOCAL_EVENTS_URL` as the local relay
/// does: the envelope a rule's target receives, with the event's own id.
#[tokio::test]
async fn replay_without_a_bus_posts_to_the_local_events_url() {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut setup = embedded().await;
    let event = Event::new("sesami", names::CONNECTION_UPDATED, "shop-1", json!({}));
    setup
        .deps
        .store
        .put(&event.to_item().unwrap(), Condition::Always)
        .await
        .unwrap();
    assert!(matches!(
        command(&setup, &format!("events replay sesami {}", event.id)).await,
        Err(admin::AdminError::Usage(_))
    ));
    setup.vars.set(
        "GATEHOUSE_LOCAL_EVENTS_URL",
        format!("http://{addr}/events"),
    );
    command(&setup, &format!("events replay sesami {}", event.id))
        .await
        .unwrap();
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["detail"]["id"], event.id.as_str());
    assert_eq!(got[0]["source"], "gatehouse.sesami");
}
