//! `saison-proxy`: the Lambda function behind `ANY /v1/proxy/saison/{tenant}/{proxy+}` in
//! template.yaml. It runs [`gatehouse::routes::SAISON_PROXY`] (the auth-injecting proxy,
//! [`gatehouse::proxy`]), shared with the local server and the tests.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(&gatehouse::routes::SAISON_PROXY).await
}
