//! `connections-refresh`: the scheduled Lambda function (template.yaml: every hour) that keeps
//! the connections' refresh tokens from lapsing for lack of use and records their health
//! (`needs_reauth`, `no_refresh_token`). Its behaviour is [`gatehouse::health::check`], shared
//! with the tests.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::health::run_schedule().await
}
