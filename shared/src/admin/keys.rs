//! `keys rotate | reseal | retire`: the app key's rotation, without anything becoming unreadable.
//!
//! The app secret is `{"key_id", "key", "previous_keys": [{"id", "key"}]}`: the current key
//! signs cookies and seals tokens; every previous key still verifies and opens
//! ([`crate::crypto::KeyRing`]). So a rotation is three steps, each safe on its own:
//!
//! 1. [`rotate`]: a new random key becomes current and the old current one the first previous
//!    key (the earlier previous keys all kept). Containers pick it up within the secrets' TTL;
//!    until then they seal under the old key, which everything can still open.
//! 2. [`reseal`]: every stored token sealed under an older key is opened and sealed again under
//!    the current one, in bounded batches, each item by a conditional in-place write on the
//!    value read, so that a concurrent refresh (which writes new tokens) is never overwritten:
//!    the write fails, the item is read again and, if still under an older key, re-sealed. The
//!    token version is kept: the tokens are the same, only their sealing changed. Interrupted
//!    and run again, it skips what is already current and finishes the rest.
//! 3. [`retire`]: a previous key is dropped from the secret, refused while any stored token is
//!    still sealed under it.
//!
//! Tokens are found through [`crate::store::BY_PLATFORM`] (every connection carries its
//! attributes), never by a Scan, and MoMo's cached access tokens at their keys.

use super::AdminError;
use super::connections::{Pages, platforms};
use crate::connection::{PLATFORM_SHARDS, platform_partition};
use crate::crypto::{KeyRing, sealed_key_id};
use crate::secrets::{APP, Secrets};
use crate::store::{BY_PLATFORM, Condition, Item, Key, Store, StoreError};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The items `keys reseal` reads and writes per batch unless told otherwise.
pub const DEFAULT_BATCH: usize = 100;

/// How many times one item is read again after a concurrent write before it is left for the
/// next run.
const ATTEMPTS: usize = 5;

/// The length of a generated key, in base64url characters of random bytes (32 bytes: 43).
const KEY_BYTES: usize = 32;

/// What a rotation did: the key ids, never the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The new current key's id.
    pub current: String,
    /// The previous keys' ids, newest first.
    pub previous: Vec<String>,
}

/// The app secret's JSON, with its keys in order (current first) and whatever else it holds.
fn read_ring(json: &Map<String, Value>) -> Result<Vec<(String, String)>, AdminError> {
    let malformed = |detail: &str| {
        AdminError::Secrets(crate::secrets::SecretsError::Malformed {
            name: APP.into(),
            detail: detail.into(),
        })
    };
    let id = json
        .get("key_id")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no key_id"))?;
    let key = json
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no key"))?;
    let mut ring = vec![(id.to_owned(), key.to_owned())];
    for previous in json
        .get("previous_keys")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let (Some(id), Some(key)) = (
            previous.get("id").and_then(Value::as_str),
            previous.get("key").and_then(Value::as_str),
        ) else {
            return Err(malformed("a previous key lacks its id or key"));
        };
        ring.push((id.to_owned(), key.to_owned()));
    }
    Ok(ring)
}

/// `json` with the keys of `ring` (current first) in place of its own.
fn write_ring(mut json: Map<String, Value>, ring: &[(String, String)]) -> Map<String, Value> {
    if let Some((id, key)) = ring.first() {
        json.insert("key_id".into(), id.clone().into());
        json.insert("key".into(), key.clone().into());
    }
    let previous: Vec<Value> = ring
        .iter()
        .skip(1)
        .map(|(id, key)| json!({"id": id, "key": key}))
        .collect();
    json.insert("previous_keys".into(), Value::Array(previous));
    json
}

/// Checks that `ring` makes a key ring (ids, lengths, no id twice), before it is written.
fn check_ring(ring: &[(String, String)]) -> Result<(), AdminError> {
    let mut seen = std::collections::BTreeSet::new();
    if let Some((id, _)) = ring.iter().find(|(id, _)| !seen.insert(id.as_str())) {
        return Err(AdminError::Refused(format!(
            "key id `{id}` is in the app secret twice"
        )));
    }
    let secrets: Vec<(String, secrecy::SecretString)> = ring
        .iter()
        .map(|(id, key)| (id.clone(), key.clone().into()))
        .collect();
    KeyRing::new(secrets.iter().map(|(id, key)| (id.as_str(), key)))?;
    Ok(())
}

/// A new key id: `k` and the UTC time to the second, so ids sort by age and say when.
fn new_key_id() -> String {
    let stamp = crate::rfc3339::format(crate::store::now());
    format!("k{}", stamp.replace(['-', ':', 'Z'], "").replace('T', "t"))
}

/// Rotates the app key: a new random key (`key_id` as its id, or a generated one) becomes
/// current, the current one becomes the first previous key, and every earlier previous key is
/// kept. Written to the app secret (Secrets Manager's `PutSecretValue` when `APP_SECRET_ID` is
/// set, else the local secrets file, mode 0600); the secret's other members are kept.
pub async fn rotate(secrets: &Secrets, key_id: Option<&str>) -> Result<Rotated, AdminError> {
    let json = secrets.raw_json(APP).await?;
    let mut ring = read_ring(&json)?;
    let id = key_id.map_or_else(new_key_id, str::to_owned);
    if ring.iter().any(|(known, _)| *known == id) {
        return Err(AdminError::Refused(format!(
            "key id `{id}` is already in the app secret; choose another (--key-id)"
        )));
    }
    let key = crate::crypto::random_token(KEY_BYTES)?;
    ring.insert(0, (id.clone(), key.clone()));
    check_ring(&ring)?;
    secrets.write_json(APP, &write_ring(json, &ring)).await?;
    // Neither store compares before it writes: a rotation by someone else at the same moment
    // could have replaced this one's write, and containers may already seal under this key.
    // So it is read back and, if another key won, this one is kept as a previous key.
    for _ in 0..ATTEMPTS {
        let json = secrets.raw_json(APP).await?;
        let stored = read_ring(&json)?;
        if stored.iter().any(|(known, _)| *known == id) {
            ring = stored;
            break;
        }
        ring = stored;
        ring.insert(1.min(ring.len()), (id.clone(), key.clone()));
        check_ring(&ring)?;
        secrets.write_json(APP, &write_ring(json, &ring)).await?;
    }
    let mut ids = ring.into_iter().map(|(id, _)| id);
    Ok(Rotated {
        current: ids.next().unwrap_or_default(),
        previous: ids.collect(),
    })
}

/// How `keys reseal` walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResealOptions {
    /// Items per batch (one index page): 1 to [`crate::store::MAX_INDEX_PAGE`].
    pub batch: usize,
    /// Stop after this many batches (the rest is done by the next run).
    pub max_batches: Option<usize>,
}

impl Default for ResealOptions {
    fn default() -> Self {
        Self {
            batch: DEFAULT_BATCH,
            max_batches: None,
        }
    }
}

/// What a reseal (or a count) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Connections read.
    pub seen: usize,
    /// Connections whose sealed values this run re-sealed under the current key.
    pub resealed: usize,
    /// Of those, the ones a concurrent write changed first (read again and retried).
    pub raced: usize,
    /// Batches done.
    pub batches: usize,
    /// Whether every connection was walked (false when stopped by `max_batches`).
    pub complete: bool,
    /// Sealed values still under each older key, by key id (of what was walked).
    pub remaining: BTreeMap<String, usize>,
    /// Connections whose values could not be opened or written (left as they are).
    pub failed: usize,
}

/// The sealed values of an item: every string attribute named `*_sealed` that is a sealed
/// value (`v1.`/`v2.`), by attribute name.
fn sealed_values(item: &Item) -> Vec<(&str, &str)> {
    item.attrs
        .iter()
        .filter(|(name, _)| name.ends_with("_sealed"))
        .filter_map(|(name, value)| Some((name.as_str(), value.as_str()?)))
        .filter(|(_, value)| sealed_key_id(value).is_some())
        .collect()
}

/// The ids of the older keys `item`'s values are sealed under, one per value.
fn older<'a>(item: &'a Item, current: &str) -> Vec<&'a str> {
    sealed_values(item)
        .into_iter()
        .filter_map(|(_, v)| sealed_key_id(v))
        .filter(|id| *id != current)
        .collect()
}

/// The condition that `item`'s tokens are still the ones read: the first sealed value
/// (`access_token_sealed` sorts before the others; every token write seals it again with a
/// fresh nonce, so any concurrent write of tokens changes it).
fn as_read(item: &Item) -> Option<Condition> {
    let mut values = sealed_values(item);
    values.sort();
    values
        .first()
        .map(|(name, value)| Condition::AttrEquals((*name).into(), (*value).into()))
}

/// Outcome of one item.
enum Resealed {
    /// Already under the current key.
    Current,
    /// Re-sealed; `raced` when a concurrent write came first.
    Done { raced: bool },
    /// Gone meanwhile (an uninstall).
    Gone,
}

/// Re-seals one item's values under the current key, conditioned on what was read; on a
/// concurrent write, reads again and retries.
async fn reseal_item(store: &dyn Store, keys: &KeyRing, key: &Key) -> Result<Resealed, AdminError> {
    let ctx = format!("{}/{}", key.pk, key.sk);
    let mut raced = false;
    for _ in 0..ATTEMPTS {
        let Some(item) = store.get(key).await? else {
            return Ok(Resealed::Gone);
        };
        if older(&item, keys.current_id()).is_empty() {
            return Ok(if raced {
                Resealed::Done { raced }
            } else {
                Resealed::Current
            });
        }
        let Some(condition) = as_read(&item) else {
            return Ok(Resealed::Current);
        };
        let mut set = Map::new();
        for (name, value) in sealed_values(&item) {
            if sealed_key_id(value) == Some(keys.current_id()) {
                continue;
            }
            let plain = keys.open(value, &ctx, name)?;
            set.insert(
                name.to_owned(),
                keys.seal(plain.expose_secret(), &ctx, name)?.into(),
            );
        }
        match store.update(key, &set, condition).await {
            Ok(()) => return Ok(Resealed::Done { raced }),
            Err(StoreError::ConditionFailed) => raced = true,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AdminError::Refused(format!(
        "an item in `{}` kept changing",
        key.pk
    )))
}

/// Re-seals every connection's tokens under `keys`' current key, walking every
/// [`BY_PLATFORM`] shard of every platform in batches of `options.batch`, `progress` told after
/// each batch. With `max_batches`, stops after that many (the report says it is incomplete);
/// run again, it skips what is current and continues.
pub async fn reseal(
    store: &dyn Store,
    keys: &KeyRing,
    options: &ResealOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ResealReport, AdminError> {
    walk(store, keys, options, true, progress).await
}

/// Counts, without writing, the sealed values under each older key.
pub async fn count(store: &dyn Store, keys: &KeyRing) -> Result<ResealReport, AdminError> {
    walk(store, keys, &ResealOptions::default(), false, &mut |_| {}).await
}

async fn walk(
    store: &dyn Store,
    keys: &KeyRing,
    options: &ResealOptions,
    write: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ResealReport, AdminError> {
    let current = keys.current_id().to_owned();
    let mut report = ResealReport::default();
    for platform in platforms(None)? {
        for shard in 0..PLATFORM_SHARDS {
            let mut pages = Pages::new(
                BY_PLATFORM,
                platform_partition(platform, shard),
                options.batch,
            );
            while let Some(page) = pages.next(store).await? {
                if page.is_empty() {
                    continue;
                }
                if options.max_batches.is_some_and(|max| report.batches >= max) {
                    progress(&format!(
                        "stopped after {} batch(es); run again to continue",
                        report.batches
                    ));
                    return Ok(report);
                }
                let before = report.resealed;
                for indexed in &page {
                    report.seen += 1;
                    // The index's copy tells what needs work; the write reads the item itself.
                    if older(indexed, &current).is_empty() || !write {
                        for id in older(indexed, &current) {
                            *report.remaining.entry(id.to_owned()).or_default() += 1;
                        }
                        continue;
                    }
                    match reseal_item(store, keys, &indexed.key).await {
                        Ok(Resealed::Done { raced }) => {
                            report.resealed += 1;
                            report.raced += usize::from(raced);
                        }
                        Ok(Resealed::Current | Resealed::Gone) => {}
                        Err(e) => {
                            tracing::warn!(pk = %indexed.key.pk, error = %e, "not re-sealed");
                            report.failed += 1;
                            for id in older(indexed, &current) {
                                *report.remaining.entry(id.to_owned()).or_default() += 1;
                            }
                        }
                    }
                }
                report.batches += 1;
                if write {
                    progress(&format!(
                        "batch {}: {platform} shard {shard:02}: {} read, {} re-sealed ({} so far)",
                        report.batches,
                        page.len(),
                        report.resealed - before,
                        report.resealed
                    ));
                }
            }
        }
    }
    // MoMo's cached access tokens are sealed too, one item per product: not connections, so
    // not in the index, but few and at known keys.
    for product in MOMO_PRODUCTS {
        let key = crate::momo::token_key(product);
        let Some(item) = store.get(&key).await? else {
            continue;
        };
        report.seen += 1;
        let outcome = if write && !older(&item, &current).is_empty() {
            reseal_item(store, keys, &key).await
        } else {
            Ok(Resealed::Current)
        };
        match outcome {
            Ok(Resealed::Done { raced }) => {
                report.resealed += 1;
                report.raced += usize::from(raced);
            }
            Ok(Resealed::Current | Resealed::Gone) if write => {}
            Ok(_) => {
                for id in older(&item, &current) {
                    *report.remaining.entry(id.to_owned()).or_default() += 1;
                }
            }
            Err(e) => {
                tracing::warn!(product, error = %e, "MoMo's cached token not re-sealed");
                report.failed += 1;
                for id in older(&item, &current) {
                    *report.remaining.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
    }
    report.complete = true;
    Ok(report)
}

/// MoMo's products, each with its cached access token ([`crate::momo::token_key`]).
const MOMO_PRODUCTS: [&str; 3] = ["collection", "disbursement", "remittance"];

/// Prints a reseal's summary.
pub fn print_report(
    report: &ResealReport,
    current: &str,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), AdminError> {
    writeln!(
        out,
        "{} connection(s) read, {} re-sealed under `{current}` ({} after a concurrent write), {} failed",
        report.seen, report.resealed, report.raced, report.failed
    )?;
    if !report.complete {
        writeln!(out, "incomplete: run `keys reseal` again to continue")?;
    } else if report.remaining.is_empty() {
        writeln!(out, "nothing remains sealed under an older key")?;
    } else {
        for (id, n) in &report.remaining {
            writeln!(out, "{n} value(s) remain sealed under `{id}`")?;
        }
    }
    Ok(())
}

/// Drops the previous key `key_id` from the app secret, only if no connection's token is
/// still sealed under it (counted through the index; the current key cannot be retired).
/// Returns the ids left, current first.
pub async fn retire(
    secrets: &Secrets,
    store: &dyn Store,
    key_id: &str,
) -> Result<Vec<String>, AdminError> {
    let json = secrets.raw_json(APP).await?;
    let mut ring = read_ring(&json)?;
    match ring.iter().position(|(id, _)| id == key_id) {
        None => {
            return Err(AdminError::NotFound(format!(
                "no key `{key_id}` in the app secret"
            )));
        }
        Some(0) => {
            return Err(AdminError::Refused(format!(
                "`{key_id}` is the current key; rotate first"
            )));
        }
        Some(n) => {
            let keys = secrets.app_keys().await?;
            let report = count(store, &keys).await?;
            if let Some(n) = report.remaining.get(key_id) {
                return Err(AdminError::Refused(format!(
                    "{n} stored value(s) are still sealed under `{key_id}`; run `keys reseal` first"
                )));
            }
            ring.remove(n);
        }
    }
    check_ring(&ring)?;
    secrets.write_json(APP, &write_ring(json, &ring)).await?;
    Ok(ring.into_iter().map(|(id, _)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_reads_and_writes_in_order_keeping_other_members() {
        let json = json!({"key_id": "b", "key": "kb", "previous_keys": [{"id": "a", "key": "ka"}],
                          "note": "kept"});
        let Value::Object(json) = json else { panic!() };
        let mut ring = read_ring(&json).unwrap();
        assert_eq!(ring, [("b".into(), "kb".into()), ("a".into(), "ka".into())]);
        ring.insert(0, ("c".into(), "kc".into()));
        let written = write_ring(json, &ring);
        assert_eq!(
            Value::Object(written),
            json!({"key_id": "c", "key": "kc", "note": "kept", "previous_keys": [
                {"id": "b", "key": "kb"}, {"id": "a", "key": "ka"}]})
        );
        assert!(new_key_id().starts_with('k'));
        assert!(new_key_id().bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
