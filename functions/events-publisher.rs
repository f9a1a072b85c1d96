//! `events-publisher`: the Lambda function the table's DynamoDB stream triggers (template.yaml:
//! outbox INSERTs only), which puts each event on the event bus and answers the records that
//! failed, so that only they are retried. Its behaviour is [`gatehouse::publisher`], shared
//! with the tests.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::publisher::run().await
}
