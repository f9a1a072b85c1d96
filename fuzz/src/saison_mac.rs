//! Saison connect's MAC `Authorization` header ([`gatehouse::saison::authorization`],
//! [`mac_target`](gatehouse::saison::mac_target)): for any URL and access token, either a
//! clear refusal or a header that is a valid HTTP header value and reads back, field by field,
//! to the token we hold and a MAC that recomputes from the URL's request-uri, host and port.

use arbitrary::{Arbitrary, Unstructured};
use gatehouse::saison::{authorization, mac, mac_target};
use lambda_http::http::HeaderValue;

#[derive(Arbitrary, Debug)]
struct Input {
    token: String,
    key: Vec<u8>,
    method: u8,
    url: String,
    comma: bool,
}

/// Reads `MAC a="x"<sep>b="y"...` into its fields, refusing anything else.
fn fields<'h>(header: &'h str, separator: &str) -> Option<Vec<(&'h str, &'h str)>> {
    let mut rest = header.strip_prefix("MAC ")?;
    let mut out = Vec::new();
    loop {
        let (name, after) = rest.split_once("=\"")?;
        let (value, after) = after.split_once('"')?;
        out.push((name, value));
        if after.is_empty() {
            return Some(out);
        }
        rest = after.strip_prefix(separator)?;
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let method = ["GET", "POST", "PUT", "DELETE"][usize::from(input.method % 4)];
    let separator = if input.comma { ", " } else { " " };
    // The API base is an http(s) URL (configuration refuses anything else).
    let Ok(url) = url::Url::parse(&input.url) else {
        return;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return;
    }
    let target = mac_target(&url);
    let Ok(header) = authorization(&input.token, &input.key, method, &url, separator) else {
        return;
    };
    let (request_uri, host, port) = target.expect("a signed URL has a MAC target");
    assert!(
        HeaderValue::from_str(&header).is_ok(),
        "not a header value: {header:?}"
    );
    let fields = fields(&header, separator)
        .unwrap_or_else(|| panic!("the header does not read back: {header:?}"));
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["id", "ts", "nonce", "mac"], "{header:?}");
    assert_eq!(fields[0].1, input.token);
    let ts: u64 = fields[1].1.parse().expect("ts is a number");
    let nonce = fields[2].1;
    assert!(nonce.len() == 10 && nonce.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(
        fields[3].1,
        mac(&input.key, ts, nonce, method, &request_uri, &host, port)
    );
    assert!(request_uri.starts_with('/'), "{request_uri:?}");
    assert!(!host.is_empty() && !request_uri.contains(['\n', '#']));
}
