//! `events-read`: `GET /v1/events/{platform}/{id}` (IAM-authorized), the whole event of the outbox, for an
//! event whose detail on the bus is a reference because it was too large for EventBridge.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(&gatehouse::routes::EVENTS_READ).await
}
