//! The local stand-in for API Gateway's `AWS_IAM` authorizer: the `/v1/*` routes check each
//! request's SigV4 signature (service `execute-api`) against one local key pair, so that the
//! app's own code is signed on a laptop exactly as it must be once deployed (the typed client,
//! `curl --aws-sigv4`, any SDK's signer), and a request unsigned or signed wrongly is refused.
//!
//! `GATEHOUSE_LOCAL_IAM=loopback` lets unsigned requests from this machine through as an
//! anonymous local caller (one with a SigV4 `Authorization` is still checked; any other
//! `Authorization` is not a signature and is left to the handler, which must drop it): what the integration tests of the
//! handlers behind the authorizer use, as API Gateway passes them only authorized requests.
//!
//! The signature is recomputed with the AWS SDK's own signer (`aws-sigv4`) over the request as
//! received, restricted to the headers it names as signed, and compared in constant time.

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use lambda_http::http::HeaderMap;
use std::time::{Duration, SystemTime};

/// The local key pair's defaults (`GATEHOUSE_LOCAL_ACCESS_KEY_ID`,
/// `GATEHOUSE_LOCAL_SECRET_ACCESS_KEY`): local, known to every developer, never deployed.
pub const DEFAULT_ACCESS_KEY_ID: &str = "gatehouse-local";
/// See [`DEFAULT_ACCESS_KEY_ID`].
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "gatehouse-local-secret";

/// How far a request's `x-amz-date` may be from now (API Gateway allows 15 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The one caller the local server knows.
#[derive(Clone)]
pub struct LocalIam {
    access_key_id: String,
    secret_access_key: String,
    /// Unsigned requests are refused (`sigv4`, the default) or taken as the loopback caller.
    require_signature: bool,
}

impl std::fmt::Debug for LocalIam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIam")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The caller a request was signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The access key id.
    pub access_key_id: String,
    /// The caller's ARN as API Gateway's context names it.
    pub user_arn: String,
}

impl LocalIam {
    /// The key pair from `vars`, or the defaults.
    pub fn from_vars(vars: &gatehouse::config::Vars) -> Result<Self, String> {
        let mut iam = Self::new(
            vars.get_or("GATEHOUSE_LOCAL_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID),
            vars.get_or(
                "GATEHOUSE_LOCAL_SECRET_ACCESS_KEY",
                DEFAULT_SECRET_ACCESS_KEY,
            ),
        );
        match vars.get_or("GATEHOUSE_LOCAL_IAM", "sigv4") {
            "sigv4" => {}
            "loopback" => iam.require_signature = false,
            other => {
                return Err(format!(
                    "GATEHOUSE_LOCAL_IAM must be `sigv4` or `loopback`, not `{}`",
                    other.escape_debug()
                ));
            }
        }
        Ok(iam)
    }

    /// A caller with this key pair.
    pub fn new(access_key_id: &str, secret_access_key: &str) -> Self {
        Self {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            require_signature: true,
        }
    }

    /// The same, letting unsigned requests through as the loopback caller.
    pub fn loopback(mut self) -> Self {
        self.require_signature = false;
        self
    }

    /// The caller who signed this request, or why it is refused. `path_and_query` is the
    /// request target as received; `headers` its headers (with `host`).
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Caller, String> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signed = header("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 "));
        if !self.require_signature && !signed {
            return Ok(Caller {
                access_key_id: "loopback".into(),
                user_arn: "arn:aws:iam::000000000000:user/loopback".into(),
            });
        }
        let auth = header("authorization").ok_or(
            "the request is not signed: the /v1/ routes need SigV4 (service `execute-api`) \
             with the local key pair (README, \"The /v1 API\")",
        )?;
        let fields = auth
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .ok_or("the Authorization header is not a SigV4 signature (`AWS4-HMAC-SHA256 …`)")?;
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for part in fields.split(',') {
            match part.trim().split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed_headers = Some(v),
                Some(("Signature", v)) => signature = Some(v),
                _ => {}
            }
        }
        let (Some(credential), Some(signed_headers), Some(signature)) =
            (credential, signed_headers, signature)
        else {
            return Err("the signature lacks Credential, SignedHeaders or Signature".into());
        };
        let scope: Vec<&str> = credential.split('/').collect();
        let [key_id, date, region, service, "aws4_request"] = scope[..] else {
            return Err("the signature's credential scope is malformed".into());
        };
        if key_id != self.access_key_id {
            return Err(format!(
                "the request is signed by `{}`, not the local key pair's access key id",
                key_id.escape_debug()
            ));
        }
        if service != aws_sigv4_service() {
            return Err(format!(
                "the request is signed for service `{}`, not `execute-api`",
                service.escape_debug()
            ));
        }
        let amz_date = header("x-amz-date").ok_or("the signed request has no x-amz-date")?;
        let time = parse_amz_date(amz_date).ok_or("x-amz-date is not `YYYYMMDDTHHMMSSZ`")?;
        if !amz_date.starts_with(date) {
            return Err("the credential scope's date is not x-amz-date's".into());
        }
        let skew = now.duration_since(time).unwrap_or_else(|e| e.duration());
        if skew > MAX_SKEW {
            return Err("the signature's time is more than 15 minutes from now".into());
        }
        if header("x-amz-security-token").is_some() {
            return Err("the local key pair has no session token; sign without one".into());
        }
        let host = header("host").ok_or("the request has no host header")?;
        let names: Vec<&str> = signed_headers.split(';').collect();
        if !names.contains(&"host") {
            return Err("the signature does not cover the host header".into());
        }
        let mut signed: Vec<(&str, &str)> = Vec::new();
        for name in &names {
            if matches!(*name, "host" | "x-amz-date") {
                continue;
            }
            for value in headers.get_all(*name) {
                let value = value
                    .to_str()
                    .map_err(|_| format!("the signed header `{name}` is not text"))?;
                signed.push((name, value));
            }
        }
        let url = format!("http://{host}{path_and_query}");
        let expected = self
            .signature(method, &url, &signed, body, region, time)
            .map_err(|e| format!("the request cannot be signed again: {e}"))?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            expected.as_bytes(),
            signature.as_bytes(),
        )
        .is_err()
        {
            return Err("the signature does not match the request".into());
        }
        Ok(Caller {
            access_key_id: key_id.to_owned(),
            user_arn: format!("arn:aws:iam::000000000000:user/{key_id}"),
        })
    }

    fn signature(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        region: &str,
        time: SystemTime,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let identity = aws_credential_types::Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "gatehouse-local",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(aws_sigv4_service())
            .time(time)
            .settings(SigningSettings::default())
            .build()?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )?;
        let (_, signature) = sign(signable, &params)?.into_parts();
        Ok(signature)
    }
}

fn aws_sigv4_service() -> &'static str {
    gatehouse_client::SERVICE
}

/// `20261201T153000Z` as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 || !s.is_ascii() {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        s.get(9..11)?,
        &s[11..13],
        &s[13..15]
    );
    if &s[8..9] != "T" || &s[15..] != "Z" {
        return None;
    }
    let dt = aws_smithy_types::DateTime::from_str(
        &rfc3339,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()?;
    SystemTime::try_from(dt).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_client::Signer;
    use lambda_http::http::HeaderValue;

    async fn signed(
        signer: &Signer,
        method: &str,
        target: &str,
        body: &[u8],
        time: SystemTime,
    ) -> HeaderMap {
        let url = format!("http://127.0.0.1:9000{target}");
        let extra = [
            ("host", "127.0.0.1:9000"),
            ("content-type", "application/json"),
        ];
        let mut headers = HeaderMap::new();
        for (n, v) in extra {
            headers.insert(n, HeaderValue::from_static(v));
        }
        for (n, v) in signer.sign(method, &url, &extra, body, time).await.unwrap() {
            headers.insert(
                lambda_http::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        headers
    }

    #[tokio::test]
    async fn a_request_signed_with_the_local_pair_is_its_caller() {
        let iam = LocalIam::new("k", "s");
        let now = SystemTime::now();
        let signer = Signer::fixed("k", "s", "us-east-1");
        let target = "/v1/connections/haravan/1000?x=a%20b";
        let headers = signed(&signer, "POST", target, b"{}", now).await;
        let caller = iam.verify("POST", target, &headers, b"{}", now).unwrap();
        assert_eq!(caller.access_key_id, "k");
        // Anything changed after signing is refused.
        assert!(iam.verify("GET", target, &headers, b"{}", now).is_err());
        assert!(
            iam.verify(
                "POST",
                "/v1/connections/haravan/1001?x=a%20b",
                &headers,
                b"{}",
                now
            )
            .is_err()
        );
        assert!(iam.verify("POST", target, &headers, b"{ }", now).is_err());
        let mut other_type = headers.clone();
        other_type.insert("content-type", HeaderValue::from_static("text/plain"));
        assert!(iam.verify("POST", target, &other_type, b"{}", now).is_err());
        // Too old, another secret, another key, unsigned.
        let late = now + Duration::from_secs(16 * 60);
        assert!(iam.verify("POST", target, &headers, b"{}", late).is_err());
        assert!(
            LocalIam::new("k", "t")
                .verify("POST", target, &headers, b"{}", now)
                .is_err()
        );
        let wrong = signed(
            &Signer::fixed("j", "s", "us-east-1"),
            "POST",
            target,
            b"{}",
            now,
        )
        .await;
        assert!(iam.verify("POST", target, &wrong, b"{}", now).is_err());
        let mut bare = headers.clone();
        bare.remove("authorization");
        let why = iam.verify("POST", target, &bare, b"{}", now).unwrap_err();
        assert!(why.contains("not signed"), "{why}");
        // Loopback mode takes the unsigned one, and still checks a signature.
        let loopback = iam.clone().loopback();
        assert_eq!(
            loopback
                .verify("POST", target, &bare, b"{}", now)
                .unwrap()
                .access_key_id,
            "loopback"
        );
        assert!(loopback.verify("POST", target, &wrong, b"{}", now).is_err());
    }

    #[test]
    fn amz_dates_parse() {
        let t = parse_amz_date("19700101T000100Z").unwrap();
        assert_eq!(t, SystemTime::UNIX_EPOCH + Duration::from_secs(60));
        for bad in [
            "",
            "19700101 000100Z",
            "1970-01-01T00:01:00Z",
            "19700101T000100",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }
}
