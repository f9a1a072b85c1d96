//! `haravan-login`: the Lambda function behind its route(s) in template.yaml. Its behaviour is
//! [`gatehouse::haravan::login`], shared with the local server and the tests.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(gatehouse::web::Format::Html, |app, req| async move {
        gatehouse::haravan::login(&app, req).await
    })
    .await
}
