//! SigV4 for `execute-api`: how API Gateway's `AWS_IAM` authorizer knows the caller.

use crate::Error;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use std::time::SystemTime;

/// The service name API Gateway checks signatures under.
pub const SERVICE: &str = "execute-api";

/// Signs requests with the credentials of a provider (refreshed by it as they expire).
#[derive(Clone)]
pub struct Signer {
    credentials: SharedCredentialsProvider,
    region: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `region` with `credentials`.
    pub fn new(credentials: SharedCredentialsProvider, region: impl Into<String>) -> Self {
        Self {
            credentials,
            region: region.into(),
        }
    }

    /// A signer with fixed credentials (tests, the local server's key pair).
    pub fn fixed(access_key_id: &str, secret_access_key: &str, region: &str) -> Self {
        let credentials = Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "gatehouse-client",
        );
        Self::new(SharedCredentialsProvider::new(credentials), region)
    }

    /// The headers that sign a request of `method` to `url` with these `headers` and `body`, at
    /// `time`: `authorization`, `x-amz-date` and, for temporary credentials,
    /// `x-amz-security-token`. The request must be sent with exactly the headers given here
    /// (and the ones returned), and its `host` is the URL's.
    pub async fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, Error> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| Error::Credentials(e.to_string()))?;
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::Signing(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| Error::Signing(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| Error::Signing(e.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }
}
