//! The DynamoDB store (deployed). Placeholder until the store branch lands.

use super::*;

/// The store on a DynamoDB table.
pub struct DynamoStore;

impl DynamoStore {
    /// A store on `table`.
    pub fn new(_client: aws_sdk_dynamodb::Client, _table: impl Into<String>) -> Self {
        Self
    }
}

#[async_trait::async_trait]
impl Store for DynamoStore {
    async fn get(&self, _key: &Key) -> Result<Option<Item>, StoreError> {
        Err(StoreError::Unavailable("placeholder".into()))
    }
    async fn put(&self, _item: &Item, _c: Condition) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("placeholder".into()))
    }
    async fn take(&self, _key: &Key) -> Result<Option<Item>, StoreError> {
        Err(StoreError::Unavailable("placeholder".into()))
    }
    async fn query(&self, _pk: &str) -> Result<Vec<Item>, StoreError> {
        Err(StoreError::Unavailable("placeholder".into()))
    }
}
