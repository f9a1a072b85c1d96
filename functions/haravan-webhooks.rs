//! `haravan-webhooks`: the Lambda function behind its route(s) in template.yaml. Its behaviour is
//! [`gatehouse::haravan::webhooks`], shared with the local server and the tests.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(gatehouse::web::Format::Json, |app, req| async move {
        gatehouse::haravan::webhooks(&app, req).await
    })
    .await
}
