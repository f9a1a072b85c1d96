//! `haravan-install`: the Lambda function behind its route(s) in template.yaml. Its behaviour is
//! [`gatehouse::haravan::install`], shared with the local server and the tests.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(gatehouse::web::Format::Html, |app, req| async move {
        gatehouse::haravan::install(&app, req).await
    })
    .await
}
