//! Typed records: a stored item's attributes as a serde struct.
//!
//! Each kind of item the platforms store has a struct that says what its attributes are
//! ([`Record`]); it is encoded into an [`Item`]'s attributes with [`Record::to_attrs`] and read
//! back with [`Record::from_item`] (or [`Item::record`]). The struct's field names are the
//! attribute names on disk, so a record must keep them as they are: items stored before the
//! record existed still decode, by `#[serde(default)]` or `Option` for whatever an older item
//! may lack. An item that does not decode (an attribute of the wrong type) is
//! [`StoreError::Invalid`] naming the record, never a panic.
//!
//! A record describes a whole item, but writes that change some attributes in place
//! ([`crate::store::Store::update`]) stay partial: they set only what they change, so that
//! concurrent writers of other attributes are never undone.

use super::{Item, Key, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A kind of stored item, as a serde struct whose fields are its attributes.
pub trait Record: Serialize + DeserializeOwned {
    /// What the record is, for messages (e.g. "Haravan install").
    const NAME: &'static str;

    /// The attributes this record is stored as.
    fn to_attrs(&self) -> Result<Map<String, Value>, StoreError> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(StoreError::Invalid(format!(
                "a {} does not encode as attributes",
                Self::NAME
            ))),
            Err(e) => Err(StoreError::Invalid(format!(
                "a {} does not encode: {e}",
                Self::NAME
            ))),
        }
    }

    /// The record held by these attributes.
    fn from_attrs(attrs: &Map<String, Value>) -> Result<Self, StoreError> {
        serde_json::from_value(Value::Object(attrs.clone())).map_err(|e| {
            StoreError::Invalid(format!("the stored {} does not decode: {e}", Self::NAME))
        })
    }

    /// The record a stored item holds. The message names the record and the item's partition
    /// (not its sort key, which may be a session id).
    fn from_item(item: &Item) -> Result<Self, StoreError> {
        serde_json::from_value(Value::Object(item.attrs.clone())).map_err(|e| {
            StoreError::Invalid(format!(
                "the stored {} in `{}` does not decode: {e}",
                Self::NAME,
                item.key.pk
            ))
        })
    }

    /// An item at `key` holding this record (not expiring; see [`Item::expiring_at`]).
    fn to_item(&self, key: Key) -> Result<Item, StoreError> {
        Ok(Item::new(key, self.to_attrs()?))
    }
}

impl Item {
    /// The record this item holds (see [`Record::from_item`]).
    pub fn record<T: Record>(&self) -> Result<T, StoreError> {
        T::from_item(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Inner {
        #[serde(default)]
        flag: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed: Option<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Example {
        name: String,
        #[serde(default)]
        count: i64,
        #[serde(flatten)]
        inner: Inner,
    }

    impl Record for Example {
        const NAME: &'static str = "example";
    }

    fn item(attrs: Value) -> Item {
        let Value::Object(attrs) = attrs else {
            panic!("not an object")
        };
        Item::new(Key::new("example#pk", "a-session-id"), attrs)
    }

    #[test]
    fn a_record_round_trips_with_its_attribute_names() {
        let record = Example {
            name: "n".into(),
            count: 3,
            inner: Inner {
                flag: true,
                sealed: None,
            },
        };
        let attrs = record.to_attrs().unwrap();
        assert_eq!(
            Value::Object(attrs.clone()),
            json!({"name": "n", "count": 3, "flag": true})
        );
        let stored = record.to_item(Key::new("example#pk", "sk")).unwrap();
        assert_eq!(stored.attrs, attrs);
        assert_eq!(stored.record::<Example>().unwrap(), record);
    }

    #[test]
    fn older_items_decode_with_defaults_and_unknown_attributes_are_ignored() {
        let old = item(json!({"name": "n", "shop": {"name": "x"}}));
        assert_eq!(
            old.record::<Example>().unwrap(),
            Example {
                name: "n".into(),
                count: 0,
                inner: Inner {
                    flag: false,
                    sealed: None
                }
            }
        );
        let null = item(json!({"name": "n", "sealed": null}));
        assert_eq!(null.record::<Example>().unwrap().inner.sealed, None);
    }

    #[test]
    fn an_item_that_does_not_decode_is_invalid_and_named() {
        for bad in [
            json!({"count": 1}),
            json!({"name": 5}),
            json!({"name": "n", "count": "many"}),
            json!({"name": "n", "flag": "yes"}),
        ] {
            match item(bad.clone()).record::<Example>() {
                Err(StoreError::Invalid(m)) => {
                    assert!(m.contains("stored example in `example#pk`"), "{m}");
                    assert!(!m.contains("a-session-id"), "{m}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            Example::from_attrs(&Map::new()),
            Err(StoreError::Invalid(m)) if m.contains("example")
        ));
    }

    #[test]
    fn a_record_that_is_not_an_object_does_not_encode() {
        #[derive(Serialize, Deserialize)]
        struct Bare(String);
        impl Record for Bare {
            const NAME: &'static str = "bare";
        }
        assert!(matches!(
            Bare("x".into()).to_attrs(),
            Err(StoreError::Invalid(m)) if m.contains("bare")
        ));
    }
}
