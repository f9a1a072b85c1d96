//! What the integration tests share: access to the DynamoDB-compatible server, if any.

use std::io::Write;
use std::sync::Once;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::Region;

/// A DynamoDB client for the server named by `AWS_ENDPOINT_URL` (or
/// `AWS_ENDPOINT_URL_DYNAMODB`), as `tests/run.sh` sets it after starting moto. Without one the
/// DynamoDB tests are skipped (`None`), unless `GATEHOUSE_REQUIRE_MOTO` is set, as in CI, where a
/// missing server must fail the run rather than pass it silently.
pub async fn dynamo_client() -> Option<aws_sdk_dynamodb::Client> {
    sdk_config()
        .await
        .map(|config| aws_sdk_dynamodb::Client::new(&config))
}

/// A Secrets Manager client for the same server (moto serves both).
pub async fn secrets_client() -> Option<aws_sdk_secretsmanager::Client> {
    sdk_config()
        .await
        .map(|config| aws_sdk_secretsmanager::Client::new(&config))
}

/// The SDK configuration for the DynamoDB/Secrets-Manager-compatible server, if one is set.
pub async fn sdk_config() -> Option<aws_config::SdkConfig> {
    let configured = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if !configured("AWS_ENDPOINT_URL") && !configured("AWS_ENDPOINT_URL_DYNAMODB") {
        assert!(
            !configured("GATEHOUSE_REQUIRE_MOTO"),
            "GATEHOUSE_REQUIRE_MOTO is set but AWS_ENDPOINT_URL is not: start moto and point \
             AWS_ENDPOINT_URL at it (tests/run.sh does both)"
        );
        static SKIPPED: Once = Once::new();
        // Straight to stderr: the test harness captures `eprintln!` of passing tests.
        SKIPPED.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "AWS_ENDPOINT_URL is not set: the DynamoDB and Secrets Manager tests are skipped (run tests/run.sh)"
            );
        });
        return None;
    }
    // The endpoint, region and credentials come from the environment as for any AWS tool;
    // only a region and dummy credentials are supplied when absent, since moto needs no real ones.
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if !configured("AWS_REGION") && !configured("AWS_DEFAULT_REGION") {
        loader = loader.region(Region::from_static("us-east-1"));
    }
    if !configured("AWS_ACCESS_KEY_ID") {
        loader = loader.test_credentials();
    }
    Some(loader.load().await)
}

/// The moto server that enforces IAM (tests/run.sh starts it beside the open one) and the keys
/// of its admin principal, made in its unauthenticated window (tests/moto_iam_admin.py).
pub struct IamMoto {
    /// Its endpoint, e.g. `http://127.0.0.1:41234`.
    pub endpoint: String,
    /// The admin principal: everything allowed. Seeding and setting up principals use it.
    pub admin: aws_sdk_dynamodb::config::Credentials,
}

/// The IAM-enforcing moto named by `GATEHOUSE_IAM_ENDPOINT_URL`, or `None` (the IAM tests are
/// skipped) when it is unset, unless `GATEHOUSE_REQUIRE_MOTO` is set, as in CI: then a missing
/// one fails the run.
pub fn iam_moto() -> Option<IamMoto> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(endpoint) = var("GATEHOUSE_IAM_ENDPOINT_URL") else {
        assert!(
            var("GATEHOUSE_REQUIRE_MOTO").is_none(),
            "GATEHOUSE_REQUIRE_MOTO is set but GATEHOUSE_IAM_ENDPOINT_URL is not: start a moto \
             server with INITIAL_NO_AUTH_ACTION_COUNT=3, create its admin with \
             tests/moto_iam_admin.py and point GATEHOUSE_IAM_ENDPOINT_URL at it (tests/run.sh \
             does all three)"
        );
        static SKIPPED: Once = Once::new();
        SKIPPED.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "GATEHOUSE_IAM_ENDPOINT_URL is not set: the IAM tests are skipped (run tests/run.sh)"
            );
        });
        return None;
    };
    let (Some(key_id), Some(secret)) = (
        var("GATEHOUSE_IAM_ADMIN_ACCESS_KEY_ID"),
        var("GATEHOUSE_IAM_ADMIN_SECRET_ACCESS_KEY"),
    ) else {
        panic!(
            "GATEHOUSE_IAM_ENDPOINT_URL is set but GATEHOUSE_IAM_ADMIN_ACCESS_KEY_ID or \
             GATEHOUSE_IAM_ADMIN_SECRET_ACCESS_KEY is not (tests/moto_iam_admin.py prints them)"
        );
    };
    Some(IamMoto {
        endpoint,
        admin: aws_sdk_dynamodb::config::Credentials::new(key_id, secret, None, None, "iam-admin"),
    })
}

/// The SDK configuration for `endpoint` under `credentials`, whatever the environment names
/// (the open moto, other keys): endpoint and credentials set in code win over both.
pub async fn sdk_config_for(
    endpoint: &str,
    credentials: aws_sdk_dynamodb::config::Credentials,
    timeouts: aws_config::timeout::TimeoutConfig,
) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::from_static("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .timeout_config(timeouts)
        .load()
        .await
}

/// A fault proxy in front of the DynamoDB-compatible server, if one is configured (else `None`,
/// as for [`dynamo_client`]).
pub async fn fault_proxy(seed: u64) -> Option<gatehouse_local::faultproxy::FaultProxy> {
    sdk_config().await?;
    let upstream = gatehouse_local::faultproxy::endpoint_from_env()?;
    Some(
        gatehouse_local::faultproxy::FaultProxy::start(&upstream, seed)
            .await
            .expect("the fault proxy starts"),
    )
}

/// A DynamoDB client of `sdk` reaching `endpoint`, with at most `attempts` attempts per call,
/// each bounded by `attempt_timeout`.
pub fn dynamo_client_at(
    sdk: &aws_config::SdkConfig,
    endpoint: &str,
    attempts: u32,
    attempt_timeout: std::time::Duration,
) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(attempts))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            )
            .build(),
    )
}

/// Runs `command` to its end and returns its output, or fails the test if it has not ended
/// within `limit` (the child is then killed): a child that hangs must fail its own test, named,
/// rather than hold the whole run.
pub async fn output_within(
    command: std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    let mut command = tokio::process::Command::from(command);
    let program = format!("{:?}", command.as_std().get_program());
    command.kill_on_drop(true);
    match tokio::time::timeout(limit, command.output()).await {
        Ok(output) => output.unwrap_or_else(|e| panic!("{program} does not run: {e}")),
        Err(_) => panic!("{program} did not end within {limit:?}"),
    }
}

/// An HTTP client for the tests' own calls, with a timeout on each: reqwest's default has none,
/// so a server that accepts and never answers would hold its test, and the run, for good.
pub fn http() -> reqwest::Client {
    builder().build().expect("the tests' HTTP client")
}

/// [`http`], following no redirect: the tests that look at a redirect itself.
pub fn http_without_redirects() -> reqwest::Client {
    builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the tests' HTTP client")
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(60))
}
