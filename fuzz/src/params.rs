//! Query and form parsing ([`gatehouse::web::Params`]), checked against the `url` crate's
//! `form_urlencoded`, a maintained parser: where ours accepts, both read the same pairs; ours
//! may only be stricter (duplicates, escapes that are not UTF-8 or not escapes, size limits), never different.

use gatehouse::Error;
use gatehouse::web::{MAX_PARAMS, MAX_QUERY_BYTES, Params};
use std::collections::BTreeMap;
use url::form_urlencoded;

/// The target.
pub fn run(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let theirs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    match Params::parse(raw) {
        Ok(ours) => {
            assert!(raw.len() <= MAX_QUERY_BYTES);
            let ours: BTreeMap<&str, &str> = ours.iter().collect();
            assert!(ours.len() <= MAX_PARAMS);
            assert_eq!(
                ours.len(),
                theirs.len(),
                "a pair was dropped or merged: {raw:?}"
            );
            for (name, value) in &theirs {
                assert_eq!(ours.get(name.as_str()), Some(&value.as_str()), "{raw:?}");
            }
            // What we accepted survives being written out and read again.
            let written = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(ours.iter())
                .finish();
            if written.len() <= MAX_QUERY_BYTES {
                let again = Params::parse(&written).expect("a written form parses");
                assert_eq!(again.iter().collect::<BTreeMap<_, _>>(), ours);
            }
        }
        Err(Error::Refused { .. }) => {
            // Refused for one of the documented reasons.
            let mut names = std::collections::BTreeSet::new();
            let duplicated = theirs.iter().any(|(n, _)| !names.insert(n.as_str()));
            let lossy = raw.split('&').flat_map(|p| p.split('=')).any(|part| {
                percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .is_err()
            });
            // A `%` that does not start two hex digits (the `url` crate keeps it as text).
            let bad_escape = raw.as_bytes().iter().enumerate().any(|(i, b)| {
                *b == b'%'
                    && !(raw.as_bytes().get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                        && raw.as_bytes().get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            });
            assert!(
                raw.len() > MAX_QUERY_BYTES
                    || theirs.len() > MAX_PARAMS
                    || duplicated
                    || lossy
                    || bad_escape,
                "refused for no reason: {raw:?}"
            );
        }
        Err(other) => panic!("parsing answered {other:?}, not a 400"),
    }
}
