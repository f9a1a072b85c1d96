//! The embedded store (local). In-memory placeholder until the store branch lands.

use super::*;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The store in a file on local disk.
pub struct EmbeddedStore(Mutex<BTreeMap<Key, Item>>);

impl EmbeddedStore {
    /// Opens the store.
    pub fn open(_path: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        Ok(Self(Mutex::new(BTreeMap::new())))
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(key)
            .filter(|i| i.is_live(now()))
            .cloned())
    }
    async fn put(&self, item: &Item, c: Condition) -> Result<(), StoreError> {
        check_attrs(item)?;
        let mut m = self.0.lock().unwrap();
        let live = m.get(&item.key).filter(|i| i.is_live(now()));
        let ok = match &c {
            Condition::Always => true,
            Condition::Absent => live.is_none(),
            Condition::AttrEquals(n, v) => live.is_some_and(|i| i.attrs.get(n) == Some(v)),
        };
        if !ok {
            return Err(StoreError::ConditionFailed);
        }
        m.insert(item.key.clone(), item.clone());
        Ok(())
    }
    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .remove(key)
            .filter(|i| i.is_live(now())))
    }
    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .values()
            .filter(|i| i.key.pk == pk && i.is_live(now()))
            .cloned()
            .collect())
    }
}
