//! One deadline per request.
//!
//! `GATEHOUSE_AWS_TIMEOUT_SECONDS` and `GATEHOUSE_HTTP_TIMEOUT_SECONDS` bound one call each, so a
//! request that makes several calls to a store that has stopped answering waits for each of them
//! in turn: three DynamoDB calls took 8 s under a fault harness, and a route that also calls a
//! platform could outlive the Lambda timeout, which answers API Gateway with a bare 5xx of its
//! own and none of our message. So every request also has a deadline: the sooner of
//! `GATEHOUSE_REQUEST_TIMEOUT_SECONDS` after it arrived and the Lambda deadline less
//! [`LAMBDA_MARGIN`]. At the deadline the handler's future is dropped, which cancels whatever
//! store, secrets or platform call it was waiting on, and the caller gets a clear 503 in the
//! route's format. A platform retries a 503 with the same delivery, and the handlers are written
//! so that a retry after any interruption acts once (a write whose answer was lost may still
//! have been applied, exactly as after a per-call timeout).

use crate::error::{Error, Result};
use lambda_http::{Body, Response};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

/// What a request keeps back from the Lambda deadline: the 503 still has to be built, turned
/// into API Gateway's shape and posted to the Runtime API, on a 128 MB function's fraction of a
/// vCPU. That takes milliseconds; half a second leaves room for a busy scheduler. A request that
/// reaches the Lambda deadline instead is killed, and API Gateway answers for us.
pub const LAMBDA_MARGIN: Duration = Duration::from_millis(500);

/// The deadline of a request that arrived at `arrived`: `budget` later, or [`LAMBDA_MARGIN`]
/// before `lambda_deadline` (as of `now`), whichever is sooner. A Lambda deadline already within
/// the margin gives a deadline of `arrived`: the request is answered 503 at once, while there is
/// still time to answer at all.
pub fn deadline(
    arrived: Instant,
    budget: Duration,
    lambda_deadline: Option<SystemTime>,
    now: SystemTime,
) -> Instant {
    let by_budget = arrived + budget;
    match lambda_deadline {
        Some(lambda) => {
            let left = lambda
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .saturating_sub(LAMBDA_MARGIN);
            by_budget.min(arrived + left)
        }
        None => by_budget,
    }
}

/// The Lambda deadline of an invocation, if it names one. The Runtime API always sends
/// `Lambda-Runtime-Deadline-Ms`; a context built by hand (tests, tools) leaves it at 0, which is
/// no deadline rather than one long past.
pub fn lambda_deadline(context: &lambda_runtime::Context) -> Option<SystemTime> {
    (context.deadline > 0).then(|| context.deadline())
}

/// Runs `handler` until `deadline`: its result, or, past the deadline, a 503 with the handler's
/// future dropped (and with it every call it was waiting on).
pub async fn within<F>(deadline: Instant, handler: F) -> Result<Response<Body>>
where
    F: Future<Output = Result<Response<Body>>>,
{
    match tokio::time::timeout_at(deadline.into(), handler).await {
        Ok(result) => result,
        Err(_) => Err(Error::Unavailable(
            "the request could not be completed in time; try again shortly".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::Format;
    use lambda_http::http::StatusCode;

    #[test]
    fn the_sooner_of_budget_and_lambda_deadline() {
        let arrived = Instant::now();
        let now = SystemTime::now();
        let budget = Duration::from_secs(20);
        assert_eq!(deadline(arrived, budget, None, now), arrived + budget);
        // Lambda has 29 s left: the budget is sooner.
        let far = now + Duration::from_secs(29);
        assert_eq!(deadline(arrived, budget, Some(far), now), arrived + budget);
        // Lambda has 3 s left: 2.5 s, the margin kept back.
        let near = now + Duration::from_secs(3);
        assert_eq!(
            deadline(arrived, budget, Some(near), now),
            arrived + Duration::from_millis(2500)
        );
        // Within the margin, or past: at once.
        let within_margin = now + Duration::from_millis(200);
        assert_eq!(deadline(arrived, budget, Some(within_margin), now), arrived);
        let past = now - Duration::from_secs(1);
        assert_eq!(deadline(arrived, budget, Some(past), now), arrived);
    }

    #[test]
    fn a_hand_made_context_has_no_deadline() {
        let mut context = lambda_runtime::Context::default();
        assert_eq!(lambda_deadline(&context), None);
        context.deadline = 1_900_000_000_000;
        assert_eq!(
            lambda_deadline(&context),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_900_000_000_000))
        );
    }

    #[tokio::test]
    async fn past_the_deadline_a_503_in_the_routes_format_and_the_work_dropped() {
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let guard = SetOnDrop(dropped.clone());
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        let answer = |format, result| crate::routes::answer(format, result);
        let resp = answer(
            Format::Json,
            within(deadline, async move {
                let _guard = guard;
                std::future::pending::<Result<Response<Body>>>().await
            })
            .await,
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = String::from_utf8(resp.body().to_vec()).unwrap();
        assert!(body.contains("could not be completed in time"), "{body}");
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));

        let resp = answer(
            Format::Html,
            within(
                Instant::now() + Duration::from_millis(50),
                std::future::pending(),
            )
            .await,
        );
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );

        // In time: the handler's own answer.
        let resp = answer(
            Format::Json,
            within(Instant::now() + Duration::from_secs(5), async {
                Ok(crate::web::text(StatusCode::OK, "fine"))
            })
            .await,
        );
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
