//! `connect-links`: the Lambda function behind its route in template.yaml. It runs
//! [`gatehouse::routes::CONNECT_LINKS`], shared with the local server and the tests.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(&gatehouse::routes::CONNECT_LINKS).await
}
