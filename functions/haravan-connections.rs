//! `haravan-connections`: the Lambda function behind its routes in template.yaml. It runs
//! [`gatehouse::routes::HARAVAN_CONNECTIONS`], shared with the local server and the tests.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(&gatehouse::routes::HARAVAN_CONNECTIONS).await
}
