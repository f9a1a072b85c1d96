//! `haravan-logout`: the Lambda function behind its route(s) in template.yaml. It runs
//! [`gatehouse::routes::HARAVAN_LOGOUT`], shared with the local server and the tests.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(&gatehouse::routes::HARAVAN_LOGOUT).await
}
