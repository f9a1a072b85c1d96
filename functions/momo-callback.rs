//! `momo-callback`: the Lambda function behind its route(s) in template.yaml. Its behaviour is
//! [`gatehouse::momo::callback`], shared with the local server and the tests.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(gatehouse::web::Format::Json, |app, req| async move {
        gatehouse::momo::callback(&app, req).await
    })
    .await
}
