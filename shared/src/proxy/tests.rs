use super::*;

fn base() -> Url {
    Url::parse("https://api.example.com/base").unwrap()
}

/// Hostile paths, each refused or kept under the base.
#[test]
fn no_path_escapes_the_base() {
    let refused = [
        "",
        "/",
        "..",
        "../x",
        "a/../../x",
        "a/./b",
        ".",
        "a//b",
        "a/",
        "%2e%2e/x",
        "%2E%2E/x",
        ".%2e/x",
        "a%2fb",
        "a%2Fb",
        "a%5cb",
        "a\\b",
        "..\\x",
        "@evil.com/x",
        "user@evil.com",
        "http:/evil.com",
        "http://evil.com",
        "https:evil.com",
        "evil.com:443/x",
        "//evil.com/x",
        "a%00b",
        "a%0d%0aHost:%20x",
        "a\tb",
        "a b",
        "caf\u{e9}",
        "a%zz",
        "a%2",
        "%",
    ];
    for path in refused {
        let e = target_url(&base(), path, None).expect_err(path);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    for (path, expected) in [
        (
            "com/shop.json",
            "https://api.example.com/base/com/shop.json",
        ),
        ("a:b/c", "https://api.example.com/base/a:b/c"),
        ("a/b:c", "https://api.example.com/base/a/b:c"),
        ("a%20b/c", "https://api.example.com/base/a%20b/c"),
        ("...", "https://api.example.com/base/..."),
        ("a/.b", "https://api.example.com/base/a/.b"),
    ] {
        match target_url(&base(), path, None) {
            Ok(url) => {
                assert_eq!(url.as_str(), expected, "{path}");
                assert_eq!(url.origin(), base().origin());
                assert!(url.path().starts_with("/base/"));
            }
            Err(e) => assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{path}"),
        }
    }
    // `a:b` as a first segment is refused (a scheme to a lenient joiner).
    assert!(target_url(&base(), "a:b/c", None).is_err());
    let url = target_url(&base(), "x", Some("a=1&b=%2F")).unwrap();
    assert_eq!(url.as_str(), "https://api.example.com/base/x?a=1&b=%2F");
    // A base with a trailing slash, or at the root.
    let root = Url::parse("http://127.0.0.1:9/").unwrap();
    assert_eq!(
        target_url(&root, "v1/x", None).unwrap().as_str(),
        "http://127.0.0.1:9/v1/x"
    );
}

#[test]
fn hop_by_hop_and_caller_auth_headers_are_not_forwarded() {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("authorization", "Bearer caller"),
        ("x-api-key", "k"),
        ("cookie", "a=b"),
        ("connection", "close, x-custom-hop"),
        ("x-custom-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-authorization", "Basic x"),
        ("proxy-foo", "1"),
        ("te", "trailers"),
        ("trailer", "x"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("host", "evil.com"),
        ("x-amz-date", "20260101T000000Z"),
        ("x-amz-security-token", "t"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-amzn-trace-id", "x"),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("x-request-id", "r1"),
    ] {
        h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    let out = forwarded_request_headers(&h);
    let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
    assert_eq!(names, ["content-type", "accept", "x-request-id"]);

    let mut back = HeaderMap::new();
    for (n, v) in [
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("transfer-encoding", "chunked"),
        ("set-cookie", "s=1"),
        ("retry-after", "7"),
        ("content-type", "application/json"),
    ] {
        back.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    let names: Vec<String> = passed_back_headers(&back)
        .keys()
        .map(|n| n.as_str().to_owned())
        .collect();
    assert_eq!(names, ["retry-after", "content-type"]);
}

#[test]
fn a_request_without_an_iam_caller_is_refused() {
    let req = Request::default();
    assert_eq!(
        require_iam_caller(&req).unwrap_err().status(),
        StatusCode::FORBIDDEN
    );
    let with = |caller: Option<&str>| {
        let mut req = Request::default();
        req.extensions_mut().insert(crate::context::RequestInfo {
            iam_caller: caller.map(str::to_owned),
            ..Default::default()
        });
        req
    };
    assert!(require_iam_caller(&with(None)).is_err(), "no identity");
    assert!(require_iam_caller(&with(Some("arn:aws:iam::123456789012:role/app"))).is_ok());
}

#[test]
fn saisons_own_parameters_are_taken_out_of_the_forwarded_query() {
    let (ours, rest) = split_query(
        "a=1&end_user=u%2D1&b=%2F&member=demo&c",
        &["end_user", "member"],
    )
    .unwrap();
    assert_eq!(
        ours,
        [
            ("end_user".to_owned(), "u-1".to_owned()),
            ("member".to_owned(), "demo".to_owned())
        ]
    );
    assert_eq!(rest, "a=1&b=%2F&c");
    assert!(split_query("end_user=a&end_user=b", &["end_user"]).is_err());
    assert!(split_query("end_user=%zz", &["end_user"]).is_err());
}
