//! `weblink-refresh`: the Lambda function behind its route in template.yaml. Its behaviour is
//! [`gatehouse::weblink::refresh`], shared with the local server and the tests.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(gatehouse::web::Format::Json, |app, req| async move {
        gatehouse::weblink::refresh(&app, req).await
    })
    .await
}
