//! `momo-callback`: the Lambda function behind its route(s) in template.yaml. It runs
//! [`gatehouse::routes::MOMO_CALLBACK`], shared with the local server and the tests.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(&gatehouse::routes::MOMO_CALLBACK).await
}
