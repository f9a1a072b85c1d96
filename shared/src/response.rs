//! Building responses: the content types, the security headers every answer carries, and the
//! small HTML page of a browser route. Nothing here can fail or knows [`crate::error::Error`], so
//! the error type can render itself with these without a dependency cycle.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};

/// How errors are shown: a page for browser routes, JSON for platform-to-app calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An HTML page.
    Html,
    /// A JSON object `{"error", "message"}`.
    Json,
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn with_security_headers(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A response with `status`, `content_type` and the security headers.
pub fn build(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_security_headers(resp)
}

/// A small, self-contained HTML page. `body_html` must already be escaped.
pub fn html_page(status: StatusCode, title: &str, body_html: &str) -> Response<Body> {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}\
         code{{background:#f3f3f3;padding:0 .2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:.3em .6em;text-align:left}}</style>\
         </head><body><h1>{title}</h1>{body_html}</body></html>",
        title = escape(title),
    );
    let mut resp = build(status, "text/html; charset=utf-8", Body::from(page));
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'self'"),
    );
    resp
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    build(status, "application/json", Body::from(value.to_string()))
}

/// A plain-text response.
pub fn text(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    build(status, "text/plain; charset=utf-8", Body::from(text.into()))
}
