//! The DynamoDB store (deployed).

/// The store on a DynamoDB table.
pub struct DynamoStore;
