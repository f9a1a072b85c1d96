//! `momo-requesttopay`: the Lambda function behind its route(s) in template.yaml. Its behaviour is
//! [`gatehouse::momo::request_to_pay`], shared with the local server and the tests.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::lambda::run(gatehouse::web::Format::Json, |app, req| async move {
        gatehouse::momo::request_to_pay(&app, req).await
    })
    .await
}
