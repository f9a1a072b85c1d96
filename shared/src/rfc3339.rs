//! Times as text: RFC 3339 (the ISO 8601 profile platforms and AWS write), in and out, through
//! the AWS SDK's own `DateTime` (aws-smithy-types, re-exported by every SDK crate), rather than
//! calendar arithmetic of our own.

use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat as Format};

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), e.g. for an operator's table.
pub fn format(unix: i64) -> String {
    DateTime::from_secs(unix)
        .fmt(Format::DateTime)
        .unwrap_or_else(|_| unix.to_string())
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (the fraction dropped); `None` for
/// anything else, a date alone or a time without its offset included.
pub fn parse(text: &str) -> Option<i64> {
    DateTime::from_str(text, Format::DateTimeWithOffset)
        .ok()
        .map(|t| t.secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from python3's `datetime.fromisoformat(...).timestamp()`.
    #[test]
    fn reads_rfc_3339_with_any_offset() {
        for (text, unix) in [
            ("2026-11-24T20:00:00Z", 1_795_550_400),
            ("2000-02-29T12:34:56.789+07:00", 951_802_496),
            ("2026-11-24T20:00:00.1234567-03:30", 1_795_563_000),
            ("1969-12-31T23:59:59Z", -1),
            ("2026-12-01T18:16:02.717Z", 1_796_148_962),
        ] {
            assert_eq!(parse(text), Some(unix), "{text}");
        }
        for bad in [
            "2026-11-24",
            "2026-11-24T20:00:00",
            "2026-13-01T00:00:00Z",
            "2026-11-24T20:00:00+0700",
            "2026-11-24T20:00:00.Z",
            "2026-11-24T2a:00:00Z",
            "yesterday",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn writes_utc_to_the_second() {
        assert_eq!(format(1_795_550_400), "2026-11-24T20:00:00Z");
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse(&format(1_796_148_962)), Some(1_796_148_962));
    }
}
