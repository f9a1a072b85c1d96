//! Secrets Manager against a real compatible server (moto): the flow runs on secrets read from
//! it, values are cached for their TTL, and a failing Secrets Manager does not break a warm
//! container.

use crate::harness::{Backend, Browser, Harness};
use gatehouse::config::Vars;
use gatehouse::secrets::{Secrets, Source};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

async fn create(client: &aws_sdk_secretsmanager::Client, value: serde_json::Value) -> String {
    let name = format!("gatehouse-it-{}", uuid::Uuid::new_v4().simple());
    let out = client
        .create_secret()
        .name(&name)
        .secret_string(value.to_string())
        .send()
        .await
        .expect("create secret");
    out.arn().expect("arn").to_owned()
}

#[tokio::test]
async fn the_install_runs_on_secrets_from_secrets_manager() {
    let Some(client) = crate::support::secrets_client().await else {
        return;
    };
    let app_id = create(
        &client,
        json!({"key_id": "k1", "key": "a-generated-key-of-sixty-four-characters-0123456789abcdefghijkl"}),
    )
    .await;
    let sesami_id = create(
        &client,
        json!({"client_id": "sm-client", "client_secret": "sm-secret-value"}),
    )
    .await;
    let mut vars = Vars::default();
    vars.set("APP_SECRET_ID", &app_id);
    vars.set("SESAMI_SECRET_ID", &sesami_id);
    let h = Harness::start(Backend::Embedded, vars)
        .await
        .expect("harness");
    let creds = h.server.app.secrets.credentials("sesami").await.unwrap();
    assert_eq!(
        creds.client_id, "sm-client",
        "read from Secrets Manager, not the file"
    );

    let mut b = Browser::new();
    let launch = b.get(&h.url("/_sim/sesami/launch?shopId=sm-shop")).await;
    let to_consent = b.get(&launch.location.unwrap()).await;
    assert_eq!(to_consent.status, 302, "{}", to_consent.body);
    assert!(to_consent.location.unwrap().contains("clientId=sm-client"));
}

fn secrets_for(client: &aws_sdk_secretsmanager::Client, id: &str, ttl: Duration) -> Secrets {
    let sources = HashMap::from([(
        "sesami".to_string(),
        Source::SecretsManager {
            client: client.clone(),
            secret_id: id.to_owned(),
        },
    )]);
    Secrets::new(sources, ttl)
}

#[tokio::test]
async fn values_are_cached_for_their_ttl_and_survive_an_outage() {
    let Some(client) = crate::support::secrets_client().await else {
        return;
    };
    let id = create(&client, json!({"client_id": "v1", "client_secret": "s1"})).await;
    let cached = secrets_for(&client, &id, Duration::from_secs(300));
    let fresh = secrets_for(&client, &id, Duration::ZERO);
    assert_eq!(cached.credentials("sesami").await.unwrap().client_id, "v1");
    assert_eq!(fresh.credentials("sesami").await.unwrap().client_id, "v1");

    client
        .put_secret_value()
        .secret_id(&id)
        .secret_string(json!({"client_id": "v2", "client_secret": "s2"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        cached.credentials("sesami").await.unwrap().client_id,
        "v1",
        "within the TTL the cached value serves without a call"
    );
    assert_eq!(fresh.credentials("sesami").await.unwrap().client_id, "v2");

    client
        .delete_secret()
        .secret_id(&id)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        fresh.credentials("sesami").await.unwrap().client_id,
        "v2",
        "a failing refresh keeps serving the last value"
    );
    let cold = secrets_for(&client, &id, Duration::ZERO);
    assert!(
        cold.credentials("sesami").await.is_err(),
        "nothing cached: the error shows"
    );
}
