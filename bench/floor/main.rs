//! `gatehouse-floor`: the floor of every function that calls DynamoDB and Secrets Manager only
//! (the library's doc has what it does and why).

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse_floor::run::<()>().await
}
