//! `gatehouse-floor-events`: the floor of `events-publisher`, whose invocations also put events
//! on EventBridge. A binary of its own so that the plain floor links no EventBridge SDK.

use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::Value;

struct Events(aws_sdk_eventbridge::Client);

impl gatehouse_floor::Extra for Events {
    fn new(aws: &aws_config::SdkConfig) -> Self {
        Self(aws_sdk_eventbridge::Client::new(aws))
    }

    async fn replay(&self, target: &str, body: &Value) -> bool {
        if target != "AWSEvents.PutEvents" {
            return false;
        }
        let entries = body["Entries"].as_array().map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let s = |name: &str| e[name].as_str().map(str::to_owned);
                    PutEventsRequestEntry::builder()
                        .set_source(s("Source"))
                        .set_detail_type(s("DetailType"))
                        .set_detail(s("Detail"))
                        .set_event_bus_name(s("EventBusName"))
                        .set_trace_header(s("TraceHeader"))
                        .set_time(e["Time"].as_f64().map(DateTime::from_secs_f64))
                        .set_resources(e["Resources"].as_array().map(|r| {
                            r.iter()
                                .filter_map(|r| r.as_str().map(str::to_owned))
                                .collect()
                        }))
                        .build()
                })
                .collect()
        });
        let _ = self.0.put_events().set_entries(entries).send().await;
        true
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    gatehouse_floor::run::<Events>().await
}
