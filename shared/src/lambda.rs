//! The Lambda side: API Gateway HTTP API (payload 2.0) events in, responses out.
//!
//! `lambda_http::run` would do this too, but it panics on a body whose `isBase64Encoded` flag
//! lies and on a path it cannot parse; here both become a 400. Everything else is lambda_http's
//! own types, so handlers see an ordinary `lambda_http::Request`.

use crate::context::{Deps, Platform, RequestInfo};
use crate::error::{Error, Reason};
use crate::routes::Function;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::http::{HeaderValue, header};
use lambda_http::{Body, Request, Response};
use lambda_runtime::{LambdaEvent, service_fn};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Turns an API Gateway event into a request.
pub fn request_from_event(event: ApiGatewayV2httpRequest) -> Result<Request, Error> {
    let path = event.raw_path.as_deref().unwrap_or("/");
    // API Gateway sends neither a `?` in the path nor a fragment; parsed as one URI they would
    // move text between path, query and a dropped fragment, so signed text could differ from
    // what was received.
    if path.contains(['?', '#'])
        || event
            .raw_query_string
            .as_deref()
            .is_some_and(|q| q.contains('#'))
    {
        return Err(Error::refused(
            Reason::MalformedParameter,
            "the request path or query is malformed",
        ));
    }
    let uri = match event.raw_query_string.as_deref() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    };
    let uri: lambda_http::http::Uri = uri.parse().map_err(|_| {
        Error::refused(
            Reason::MalformedParameter,
            "the request path or query is malformed",
        )
    })?;
    let body = match event.body {
        None => Body::Empty,
        Some(b) if event.is_base64_encoded => Body::Binary(STANDARD.decode(b).map_err(|_| {
            Error::refused(
                Reason::MalformedBody,
                "the request body is not valid base64",
            )
        })?),
        Some(b) => Body::Text(b),
    };
    let mut req = Request::new(body);
    *req.method_mut() = event.request_context.http.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = event.headers;
    if let Some(cookies) = event.cookies.filter(|c| !c.is_empty())
        && let Ok(v) = HeaderValue::from_str(&cookies.join("; "))
    {
        req.headers_mut().insert(header::COOKIE, v);
    }
    // The principal API Gateway checked the SigV4 signature of (IAM-authorized routes only).
    let iam_caller = event
        .request_context
        .authorizer
        .and_then(|a| a.iam)
        .and_then(|iam| iam.user_arn.or(iam.caller_id))
        .filter(|caller| !caller.is_empty());
    req.extensions_mut().insert(RequestInfo {
        domain_name: event.request_context.domain_name,
        request_id: event.request_context.request_id,
        source_ip: event.request_context.http.source_ip,
        iam_caller,
    });
    Ok(req)
}

/// Parses an event file's JSON (events/*.json) into a request, as the runtime would.
pub fn request_from_json(json: &str) -> Result<Request, Error> {
    let event: ApiGatewayV2httpRequest = serde_json::from_str(json).map_err(|e| {
        Error::refused(
            Reason::MalformedBody,
            format!("not an API Gateway HTTP API event: {e}"),
        )
    })?;
    request_from_event(event)
}

/// Turns a response into API Gateway's shape: `Set-Cookie` goes to `cookies`, a body that is not
/// UTF-8 is base64-encoded.
pub fn response_into_event(resp: Response<Body>) -> ApiGatewayV2httpResponse {
    let (mut parts, body) = resp.into_parts();
    let cookies = parts
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        // Not `to_str`, which takes visible ASCII only and would drop a cookie silently.
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok().map(str::to_owned))
        .collect();
    parts.headers.remove(header::SET_COOKIE);
    let (body, is_base64_encoded) = match body {
        Body::Empty => (None, false),
        Body::Text(t) => (Some(Body::Text(t)), false),
        Body::Binary(b) => match String::from_utf8(b) {
            Ok(t) => (Some(Body::Text(t)), false),
            Err(e) => (Some(Body::Text(STANDARD.encode(e.into_bytes()))), true),
        },
        _ => (None, false),
    };
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = parts.headers;
    out.body = body;
    out.is_base64_encoded = is_base64_encoded;
    out.cookies = cookies;
    out
}

/// Runs a Lambda function: logging, the function's platform context built once (only its own
/// platform: see [`crate::context`]), then every event through its handler, each within its
/// deadline ([`crate::budget`]). A configuration error stops the container at init, where Lambda
/// reports it.
pub async fn run<P: Platform>(function: &'static Function<P>) -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    crate::metrics::as_function(function.name, || {
        crate::metrics::cold_start(crate::metrics::platform_of(function.name));
    });
    // Logged as well as returned: the runtime prints the returned error's `Debug` on stderr, and
    // an operator searching the function's JSON logs finds this line.
    let cx = Arc::new(crate::context::from_env::<P>().await.inspect_err(|e| {
        tracing::error!(error = %e, "the function refused to start: its configuration is unusable");
    })?);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| {
            let cx = cx.clone();
            // Boxed: the handler's future type is deep, and nesting it inside the runtime's
            // own futures would exceed the compiler's type-layout recursion limit.
            let fut: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
                Ok::<_, std::convert::Infallible>(invoke(&*cx, function, event).await)
            });
            fut
        },
    ))
    .await
}

/// One invocation, as [`run`] serves it: the event becomes a request (or a 400), the handler
/// answers it within the request's deadline, the sooner of the configured budget and the
/// invocation's own deadline less [`crate::budget::LAMBDA_MARGIN`], and the answer goes back in
/// API Gateway's shape. `cx` derefs to the [`Deps`] whose configuration sets the budget.
pub async fn invoke<P>(
    cx: &P,
    function: &Function<P>,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> ApiGatewayV2httpResponse
where
    P: std::ops::Deref<Target = Deps>,
{
    let deadline = crate::budget::deadline(
        std::time::Instant::now(),
        cx.config.request_timeout,
        crate::budget::lambda_deadline(&event.context),
        std::time::SystemTime::now(),
    );
    // API Gateway's route key is the template's (`PUT /momo/callback/{referenceId}`), never the
    // path. (Not looked up in `routes::all()`, which would link every platform into this binary.)
    let route = event
        .payload
        .route_key
        .clone()
        .filter(|k| !k.is_empty() && k != "$default")
        .unwrap_or_else(|| function.name.to_owned());
    let result = match request_from_event(event.payload) {
        Ok(req) => {
            let handled = crate::metrics::in_function(function.name, (function.handler)(cx, &req));
            crate::budget::within(deadline, handled).await
        }
        Err(e) => Err(e),
    };
    response_into_event(crate::routes::answer_route(
        &route,
        function.name,
        function.format,
        result,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(authorizer: Option<serde_json::Value>) -> String {
        let mut ev = json!({
            "version": "2.0", "routeKey": "POST /v1/connect-links", "rawPath": "/v1/connect-links",
            "rawQueryString": "", "headers": {"host": "abc.execute-api.us-east-1.amazonaws.com"},
            "requestContext": {"http": {"method": "POST", "path": "/v1/connect-links"},
                               "requestId": "r", "timeEpoch": 0},
            "isBase64Encoded": false,
        });
        if let Some(a) = authorizer {
            ev["requestContext"]["authorizer"] = a;
        }
        ev.to_string()
    }

    #[test]
    fn the_iam_caller_of_the_authorizer_reaches_the_handler() {
        let arn = "arn:aws:iam::123456789012:role/app";
        let req = request_from_json(&event(Some(json!({"iam": {"userArn": arn}})))).unwrap();
        assert_eq!(crate::web::require_iam_caller(&req).unwrap(), arn);
        // No authorizer (a route deployed without AWS_IAM), or another kind of authorizer.
        for authorizer in [
            None,
            Some(json!({"jwt": {"claims": {"sub": "x"}, "scopes": []}})),
        ] {
            let req = request_from_json(&event(authorizer)).unwrap();
            let e = crate::web::require_iam_caller(&req).unwrap_err();
            assert_eq!(e.status(), lambda_http::http::StatusCode::FORBIDDEN);
        }
    }
}
