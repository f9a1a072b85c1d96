//! Reading requests and writing responses, strictly.
//!
//! Signatures are computed over parameters exactly as received, so parsing here is strict where
//! common parsers are lenient: a duplicated parameter or a percent-escape that is not UTF-8 is an
//! error (400), never silently resolved to one value or replaced by U+FFFD.

use crate::error::{Error, Reason, Result};
/// The response builders, in their own module so that [`crate::error`] can use them without
/// depending on request parsing (which returns its errors).
pub use crate::response::{Format, build, escape, html_page, json, text};
use lambda_http::http::{HeaderMap, HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use std::collections::BTreeMap;

/// The most parameters a query or form may carry.
pub const MAX_PARAMS: usize = 64;
/// The largest query or form we parse.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// The longest identifier (a shop, org, session or sign-in session id) taken from a request.
/// Identifiers become parts of store keys, whose length the store limits (DynamoDB: 1 KB for a
/// sort key, 2 KB for a partition key), so a longer one is refused here as bad input (400) rather
/// than failing in the store as an internal error (500). Real ids are far shorter.
pub const MAX_ID_BYTES: usize = 256;

/// Whether `b` may appear in an identifier: ASCII letters, digits and `-_.:@`. Every platform's
/// ids fit (Sesami shop ids such as `shop-123`, Haravan's numeric org ids and hex sids, our own
/// base64url session ids, MoMo's uuids, Saison members, WebLink portal host names), and nothing
/// that could change how an id reads does: no `/` or `#` (our key separators), no `..` paths, no
/// spaces, CR/LF or NUL, no lookalike letters from other scripts.
pub fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@')
}

/// An identifier taken from a request, refused (400) when empty, longer than [`MAX_ID_BYTES`],
/// made of anything but [`is_id_byte`]s, or only dots. `what` names it in the message, e.g.
/// "parameter `sid`".
pub fn check_id<'a>(what: &str, id: &'a str) -> Result<&'a str> {
    if id.is_empty() {
        return Err(Error::refused(
            Reason::MissingParameter,
            format!("{what} is empty"),
        ));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::refused(
            Reason::MalformedParameter,
            format!("{what} is longer than {MAX_ID_BYTES} bytes"),
        ));
    }
    if !id.bytes().all(is_id_byte) || id.bytes().all(|b| b == b'.') {
        return Err(Error::refused(
            Reason::MalformedParameter,
            format!("{what} may hold only ASCII letters, digits and `-_.:@`"),
        ));
    }
    Ok(id)
}

/// Parsed query or form parameters: each name at most once, names and values valid UTF-8.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text (`+` is a space).
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.len() > MAX_QUERY_BYTES {
            return Err(Error::refused(
                Reason::MalformedParameter,
                format!("the parameters are longer than {MAX_QUERY_BYTES} bytes"),
            ));
        }
        let mut map = BTreeMap::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            let value = decode(value)?;
            if map.len() == MAX_PARAMS {
                return Err(Error::refused(
                    Reason::MalformedParameter,
                    format!("more than {MAX_PARAMS} parameters"),
                ));
            }
            if map.contains_key(&name) {
                return Err(Error::refused(
                    Reason::DuplicateParameter,
                    format!("parameter `{}` is given more than once", printable(&name)),
                ));
            }
            map.insert(name, value);
        }
        Ok(Self(map))
    }

    /// The query string of `req`.
    pub fn from_query(req: &Request) -> Result<Self> {
        Self::parse(req.uri().query().unwrap_or(""))
    }

    /// A parameter's value, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A parameter that must be present and non-empty.
    pub fn require(&self, name: &str) -> Result<&str> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            Some(_) => Err(Error::refused(
                Reason::MissingParameter,
                format!("parameter `{name}` is empty"),
            )),
            None => Err(Error::refused(
                Reason::MissingParameter,
                format!("parameter `{name}` is missing"),
            )),
        }
    }

    /// A parameter that names something stored (see [`check_id`]): present, non-empty, at most
    /// [`MAX_ID_BYTES`] long, of the identifier characters only.
    pub fn require_id(&self, name: &str) -> Result<&str> {
        check_id(&format!("parameter `{name}`"), self.require(name)?)
    }

    /// All parameters, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn decode(s: &str) -> Result<String> {
    // `%` must start an escape of two hex digits: lenient decoders keep `%zz` or a lone `%` as
    // text, which would make two spellings of one value.
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(Error::refused(
                Reason::MalformedParameter,
                "a parameter holds an invalid percent escape",
            ));
        }
    }
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::refused(Reason::MalformedParameter, "a parameter is not valid UTF-8"))
}

/// A name shortened and stripped of control characters, safe to echo in a message.
pub fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// The request body as bytes, refused when larger than `limit`.
pub fn body(req: &Request, limit: usize) -> Result<&[u8]> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > limit {
        return Err(Error::TooLarge(limit));
    }
    Ok(bytes)
}

/// The request body as UTF-8 text, refused when larger than `limit`.
pub fn body_text(req: &Request, limit: usize) -> Result<&str> {
    std::str::from_utf8(body(req, limit)?)
        .map_err(|_| Error::refused(Reason::MalformedBody, "the request body is not valid UTF-8"))
}

/// Requires the media type of the body (parameters such as `charset` are ignored). Two
/// `Content-Type` headers are refused: which one a reader takes is not agreed on.
pub fn require_content_type(req: &Request, expected: &str) -> Result<()> {
    let actual = single_header(req.headers(), header::CONTENT_TYPE.as_str())?
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match actual {
        Some(t) if t == expected => Ok(()),
        _ => Err(Error::UnsupportedMediaType(format!(
            "the body must be {expected}"
        ))),
    }
}

/// A single-valued header as text, if present. For headers that decide anything (signatures,
/// topics, ids, keys) use [`single_header`], which refuses a repeated one.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header that must appear at most once, as text: given twice (a valid signature followed by
/// another, say) it is refused (400) rather than resolved to the first or the last; a value that
/// is not visible ASCII is refused too.
pub fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::refused(
            Reason::DuplicateParameter,
            format!("the {name} header is given more than once"),
        ));
    }
    first.to_str().map(Some).map_err(|_| {
        Error::refused(
            Reason::MalformedParameter,
            format!("the {name} header is not visible ASCII"),
        )
    })
}

/// Parses a JSON request body strictly into `T`: an object key given twice, at any depth, is
/// refused (400) rather than resolved to its last value as serde_json does, since what we verify
/// or store must read one way only. `shape` is the message for a body that is not JSON or not
/// of `T`'s shape.
pub fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T> {
    serde_json::from_value(json_value(bytes, shape)?)
        .map_err(|_| Error::refused(Reason::MalformedBody, shape.to_owned()))
}

/// Parses a JSON request body strictly (see [`json_body`]) into a value, for callers that read
/// its shape themselves. Every JSON body taken from a request goes through here.
pub fn json_value(bytes: &[u8], shape: &str) -> Result<serde_json::Value> {
    let strict: StrictJson = serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        match text.strip_prefix(DUPLICATE_KEY) {
            Some(rest) => Error::refused(
                Reason::DuplicateParameter,
                format!(
                    "the JSON body gives {} more than once",
                    printable(rest.split(" at line").next().unwrap_or_default())
                ),
            ),
            None => Error::refused(Reason::MalformedBody, shape.to_owned()),
        }
    })?;
    Ok(strict.0)
}

const DUPLICATE_KEY: &str = "duplicate key ";

/// A JSON value read by a visitor that refuses a repeated object key (see [`json_body`]).
/// Numbers go through the same `u64`/`i64`/`f64` paths as serde_json's own `Value`.
struct StrictJson(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = StrictJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<StrictJson, E> {
        Ok(StrictJson(
            serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into),
        ))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }
    fn visit_unit<E>(self) -> std::result::Result<StrictJson, E> {
        Ok(StrictJson(serde_json::Value::Null))
    }
    fn visit_none<E>(self) -> std::result::Result<StrictJson, E> {
        Ok(StrictJson(serde_json::Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<StrictJson, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(StrictJson(serde_json::Value::Array(items)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<StrictJson, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "{DUPLICATE_KEY}`{}`",
                    printable(&key)
                )));
            }
            let StrictJson(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(StrictJson(serde_json::Value::Object(out)))
    }
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(|c| c.ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// A `302 Found` to `location`.
pub fn redirect(location: &str) -> Result<Response<Body>> {
    let mut resp = build(StatusCode::FOUND, "text/plain; charset=utf-8", Body::Empty);
    let value = HeaderValue::from_str(location)
        .map_err(|_| Error::Internal("redirect location is not a valid header".into()))?;
    resp.headers_mut().insert(header::LOCATION, value);
    Ok(resp)
}

/// Adds a `Set-Cookie` header.
pub fn set_cookie(resp: &mut Response<Body>, cookie: &str) -> Result<()> {
    let value = HeaderValue::from_str(cookie)
        .map_err(|_| Error::Internal("cookie is not a valid header".into()))?;
    resp.headers_mut().append(header::SET_COOKIE, value);
    Ok(())
}

/// The IAM principal API Gateway verified this request's SigV4 signature for, or a 403.
///
/// Every `/v1/*` route is `Authorizer: AWS_IAM` in template.yaml, so API Gateway refuses an
/// unsigned or wrongly signed request before any function runs, and names the caller in
/// `requestContext.authorizer.iam`. A request that reaches a `/v1` handler without that identity
/// came through a route deployed without the authorizer (a template mistake) or was made by
/// hand: it is refused, so that such a mistake does not open the app's tokens to anyone.
pub fn require_iam_caller(req: &Request) -> Result<&str> {
    req.extensions()
        .get::<crate::context::RequestInfo>()
        .and_then(|info| info.iam_caller.as_deref())
        .ok_or_else(|| {
            Error::refused(
                Reason::NotAllowed,
                "this route is for the app's own back end: the request carries no IAM caller \
                 identity (requestContext.authorizer.iam), so it was not SigV4-verified by API \
                 Gateway; deploy the route with `Authorizer: AWS_IAM` and sign the request",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_strictly() {
        let p = Params::parse("a=1&b=x+y%2Fz&c=&d").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("x y/z"));
        assert_eq!(p.get("c"), Some(""));
        assert_eq!(p.get("d"), Some(""));
        assert_eq!(
            p.require("c").unwrap_err().reason(),
            Some(Reason::MissingParameter)
        );
        assert_eq!(
            p.require("zz").unwrap_err().reason(),
            Some(Reason::MissingParameter)
        );
        assert!(matches!(
            Params::parse("a=1&a=2"),
            Err(e) if e.reason() == Some(Reason::DuplicateParameter)
        ));
        assert!(matches!(
            Params::parse("a=%ff%fe"),
            Err(e) if e.reason() == Some(Reason::MalformedParameter)
        ));
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert!(Params::parse(&many.join("&")).is_err());
        assert!(Params::parse(&"a".repeat(MAX_QUERY_BYTES + 1)).is_err());
        assert_eq!(
            Params::parse("shop=%C3%A9t%C3%A9").unwrap().get("shop"),
            Some("été")
        );
    }

    #[test]
    fn ids_are_bounded() {
        let at_limit = "i".repeat(MAX_ID_BYTES);
        let p = Params::parse(&format!("a={at_limit}&b={at_limit}i&c=")).unwrap();
        assert_eq!(p.require_id("a").unwrap(), at_limit);
        assert!(
            matches!(p.require_id("b"), Err(e) if e.reason() == Some(Reason::MalformedParameter) && e.to_string().contains("`b`"))
        );
        assert_eq!(
            p.require_id("c").unwrap_err().reason(),
            Some(Reason::MissingParameter)
        );
        assert_eq!(
            p.require_id("d").unwrap_err().reason(),
            Some(Reason::MissingParameter)
        );
        assert!(check_id("the org", &at_limit).is_ok());
        assert!(check_id("the org", &format!("{at_limit}i")).is_err());
    }

    #[test]
    fn ids_have_a_character_set() {
        for good in [
            "shop-123",
            "1000111111",
            "a.b_c:d@e",
            "Zz09",
            "550e8400-e29b-41d4",
        ] {
            assert!(check_id("the id", good).is_ok(), "{good}");
        }
        for bad in [
            "../../x",
            "a/b",
            "a#b",
            "sh\u{43e}p",
            "a\r\nb",
            "a\0b",
            "a b",
            "",
            ".",
            "..",
            "caf\u{e9}",
        ] {
            assert!(
                matches!(check_id("the id", bad), Err(e) if e.reason().is_some()),
                "{bad:?} is refused"
            );
        }
        let p = Params::parse("shopId=..%2F..%2Fx&b=%0D%0A&c=%00").unwrap();
        for name in ["shopId", "b", "c"] {
            assert!(p.require_id(name).is_err(), "{name}");
        }
    }

    #[test]
    fn invalid_percent_escapes_are_refused() {
        for bad in ["a=%zz", "a=%", "a=1%2", "%G0=1", "a=%%41"] {
            assert!(
                matches!(Params::parse(bad), Err(e) if e.reason() == Some(Reason::MalformedParameter)),
                "{bad}"
            );
        }
        assert_eq!(Params::parse("a=%41%2f").unwrap().get("a"), Some("A/"));
    }

    #[test]
    fn repeated_headers_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(single_header(&h, "x-a").unwrap(), None);
        h.append("x-a", HeaderValue::from_static("1"));
        assert_eq!(single_header(&h, "x-a").unwrap(), Some("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        assert!(
            matches!(single_header(&h, "x-a"), Err(e) if e.reason() == Some(Reason::DuplicateParameter))
        );
    }

    #[test]
    fn json_bodies_refuse_repeated_keys_at_any_depth() {
        type M = serde_json::Map<String, serde_json::Value>;
        let ok: M = json_body(
            br#"{"a":1,"b":{"c":[{"d":2}]},"n":9007199254740993}"#,
            "shape",
        )
        .unwrap();
        assert_eq!(ok["n"], serde_json::json!(9007199254740993u64));
        for bad in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"a":{"b":1,"b":1}}"#,
            br#"{"a":[{"c":1,"c":2}]}"#,
            br#"{"a":1,"a":2}"#,
        ] {
            assert!(
                matches!(json_body::<M>(bad, "shape"), Err(e) if e.reason() == Some(Reason::DuplicateParameter)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(
            matches!(json_body::<M>(b"[1]", "shape"), Err(e) if e.reason() == Some(Reason::MalformedBody) && e.to_string() == "shape")
        );
        assert!(
            matches!(json_body::<M>(b"{", "shape"), Err(e) if e.reason() == Some(Reason::MalformedBody) && e.to_string() == "shape")
        );
    }

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
