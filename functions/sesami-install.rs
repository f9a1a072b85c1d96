//! `sesami-install`: the Lambda function behind its route in template.yaml. Its behaviour is
//! [`gatehouse::sesami::install`], shared with the local server and the tests.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(gatehouse::web::Format::Html, |app, req| async move {
        gatehouse::sesami::install(&app, req).await
    })
    .await
}
