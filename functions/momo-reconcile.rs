//! `momo-reconcile`: the scheduled Lambda function (template.yaml: every 5 minutes) that
//! confirms MoMo payments still PENDING with MoMo's status, since callbacks and answers to
//! requests to pay can be lost. Its behaviour is [`gatehouse::momo::reconcile`], shared with the
//! local server's timer and the tests.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse::momo::run_reconciler().await
}
