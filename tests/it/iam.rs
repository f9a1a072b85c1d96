//! IAM, proven: every function of template.yaml runs its events/ on a moto server that enforces
//! IAM, under an IAM user of its own that holds its template policy, and every DynamoDB and
//! Secrets Manager request it makes is also judged against that policy by an evaluation of our
//! own ([`decide`]), for what moto does not evaluate.
//!
//! moto 5.2.5, once its unauthenticated window is spent (tests/moto_iam_admin.py), verifies each
//! request's SigV4 signature against an IAM user's access key and checks the request's action
//! against the user's policies. It does not check what AWS checks beyond that:
//!
//! - it authorizes every DynamoDB and Secrets Manager request against the resource `*`: a
//!   statement naming the table's or a secret's ARN never matches there, so nothing would be
//!   allowed at all;
//! - it ignores `ForAllValues:`/`ForAnyValue:` conditions, and a `StringEquals` whose key the
//!   request does not carry, so `dynamodb:LeadingKeys` (the partition keys a request touches) is
//!   never evaluated;
//! - it authorizes a `TransactWriteItems` as the action `dynamodb:TransactWriteItems`, which IAM
//!   does not have: AWS authorizes each item of a transaction as `dynamodb:PutItem`,
//!   `dynamodb:UpdateItem`, `dynamodb:DeleteItem` or, for a condition check,
//!   `dynamodb:ConditionCheckItem`, each on its own partition key.
//!
//! So the user on moto holds the template policy's actions ([`moto_policy`]: its Allow
//! statements, resources `*`, no conditions, `dynamodb:TransactWriteItems` where an item action
//! is allowed), and a recording relay in front of moto ([`Relay`]) keeps every request; each is
//! then split into the authorizations AWS would make ([`authorizations`]) and decided against
//! the template policy with its ARNs resolved, resources and `dynamodb:LeadingKeys` included. A
//! request moto refused, or one the template policy would not allow, fails the test naming the
//! function, the action and the partition key. Nothing here lists which actions a function
//! needs: that is what the handlers do, as recorded.

use crate::events::{EventBench, scenarios};
use crate::support::{IamMoto, iam_moto, sdk_config_for};
use crate::template::{self, Resolved, Stack};
use gatehouse::config::{Config, Vars};
use gatehouse::routes::Platforms;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------------------------
// The evaluation: identity policies as AWS evaluates them, for the parts the template uses

/// One authorization AWS makes for a request: an action on a resource, with the request's
/// `dynamodb:LeadingKeys` (`None`: the request carries no partition key, as a `Scan` does not).
#[derive(Debug, Clone, PartialEq)]
struct Authorization {
    action: String,
    resource: String,
    leading_keys: Option<Vec<String>>,
}

/// How a request fares under a set of identity policies.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Allowed,
    /// No statement allows it.
    ImplicitDeny,
    /// A Deny statement matches it.
    ExplicitDeny,
}

/// An identity policy document.
#[derive(Debug)]
struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

/// One condition of a statement, on `dynamodb:LeadingKeys` (the only key the template uses;
/// another fails the parse rather than being ignored).
#[derive(Debug)]
struct Condition {
    set: SetOperator,
    /// `StringLike` (`*` and `?` wildcards) rather than `StringEquals`.
    like: bool,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
enum SetOperator {
    /// Plain `StringEquals`/`StringLike`: the key must be present and each of its values match.
    Single,
    /// `ForAllValues:`: every value of the key matches one of the condition's; true when the
    /// request carries no value at all, as in AWS.
    ForAll,
    /// `ForAnyValue:`: some value of the key matches one of the condition's.
    ForAny,
}

/// A string or a list of strings, as policies write `Action`, `Resource` and condition values.
fn strings(value: &Value, what: &str) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{what}: {v} is not a string"))
            })
            .collect(),
        other => Err(format!("{what}: {other} is neither a string nor a list")),
    }
}

impl Policy {
    /// The document `doc`, resolved (no intrinsic functions left). What this evaluation does
    /// not implement (`NotAction`, `NotResource`, `Principal`, another condition key or
    /// operator, a managed policy's name, a SAM policy template) is an error, never ignored.
    fn parse(doc: &Value) -> Result<Self, String> {
        let Some(doc) = doc.as_object() else {
            return Err(format!(
                "{doc}: not an inline policy document (managed policies and SAM policy \
                 templates are not evaluated by this test)"
            ));
        };
        if doc.get("Version").and_then(Value::as_str) != Some("2012-10-17") {
            return Err("a policy document must say Version: '2012-10-17'".into());
        }
        let statements = match &doc["Statement"] {
            Value::Array(list) => list.clone(),
            one @ Value::Object(_) => vec![one.clone()],
            other => return Err(format!("Statement: {other}")),
        };
        let statements = statements
            .iter()
            .map(|s| {
                let s = s.as_object().ok_or("a statement is not an object")?;
                for key in s.keys() {
                    if !matches!(
                        key.as_str(),
                        "Sid" | "Effect" | "Action" | "Resource" | "Condition"
                    ) {
                        return Err(format!("statement key {key} is not evaluated by this test"));
                    }
                }
                let allow = match s.get("Effect").and_then(Value::as_str) {
                    Some("Allow") => true,
                    Some("Deny") => false,
                    other => return Err(format!("Effect: {other:?}")),
                };
                let mut conditions = Vec::new();
                if let Some(c) = s.get("Condition") {
                    let c = c.as_object().ok_or("Condition is not an object")?;
                    for (operator, keys) in c {
                        let (set, base) = match operator.split_once(':') {
                            Some(("ForAllValues", base)) => (SetOperator::ForAll, base),
                            Some(("ForAnyValue", base)) => (SetOperator::ForAny, base),
                            None => (SetOperator::Single, operator.as_str()),
                            Some(_) => return Err(format!("condition operator {operator}")),
                        };
                        let like = match base {
                            "StringLike" => true,
                            "StringEquals" => false,
                            _ => return Err(format!("condition operator {operator}")),
                        };
                        for (key, values) in keys.as_object().ok_or("a condition's keys")? {
                            if key != "dynamodb:LeadingKeys" {
                                return Err(format!("condition key {key}"));
                            }
                            conditions.push(Condition {
                                set,
                                like,
                                values: strings(values, key)?,
                            });
                        }
                    }
                }
                Ok(Statement {
                    allow,
                    actions: strings(
                        s.get("Action").ok_or("a statement without Action")?,
                        "Action",
                    )?,
                    resources: strings(
                        s.get("Resource").ok_or("a statement without Resource")?,
                        "Resource",
                    )?,
                    conditions,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { statements })
    }
}

/// `text` matches the IAM pattern `pattern` (`*` any run, `?` one character).
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The usual two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

impl Statement {
    /// Whether the statement applies to `auth`: action (case-insensitively, as IAM compares
    /// them), resource and every condition.
    fn matches(&self, auth: &Authorization) -> bool {
        let action = auth.action.to_ascii_lowercase();
        self.actions
            .iter()
            .any(|a| wildcard(&a.to_ascii_lowercase(), &action))
            && self.resources.iter().any(|r| wildcard(r, &auth.resource))
            && self.conditions.iter().all(|c| c.holds(auth))
    }
}

impl Condition {
    fn holds(&self, auth: &Authorization) -> bool {
        let one = |v: &String| {
            self.values
                .iter()
                .any(|c| if self.like { wildcard(c, v) } else { c == v })
        };
        match (self.set, &auth.leading_keys) {
            (SetOperator::ForAll, None) => true,
            (SetOperator::ForAll, Some(keys)) => keys.iter().all(one),
            (SetOperator::ForAny, None) | (SetOperator::Single, None) => false,
            (SetOperator::ForAny, Some(keys)) => keys.iter().any(one),
            (SetOperator::Single, Some(keys)) => !keys.is_empty() && keys.iter().all(one),
        }
    }
}

/// AWS's evaluation of identity policies: an explicit Deny wins, else an Allow allows, else
/// the request is denied.
fn decide(policies: &[Policy], auth: &Authorization) -> Decision {
    let matching = || {
        policies
            .iter()
            .flat_map(|p| &p.statements)
            .filter(|s| s.matches(auth))
    };
    if matching().any(|s| !s.allow) {
        Decision::ExplicitDeny
    } else if matching().any(|s| s.allow) {
        Decision::Allowed
    } else {
        Decision::ImplicitDeny
    }
}

/// The partition key attribute of the table (README, "Storage").
const PARTITION_KEY: &str = "pk";

/// The string value of the partition key in a `Key` or `Item` map of DynamoDB's JSON.
fn partition_key(map: &Value) -> Result<String, String> {
    map[PARTITION_KEY]["S"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no string `{PARTITION_KEY}` in {map}"))
}

/// The partition key a `Query` reads: the value the key condition binds with `=` to `pk`, or
/// on an index (`IndexName`) to the index's partition attribute, which is what
/// `dynamodb:LeadingKeys` names for a Query of a global secondary index.
fn queried_partition(body: &Value) -> Result<String, String> {
    let partition_attr = match body["IndexName"].as_str() {
        None => PARTITION_KEY,
        Some(name) => {
            gatehouse::store::INDEXES
                .iter()
                .find(|i| i.name == name)
                .ok_or_else(|| format!("a Query of the unknown index {name}"))?
                .pk
        }
    };
    let expression = body["KeyConditionExpression"]
        .as_str()
        .ok_or("a Query without KeyConditionExpression")?;
    let name = |n: &str| {
        if n.starts_with('#') {
            body["ExpressionAttributeNames"][n]
                .as_str()
                .unwrap_or("")
                .to_owned()
        } else {
            n.to_owned()
        }
    };
    for clause in expression.split(" AND ").chain(expression.split(" and ")) {
        if let Some((left, right)) = clause.split_once('=')
            && name(left.trim().trim_start_matches('(')) == partition_attr
        {
            let placeholder = right.trim().trim_end_matches(')');
            if let Some(v) = body["ExpressionAttributeValues"][placeholder]["S"].as_str() {
                return Ok(v.to_owned());
            }
        }
    }
    Err(format!(
        "the partition key of the Query `{expression}` is not read by this test"
    ))
}

/// The authorizations AWS makes for one request (`X-Amz-Target` and JSON body), `table_arn`
/// giving a table name's ARN. A transaction is authorized item by item, each item as the action
/// of its kind on its own partition key. A DynamoDB operation that addresses items in a way
/// this does not read (`BatchWriteItem`, say) is an error, so that a new kind of call fails the
/// test until it is read here, rather than passing unjudged.
fn authorizations(
    target: &str,
    body: &Value,
    table_arn: &dyn Fn(&str) -> String,
) -> Result<Vec<Authorization>, String> {
    let (service, operation) = target
        .split_once('.')
        .ok_or_else(|| format!("X-Amz-Target `{target}`"))?;
    let table = |v: &Value| -> Result<String, String> {
        let name = v["TableName"]
            .as_str()
            .ok_or_else(|| format!("{operation} without TableName"))?;
        Ok(if name.starts_with("arn:") {
            name.to_owned()
        } else {
            table_arn(name)
        })
    };
    let one = |action: &str, resource: String, pk: Option<String>| Authorization {
        action: format!("dynamodb:{action}"),
        resource,
        leading_keys: pk.map(|k| vec![k]),
    };
    if service.starts_with("DynamoDB_") {
        return match operation {
            "GetItem" | "UpdateItem" | "DeleteItem" => Ok(vec![one(
                operation,
                table(body)?,
                Some(partition_key(&body["Key"])?),
            )]),
            "PutItem" => Ok(vec![one(
                operation,
                table(body)?,
                Some(partition_key(&body["Item"])?),
            )]),
            "Query" => Ok(vec![one(
                operation,
                match body["IndexName"].as_str() {
                    Some(index) => format!("{}/index/{index}", table(body)?),
                    None => table(body)?,
                },
                Some(queried_partition(body)?),
            )]),
            "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
                .as_array()
                .ok_or("a transaction without TransactItems")?
                .iter()
                .map(|entry| {
                    let (kind, item) = entry
                        .as_object()
                        .and_then(|o| o.iter().next())
                        .ok_or("an empty transaction item")?;
                    let (action, key) = match kind.as_str() {
                        "Put" => ("PutItem", &item["Item"]),
                        "Update" => ("UpdateItem", &item["Key"]),
                        "Delete" => ("DeleteItem", &item["Key"]),
                        "ConditionCheck" => ("ConditionCheckItem", &item["Key"]),
                        "Get" => ("GetItem", &item["Key"]),
                        other => return Err(format!("transaction item kind {other}")),
                    };
                    Ok(one(action, table(item)?, Some(partition_key(key)?)))
                })
                .collect(),
            // Table-level calls carry no partition key (and `ForAllValues:` conditions then
            // hold, as they do in AWS: such calls must not be allowed by action at all).
            "Scan" | "DescribeTable" | "DescribeTimeToLive" => {
                Ok(vec![one(operation, table(body)?, None)])
            }
            other => Err(format!(
                "the DynamoDB operation {other} is not read by this test"
            )),
        };
    }
    if service == "AWSEvents" {
        // PutEvents is authorized on each entry's bus (a name or an ARN; none: the default).
        if operation != "PutEvents" {
            return Err(format!(
                "the EventBridge operation {operation} is not read by this test"
            ));
        }
        let mut buses: Vec<String> = body["Entries"]
            .as_array()
            .ok_or("a PutEvents without Entries")?
            .iter()
            .map(|e| {
                let bus = e["EventBusName"].as_str().unwrap_or("default");
                if bus.starts_with("arn:") {
                    bus.to_owned()
                } else {
                    format!("{EVENT_BUS_ARN_PREFIX}{bus}")
                }
            })
            .collect();
        buses.dedup();
        return Ok(buses
            .into_iter()
            .map(|resource| Authorization {
                action: "events:PutEvents".into(),
                resource,
                leading_keys: None,
            })
            .collect());
    }
    if service == "secretsmanager" {
        let id = body["SecretId"]
            .as_str()
            .ok_or_else(|| format!("{operation} without SecretId"))?;
        return Ok(vec![Authorization {
            action: format!("secretsmanager:{operation}"),
            resource: id.to_owned(),
            leading_keys: None,
        }]);
    }
    Err(format!(
        "a call to {service}, which no function should make"
    ))
}

/// The item actions a transaction's items are authorized as.
const TRANSACT_WRITE_ITEM_ACTIONS: [&str; 4] = [
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
];

/// The policy the function's user holds on moto: what moto can evaluate of `policies`, its
/// Allow statements' actions on `*` (moto matches DynamoDB and Secrets Manager requests against
/// the resource `*` only, and does not evaluate the conditions), with the transaction actions
/// moto asks for where an item action is allowed. Resources, conditions, Deny statements and
/// each transaction item are [`decide`]'s to judge.
fn moto_policy(policies: &[Policy]) -> Value {
    let statements: Vec<Value> = policies
        .iter()
        .flat_map(|p| &p.statements)
        .filter(|s| s.allow)
        .map(|s| {
            let mut actions = s.actions.clone();
            let allows = |action: &str| {
                s.actions
                    .iter()
                    .any(|a| wildcard(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
            };
            if TRANSACT_WRITE_ITEM_ACTIONS.iter().any(|a| allows(a)) {
                actions.push("dynamodb:TransactWriteItems".into());
            }
            if allows("dynamodb:GetItem") {
                actions.push("dynamodb:TransactGetItems".into());
            }
            json!({"Effect": "Allow", "Action": actions, "Resource": "*"})
        })
        .collect();
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// Why `auth`, made by `function`, is not allowed (`None`: it is); `names` turns ARNs back into
/// the template's resource names for the message.
fn refusal(
    function: &str,
    policies: &[Policy],
    auth: &Authorization,
    names: &HashMap<String, String>,
) -> Option<String> {
    let decision = decide(policies, auth);
    if decision == Decision::Allowed {
        return None;
    }
    let resource = names.get(&auth.resource).unwrap_or(&auth.resource);
    let partition = match &auth.leading_keys {
        Some(keys) => format!(", partition key {}", keys.join(", ")),
        None => String::new(),
    };
    let why = match decision {
        Decision::ExplicitDeny => "a Deny statement of its template policy matches",
        _ => "no statement of its template policy allows it",
    };
    Some(format!(
        "{function}: {} denied on {resource}{partition} ({why})",
        auth.action
    ))
}

// ---------------------------------------------------------------------------------------------
// IAM on moto: the calls that make a principal, signed here (no IAM SDK in the build)

/// IAM's query API on moto under the admin principal.
struct Iam {
    http: reqwest::Client,
    endpoint: String,
    admin: aws_sdk_dynamodb::config::Credentials,
}

impl Iam {
    /// One IAM action: its XML answer, or moto's refusal.
    async fn try_call(&self, action: &str, params: &[(&str, &str)]) -> Result<String, String> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        // Encoded as Python's `urlencode` does (`quote_plus`): moto parses the form and
        // re-encodes it that way to check the signature, so any other encoding of `*` or `~`
        // (a policy's `"Resource": "*"`) would not match.
        const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'_')
            .remove(b'.')
            .remove(b'-')
            .remove(b'~');
        let encode = |s: &str| percent_encoding::utf8_percent_encode(s, KEEP).to_string();
        let body = [("Action", action), ("Version", "2010-05-08")]
            .iter()
            .chain(params)
            .map(|(k, v)| format!("{}={}", encode(k), encode(v).replace("%20", "+")))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!("{}/", self.endpoint);
        let host = url::Url::parse(&url).unwrap();
        let host = format!("{}:{}", host.host_str().unwrap(), host.port().unwrap_or(80));
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let identity = self.admin.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("iam")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            [("host", host.as_str()), ("content-type", content_type)].into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut request = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .body(body.clone());
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        let answer = request.send().await.expect("IAM on moto answers");
        let status = answer.status();
        let text = answer.text().await.unwrap();
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("IAM {action}: {status}: {text}"))
        }
    }

    /// One IAM action, which must succeed; its XML answer.
    async fn call(&self, action: &str, params: &[(&str, &str)]) -> String {
        self.try_call(action, params)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fails unless moto refuses a request under made-up credentials: a moto that serves
    /// everyone (the open one, or one whose window is still open) would prove nothing.
    async fn assert_enforced(&self) {
        let stranger = Iam {
            http: self.http.clone(),
            endpoint: self.endpoint.clone(),
            admin: aws_sdk_dynamodb::config::Credentials::new(
                "AKIAGATEHOUSESTRANGER",
                "not-a-key",
                None,
                None,
                "stranger",
            ),
        };
        let refused = stranger.try_call("ListUsers", &[]).await.is_err();
        assert!(
            refused,
            "the moto at {} serves unknown credentials: it does not enforce IAM (start it with \
             INITIAL_NO_AUTH_ACTION_COUNT=3 and create the admin with tests/moto_iam_admin.py)",
            self.endpoint
        );
    }

    /// A new user holding `policy` (inline; none if it has no statement, which IAM refuses),
    /// and its access key.
    async fn user(&self, name: &str, policy: &Value) -> aws_sdk_dynamodb::config::Credentials {
        self.call("CreateUser", &[("UserName", name)]).await;
        if policy["Statement"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
        {
            self.call(
                "PutUserPolicy",
                &[
                    ("UserName", name),
                    ("PolicyName", "template"),
                    ("PolicyDocument", &policy.to_string()),
                ],
            )
            .await;
        }
        let answer = self.call("CreateAccessKey", &[("UserName", name)]).await;
        let element = |tag: &str| {
            let open = format!("<{tag}>");
            let start = answer.find(&open).expect(tag) + open.len();
            let end = start + answer[start..].find(&format!("</{tag}>")).expect(tag);
            answer[start..end].to_owned()
        };
        aws_sdk_dynamodb::config::Credentials::new(
            element("AccessKeyId"),
            element("SecretAccessKey"),
            None,
            None,
            "iam-test-function",
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The recording relay in front of moto

/// One request that went through the relay, and how moto answered it.
#[derive(Debug, Clone)]
struct Call {
    /// The function whose user signed it (`?` for a key the relay does not know).
    function: String,
    /// `X-Amz-Target`, e.g. `DynamoDB_20120810.UpdateItem`.
    target: String,
    /// The JSON body (both services speak JSON).
    body: Value,
    /// moto's refusal (an access denial, a bad signature), if it refused.
    refused: Option<String>,
}

struct RelayState {
    upstream: String,
    http: reqwest::Client,
    calls: Mutex<Vec<Call>>,
    /// Access key id → function.
    principals: Mutex<HashMap<String, String>>,
}

/// An HTTP relay to moto that passes every request on unchanged (headers included, so the
/// signature stays valid) and records it: who signed it, what it asked and whether moto
/// refused. The functions' apps reach DynamoDB and Secrets Manager only through it.
struct Relay {
    url: String,
    state: Arc<RelayState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Relay {
    /// The relay, on a thread and runtime of its own, so that the scenarios' work (key
    /// generation in the simulators, say) never keeps it from answering.
    fn start(upstream: &str) -> Relay {
        let state = Arc::new(RelayState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: crate::support::http(),
            calls: Mutex::new(Vec::new()),
            principals: Mutex::new(HashMap::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .fallback(relay)
            .with_state(state.clone());
        // Dropping the relay drops `stopper`, which ends the server and its thread.
        let (stopper, stop) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.await;
                    })
                    .await
            })
        });
        Relay {
            url: format!("http://{addr}"),
            state,
            _stop: stopper,
        }
    }

    fn know(&self, key_id: &str, function: &str) {
        self.state
            .principals
            .lock()
            .unwrap()
            .insert(key_id.to_owned(), function.to_owned());
    }

    fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }
}

/// Headers that belong to one hop, not to the request: the relay sets its own.
const HOP_BY_HOP: [&str; 4] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
];

async fn relay(
    axum::extract::State(state): axum::extract::State<Arc<RelayState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let key_id = header("authorization")
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_owned();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // The Host header goes on as the client signed it: reqwest keeps a Host it is given.
    let mut forward = state
        .http
        .request(parts.method.clone(), format!("{}{path}", state.upstream));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            forward = forward.header(name, value);
        }
    }
    let answer = match forward.body(body.clone()).send().await {
        Ok(answer) => answer,
        Err(e) => {
            return axum::response::Response::builder()
                .status(502)
                .body(axum::body::Body::from(format!("relay: {e}")))
                .unwrap();
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let refused = (status.as_u16() == 403
        || (status.is_client_error() && text.contains("AccessDenied")))
    .then(|| {
        // moto's message names the principal and the action.
        let message = text
            .split("<Message>")
            .nth(1)
            .and_then(|m| m.split("</Message>").next())
            .unwrap_or(&text);
        format!("{status}: {message}")
    });
    let function = state
        .principals
        .lock()
        .unwrap()
        .get(&key_id)
        .cloned()
        .unwrap_or_else(|| "?".into());
    state.calls.lock().unwrap().push(Call {
        function,
        target: header("x-amz-target"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        refused,
    });
    let mut response = axum::response::Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    response.body(axum::body::Body::from(bytes)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The template deployed on the enforcing moto

/// A function of the template with its user on moto.
struct Deployed {
    function: template::Function,
    credentials: aws_sdk_dynamodb::config::Credentials,
}

/// What all scenarios share: the secrets (template logical id → ARN, and the name the app knows
/// each by) and one user per function.
struct World {
    moto: IamMoto,
    admin: aws_config::SdkConfig,
    secrets: BTreeMap<String, (String, String)>,
    deployed: Vec<Deployed>,
}

/// The partition of ARNs moto uses, for a table's ARN from its name.
const TABLE_ARN_PREFIX: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/";
/// The same for an event bus.
const EVENT_BUS_ARN_PREFIX: &str = "arn:aws:events:us-east-1:123456789012:event-bus/";

impl World {
    /// The secrets of the template with the events' values, and one user per function holding
    /// what moto evaluates of its template policy.
    async fn create(moto: IamMoto) -> World {
        let timeouts = aws_config::timeout::TimeoutConfig::builder().build();
        let admin = sdk_config_for(&moto.endpoint, moto.admin.clone(), timeouts).await;
        let values: Value = serde_json::from_str(
            &std::fs::read_to_string(gatehouse_local::events::dir().join("secrets.json")).unwrap(),
        )
        .unwrap();
        let sm = aws_sdk_secretsmanager::Client::new(&admin);
        let mut secrets = BTreeMap::new();
        let t = template::template();
        for (id, resource) in t["Resources"].as_object().unwrap() {
            if resource["Type"] != "AWS::SecretsManager::Secret" {
                continue;
            }
            // `<Name>Secret` holds what the app calls `name` (config::SECRET_NAMES).
            let name = id
                .strip_suffix("Secret")
                .unwrap_or_else(|| panic!("secret {id} is named <Name>Secret"))
                .to_ascii_lowercase();
            assert!(
                gatehouse::config::SECRET_NAMES.contains(&name.as_str()),
                "{id}: the app knows no secret `{name}`"
            );
            let arn = sm
                .create_secret()
                .name(format!(
                    "gatehouse-iam-{name}-{}",
                    uuid::Uuid::new_v4().simple()
                ))
                .secret_string(values[&name].to_string())
                .send()
                .await
                .expect("create secret")
                .arn()
                .unwrap()
                .to_owned();
            secrets.insert(id.clone(), (name, arn));
        }
        let iam = Iam {
            http: crate::support::http(),
            endpoint: moto.endpoint.clone(),
            admin: moto.admin.clone(),
        };
        iam.assert_enforced().await;
        // moto's policy has no resources, so any table's ARN stands in for the scenarios' own.
        let stack = World::stack_of(&secrets, "any");
        let mut deployed = Vec::new();
        for function in template::functions() {
            let policies = policies_of(&function, &stack)
                .unwrap_or_else(|e| panic!("{}: {e}", function.binary));
            let user = format!(
                "gh-{}-{}",
                function.binary,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let credentials = iam.user(&user, &moto_policy(&policies)).await;
            deployed.push(Deployed {
                function,
                credentials,
            });
        }
        World {
            moto,
            admin,
            secrets,
            deployed,
        }
    }

    /// The stack of one scenario: its table, the shared secrets.
    fn stack_of(secrets: &BTreeMap<String, (String, String)>, table: &str) -> Stack {
        let mut stack = Stack::default();
        stack.refs.insert("Table".into(), table.into());
        stack.attributes.insert(
            ("Table".into(), "Arn".into()),
            format!("{TABLE_ARN_PREFIX}{table}"),
        );
        for (id, (_, arn)) in secrets {
            stack.refs.insert(id.clone(), arn.clone());
        }
        // The events' bus and dead-letter queue, named after the table.
        let bus = format!("{table}-events");
        stack.refs.insert("EventBus".into(), bus.clone());
        stack.attributes.insert(
            ("EventBus".into(), "Arn".into()),
            format!("{EVENT_BUS_ARN_PREFIX}{bus}"),
        );
        stack.attributes.insert(
            ("EventsDeadLetterQueue".into(), "Arn".into()),
            format!("arn:aws:sqs:us-east-1:123456789012:{table}-dlq"),
        );
        for (name, value) in [
            ("AWS::Region", "us-east-1"),
            ("AWS::AccountId", "123456789012"),
            ("AWS::Partition", "aws"),
            ("AWS::URLSuffix", "amazonaws.com"),
        ] {
            stack.pseudo.insert(name.into(), value.into());
        }
        stack
    }
}

/// A function's template policies, resolved in `stack` and parsed.
fn policies_of(function: &template::Function, stack: &Stack) -> Result<Vec<Policy>, String> {
    function
        .policies
        .iter()
        .map(|p| match stack.resolve(p)? {
            Resolved::Value(doc) => Policy::parse(&doc),
            Resolved::Parameter(name) => Err(format!("a policy that is the parameter {name}")),
        })
        .collect()
}

/// What one scenario left to judge.
struct Outcome {
    scenario: &'static str,
    stack: Stack,
    calls: Vec<Call>,
    dispatched: BTreeSet<String>,
    failure: Option<String>,
}

/// Runs one scenario of tests/it/events.rs with each function on its own app: DynamoDB and
/// Secrets Manager on the enforcing moto, through a relay of the scenario's own, under the
/// function's user, configured by the function's template environment. The cases seed and
/// inspect with the admin's app.
async fn run_scenario(
    world: Arc<World>,
    scenario: &'static str,
    run: crate::events::Scenario,
) -> Outcome {
    let table = format!("gatehouse-iam-{}", uuid::Uuid::new_v4().simple());
    gatehouse::store::create_table(&aws_sdk_dynamodb::Client::new(&world.admin), &table)
        .await
        .expect("create table");
    let stack = World::stack_of(&world.secrets, &table);
    let relay = Relay::start(&world.moto.endpoint);
    for d in &world.deployed {
        relay.know(d.credentials.access_key_id(), &d.function.binary);
    }
    let (world2, stack2, relay_url) = (world.clone(), stack.clone(), relay.url.clone());
    let bench = EventBench::with_apps(async move |vars: Vars| {
        let world = world2;
        let mut vars = vars;
        // This judges permissions, not latency: on a loaded machine a slow moto must not turn
        // into a 503.
        vars.set("GATEHOUSE_AWS_TIMEOUT_SECONDS", "60");
        // The admin's app: every secret, the table, straight to moto.
        let mut admin_vars = vars.clone();
        admin_vars.set("TABLE_NAME", &table);
        for (name, arn) in world.secrets.values() {
            admin_vars.set(format!("{}_SECRET_ID", name.to_ascii_uppercase()), arn);
        }
        let admin = app_on(&admin_vars, &world.moto.endpoint, world.moto.admin.clone()).await;
        let mut apps = HashMap::new();
        for d in &world.deployed {
            let mut own = vars.clone();
            // As deployed: no secrets file to fall back on, only what the environment names.
            own.set(
                "GATEHOUSE_SECRETS_FILE",
                "/nonexistent/gatehouse-iam-secrets.json",
            );
            for (name, value) in &d.function.environment {
                match stack2.resolve(value) {
                    Ok(Resolved::Value(Value::String(s))) => own.set(name, s),
                    Ok(Resolved::Value(other)) => own.set(name, other.to_string()),
                    // A parameter's value is the events' configuration's.
                    Ok(Resolved::Parameter(_)) => {}
                    Err(e) => panic!("{}: environment {name}: {e}", d.function.binary),
                }
            }
            let app = app_on(&own, &relay_url, d.credentials.clone()).await;
            apps.insert(d.function.binary.clone(), app);
        }
        (admin, apps)
    })
    .await;
    if scenario == "saison_scenario" {
        // Tokens that are due at once: the callback's profile call refreshes them, so a token
        // refresh (its lease, the re-read and the in-place update) runs under IAM too.
        bench.saison.set_access_token_lifetime(60);
    }
    let bench = Arc::new(bench);
    let running = bench.clone();
    let failure = tokio::spawn(async move { run(&running).await })
        .await
        .err()
        .map(|e| match e.try_into_panic() {
            Ok(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()),
            Err(e) => e.to_string(),
        });
    Outcome {
        scenario,
        stack,
        calls: relay.calls(),
        dispatched: bench.dispatched(),
        failure,
    }
}

/// An app configured by `vars` whose store and secrets are reached at `endpoint` under
/// `credentials`, with the app's own AWS timeouts.
async fn app_on(
    vars: &Vars,
    endpoint: &str,
    credentials: aws_sdk_dynamodb::config::Credentials,
) -> Arc<Platforms> {
    let config = Config::from_vars(vars).unwrap();
    let sdk = sdk_config_for(endpoint, credentials, config.aws_timeouts()).await;
    let table = config
        .table_name
        .clone()
        .expect("TABLE_NAME is in every function's template environment");
    let store = Arc::new(gatehouse::store::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        table,
    ));
    Arc::new(Platforms::with_store(vars, config, store, Some(&sdk)).unwrap())
}

/// Every function of template.yaml, on moto enforcing IAM under its template policy, runs the
/// events of tests/it/events.rs; every request it makes must be allowed by moto and by [`decide`]
/// on the template policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_calls_only_what_its_template_policy_allows() {
    let Some(moto) = iam_moto() else {
        return;
    };
    let world = Arc::new(World::create(moto).await);
    let runs: Vec<_> = scenarios()
        .into_iter()
        .map(|(name, run)| tokio::spawn(run_scenario(world.clone(), name, run)))
        .collect();
    let mut outcomes = Vec::new();
    for run in runs {
        outcomes.push(run.await.expect("a scenario's set-up"));
    }

    let mut refusals = BTreeSet::new();
    let mut failures = Vec::new();
    let mut allowed: HashMap<String, Vec<Authorization>> = HashMap::new();
    let mut names: HashMap<String, String> = world
        .secrets
        .iter()
        .map(|(id, (_, arn))| (arn.clone(), id.clone()))
        .collect();
    for outcome in &outcomes {
        names.insert(
            outcome.stack.attributes[&("Table".to_owned(), "Arn".to_owned())].clone(),
            "Table".into(),
        );
        let policies: HashMap<&str, Vec<Policy>> = world
            .deployed
            .iter()
            .map(|d| {
                let p = policies_of(&d.function, &outcome.stack).unwrap();
                (d.function.binary.as_str(), p)
            })
            .collect();
        for call in &outcome.calls {
            let operation = call.target.rsplit('.').next().unwrap_or("?");
            let service = if call.target.starts_with("DynamoDB") {
                "dynamodb"
            } else {
                "secretsmanager"
            };
            if let Some(why) = &call.refused {
                refusals.insert(format!(
                    "{}: {service}:{operation} denied by moto enforcing IAM ({why})",
                    call.function
                ));
            }
            let Some(policies) = policies.get(call.function.as_str()) else {
                refusals.insert(format!(
                    "a request signed by no function's key: {}",
                    call.target
                ));
                continue;
            };
            let auths = match authorizations(&call.target, &call.body, &|t| {
                format!("{TABLE_ARN_PREFIX}{t}")
            }) {
                Ok(auths) => auths,
                Err(e) => {
                    refusals.insert(format!("{}: {e}", call.function));
                    continue;
                }
            };
            for auth in auths {
                match refusal(&call.function, policies, &auth, &names) {
                    Some(why) => {
                        refusals.insert(why);
                    }
                    None => allowed.entry(call.function.clone()).or_default().push(auth),
                }
            }
        }
        if let Some(failure) = &outcome.failure {
            // The first lines say which event and what status; the bodies after are long.
            let short: String = failure.chars().take(400).collect();
            failures.push(format!("{} failed: {short}", outcome.scenario));
        }
    }

    // Every function behind a route ran, and the scheduled ones the scenarios run directly.
    let dispatched: BTreeSet<&String> = outcomes.iter().flat_map(|o| &o.dispatched).collect();
    let routed: BTreeSet<&str> = gatehouse::routes::all()
        .iter()
        .map(|r| r.function_name())
        .collect();
    for d in &world.deployed {
        let binary = &d.function.binary;
        if dispatched.contains(binary) {
            continue;
        }
        if !routed.contains(binary.as_str()) {
            eprintln!(
                "iam: {binary} serves no route and no scenario runs it: its policy is not exercised"
            );
        } else {
            failures.push(format!("{binary}: no event ran it"));
        }
    }
    report_unexercised(&world, &outcomes[0].stack, &allowed);

    let mut problems: Vec<String> = refusals.into_iter().collect();
    problems.extend(failures);
    assert!(
        problems.is_empty(),
        "IAM: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// Prints the grants of the template that no recorded request used (on stderr: a grant can be
/// needed by a path the events do not take, such as a Haravan token refresh), so that a
/// reviewer sees which grants rest on reading the code rather than on a run.
fn report_unexercised(world: &World, stack: &Stack, allowed: &HashMap<String, Vec<Authorization>>) {
    let mut lines = Vec::new();
    for d in &world.deployed {
        let used = allowed
            .get(&d.function.binary)
            .map_or(&[][..], Vec::as_slice);
        for policy in policies_of(&d.function, stack).unwrap() {
            for s in policy.statements.iter().filter(|s| s.allow) {
                let keys: Vec<Option<&String>> = match s.conditions.first() {
                    Some(c) => c.values.iter().map(Some).collect(),
                    None => vec![None],
                };
                for action in &s.actions {
                    for key in &keys {
                        let hit = used.iter().any(|a| {
                            wildcard(&action.to_ascii_lowercase(), &a.action.to_ascii_lowercase())
                                && match (key, &a.leading_keys) {
                                    (Some(k), Some(pks)) => pks.iter().all(|pk| wildcard(k, pk)),
                                    (None, _) => true,
                                    (Some(_), None) => false,
                                }
                        });
                        if !hit {
                            lines.push(format!(
                                "{}: {action}{}",
                                d.function.binary,
                                key.map(|k| format!(" on {k}")).unwrap_or_default()
                            ));
                        }
                    }
                }
            }
        }
    }
    if !lines.is_empty() {
        eprintln!(
            "iam: granted but not used by any event (needed by paths the events do not take):\n  {}",
            lines.join("\n  ")
        );
    }
}

/// events-publisher under its template policy on the IAM-enforcing moto: the sample stream
/// batch (events/events-publisher.json) goes to the stack's bus with the function's own
/// credentials, moto refuses none of its calls, and each is allowed by the template policy as
/// AWS evaluates it (`events:PutEvents` on that bus); a bus the policy does not name is not.
/// (The stream's reads are Lambda's, under the role SAM gives a DynamoDB event.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_puts_events_only_under_its_template_policy() {
    let Some(moto) = iam_moto() else {
        return;
    };
    let timeouts = aws_config::timeout::TimeoutConfig::builder().build();
    let admin = sdk_config_for(&moto.endpoint, moto.admin.clone(), timeouts.clone()).await;
    let table = format!("gatehouse-iam-{}", uuid::Uuid::new_v4().simple());
    let stack = World::stack_of(&BTreeMap::new(), &table);
    let function = template::functions()
        .into_iter()
        .find(|f| f.binary == "events-publisher")
        .expect("the template deploys events-publisher");
    let Ok(Resolved::Value(Value::String(bus))) =
        stack.resolve(&function.environment["EVENT_BUS_NAME"])
    else {
        panic!("EVENT_BUS_NAME is the stack's bus");
    };
    aws_sdk_eventbridge::Client::new(&admin)
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .unwrap();
    let policies = policies_of(&function, &stack).unwrap();
    let iam = Iam {
        http: crate::support::http(),
        endpoint: moto.endpoint.clone(),
        admin: moto.admin.clone(),
    };
    iam.assert_enforced().await;
    let user = format!(
        "gh-events-publisher-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let credentials = iam.user(&user, &moto_policy(&policies)).await;
    let relay = Relay::start(&moto.endpoint);
    relay.know(credentials.access_key_id(), "events-publisher");
    let sdk = sdk_config_for(&relay.url, credentials, timeouts).await;
    let text =
        std::fs::read_to_string(gatehouse_local::events::dir().join("events-publisher.json"))
            .unwrap();
    let stream: aws_lambda_events::event::dynamodb::Event = serde_json::from_str(&text).unwrap();
    let publisher =
        gatehouse::publisher::Publisher::new(aws_sdk_eventbridge::Client::new(&sdk), &bus);
    let published = publisher.publish(&stream, None).await;
    assert!(published.failures.is_empty(), "{:?}", published.failures);
    assert_eq!(published.ids.len(), stream.records.len());

    let names = HashMap::new();
    let judge = |calls: &[Call]| -> Vec<String> {
        let mut problems = Vec::new();
        for call in calls {
            if let Some(why) = &call.refused {
                problems.push(format!("moto refused {}: {why}", call.target));
            }
            for auth in authorizations(&call.target, &call.body, &|t| {
                format!("{TABLE_ARN_PREFIX}{t}")
            })
            .unwrap()
            {
                problems.extend(refusal("events-publisher", &policies, &auth, &names));
            }
        }
        problems
    };
    let calls = relay.calls();
    assert!(!calls.is_empty());
    assert!(
        calls.iter().all(|c| c.target == "AWSEvents.PutEvents"),
        "{calls:?}"
    );
    let problems = judge(&calls);
    assert!(problems.is_empty(), "{problems:?}");

    let elsewhere =
        gatehouse::publisher::Publisher::new(aws_sdk_eventbridge::Client::new(&sdk), "another-bus");
    let _ = elsewhere.publish(&stream, None).await;
    let later = relay.calls();
    let problems = judge(&later[calls.len()..]);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("events:PutEvents denied")),
        "{problems:?}"
    );
}

/// moto, enforcing IAM, refuses what a user's policy does not grant, and the relay records the
/// refusal by function and action: what the test above relies on to see a denial that the
/// handler turns into a 503.
#[tokio::test]
async fn a_call_moto_refuses_is_recorded_by_function_and_action() {
    use gatehouse::store::{Condition, Store};
    let Some(moto) = iam_moto() else {
        return;
    };
    let timeouts = aws_config::timeout::TimeoutConfig::builder().build();
    let admin = sdk_config_for(&moto.endpoint, moto.admin.clone(), timeouts.clone()).await;
    let table = format!("gatehouse-iam-{}", uuid::Uuid::new_v4().simple());
    gatehouse::store::create_table(&aws_sdk_dynamodb::Client::new(&admin), &table)
        .await
        .unwrap();
    let iam = Iam {
        http: crate::support::http(),
        endpoint: moto.endpoint.clone(),
        admin: moto.admin.clone(),
    };
    let granted = Policy::parse(&json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"}]}))
    .unwrap();
    let name = format!(
        "gh-denied-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let credentials = iam.user(&name, &moto_policy(&[granted])).await;
    let relay = Relay::start(&moto.endpoint);
    relay.know(credentials.access_key_id(), "haravan-webhooks");
    let sdk = sdk_config_for(&relay.url, credentials, timeouts).await;
    let store = gatehouse::store::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let key = gatehouse::haravan::install_key("1000444444");
    assert!(store.get(&key).await.unwrap().is_none());
    let mut set = serde_json::Map::new();
    set.insert("shop_updated_at".into(), json!(1));
    let denied = store.update(&key, &set, Condition::Always).await;
    assert!(denied.is_err(), "{denied:?}");
    let calls = relay.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].target, "DynamoDB_20120810.GetItem");
    assert!(calls[0].refused.is_none(), "{:?}", calls[0]);
    assert_eq!(calls[1].function, "haravan-webhooks");
    assert_eq!(calls[1].target, "DynamoDB_20120810.UpdateItem");
    let refused = calls[1].refused.as_deref().unwrap_or_default();
    assert!(
        refused.contains("not authorized to perform: dynamodb:UpdateItem"),
        "{refused}"
    );
}

// ---------------------------------------------------------------------------------------------
// The evaluation itself

#[cfg(test)]
mod evaluation {
    use super::*;

    const TABLE: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/t";

    fn policy(statements: Value) -> Vec<Policy> {
        vec![Policy::parse(&json!({"Version": "2012-10-17", "Statement": statements})).unwrap()]
    }

    fn auth(action: &str, resource: &str, pk: Option<&str>) -> Authorization {
        Authorization {
            action: action.into(),
            resource: resource.into(),
            leading_keys: pk.map(|k| vec![k.to_owned()]),
        }
    }

    /// A table statement as template.yaml writes them.
    fn scoped(action: &str, operator: &str, keys: &[&str]) -> Value {
        json!({"Effect": "Allow", "Action": action, "Resource": TABLE,
               "Condition": {operator: {"dynamodb:LeadingKeys": keys}}})
    }

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(wildcard("session#haravan#*", "session#haravan#1000"));
        assert!(wildcard("session#haravan#*", "session#haravan#"));
        assert!(!wildcard("session#haravan#*", "session#sesami#1"));
        assert!(wildcard("dynamodb:*Item", "dynamodb:GetItem"));
        assert!(wildcard("a?c", "abc") && !wildcard("a?c", "ac"));
        assert!(wildcard("*", "") && !wildcard("", "x"));
        assert!(wildcard("*b*b", "abab") && !wildcard("*b*b", "abba"));
        // The template's tenant patterns: a kind's items, each in a partition of its own.
        assert!(wildcard("install#haravan#*", "install#haravan#1000444444"));
        assert!(
            !wildcard("install#haravan#*", "install#haravan"),
            "no tenant part"
        );
        assert!(!wildcard("install#haravan#*", "install#sesami#1000"));
        assert!(!wildcard("install#haravan#*", "lease#install#haravan#1"));
        assert!(wildcard("pending#momo#??", "pending#momo#07"));
        assert!(!wildcard("pending#momo#??", "pending#momo#7"));
        // Case matters in a StringLike value, unlike in an action.
        assert!(!wildcard("install#haravan#*", "Install#haravan#1"));
        // `*` spans `#`: a pattern is no narrower than its prefix.
        assert!(wildcard("tx#momo#*", "tx#momo#a#b"));
    }

    #[test]
    fn allows_what_a_statement_names_and_nothing_else() {
        let p = policy(json!([scoped(
            "dynamodb:GetItem",
            "ForAllValues:StringLike",
            &["install#haravan", "session#haravan#*"]
        )]));
        let ok = auth("dynamodb:GetItem", TABLE, Some("install#haravan"));
        assert_eq!(decide(&p, &ok), Decision::Allowed);
        // IAM compares actions case-insensitively.
        let lower = auth("dynamodb:getitem", TABLE, Some("install#haravan"));
        assert_eq!(decide(&p, &lower), Decision::Allowed);
        // Denied by action.
        let put = auth("dynamodb:PutItem", TABLE, Some("install#haravan"));
        assert_eq!(decide(&p, &put), Decision::ImplicitDeny);
        // Denied by resource.
        let other = format!("{TABLE}-other");
        let elsewhere = auth("dynamodb:GetItem", &other, Some("install#haravan"));
        assert_eq!(decide(&p, &elsewhere), Decision::ImplicitDeny);
    }

    #[test]
    fn leading_keys_scope_a_statement_to_its_partitions() {
        let like = policy(json!([scoped(
            "dynamodb:Query",
            "ForAllValues:StringLike",
            &["session#haravan#*"]
        )]));
        let get = |pk| auth("dynamodb:Query", TABLE, Some(pk));
        assert_eq!(
            decide(&like, &get("session#haravan#1000")),
            Decision::Allowed
        );
        assert_eq!(
            decide(&like, &get("session#sesami#1000")),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&like, &get("install#haravan")),
            Decision::ImplicitDeny
        );
        // StringEquals takes `*` literally.
        let equals = policy(json!([scoped(
            "dynamodb:Query",
            "ForAllValues:StringEquals",
            &["session#haravan#*", "tx#momo"]
        )]));
        assert_eq!(
            decide(&equals, &get("session#haravan#1000")),
            Decision::ImplicitDeny
        );
        assert_eq!(decide(&equals, &get("tx#momo")), Decision::Allowed);
        // A request without a partition key: ForAllValues holds over nothing, as in AWS (so a
        // Scan must never be granted by action); ForAnyValue and plain operators do not.
        let scan = auth("dynamodb:Query", TABLE, None);
        assert_eq!(decide(&like, &scan), Decision::Allowed);
        for operator in ["ForAnyValue:StringLike", "StringLike"] {
            let p = policy(json!([scoped("dynamodb:Query", operator, &["tx#momo"])]));
            assert_eq!(decide(&p, &scan), Decision::ImplicitDeny, "{operator}");
            assert_eq!(decide(&p, &get("tx#momo")), Decision::Allowed, "{operator}");
        }
    }

    #[test]
    fn an_explicit_deny_wins() {
        let p = policy(json!([
            {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
            scoped("dynamodb:GetItem", "ForAllValues:StringLike", &["install#haravan"])
                .as_object()
                .map(|s| {
                    let mut s = s.clone();
                    s.insert("Effect".into(), json!("Deny"));
                    Value::Object(s)
                })
                .unwrap()
        ]));
        let get = |pk| auth("dynamodb:GetItem", TABLE, Some(pk));
        assert_eq!(decide(&p, &get("install#haravan")), Decision::ExplicitDeny);
        assert_eq!(decide(&p, &get("install#sesami")), Decision::Allowed);
    }

    fn key(pk: &str) -> Value {
        json!({"pk": {"S": pk}, "sk": {"S": "x"}})
    }

    #[test]
    fn requests_are_read_as_the_store_sends_them() {
        let arn = |t: &str| format!("arn:aws:dynamodb:us-east-1:123456789012:table/{t}");
        let read = |target: &str, body: Value| {
            authorizations(&format!("DynamoDB_20120810.{target}"), &body, &arn).unwrap()
        };
        let get = read(
            "GetItem",
            json!({"TableName": "t", "Key": key("install#haravan")}),
        );
        assert_eq!(
            get,
            vec![auth("dynamodb:GetItem", TABLE, Some("install#haravan"))]
        );
        let put = read(
            "PutItem",
            json!({"TableName": "t", "Item": key("state#sesami")}),
        );
        assert_eq!(
            put,
            vec![auth("dynamodb:PutItem", TABLE, Some("state#sesami"))]
        );
        let query = read(
            "Query",
            json!({"TableName": "t", "KeyConditionExpression": "#pk = :pk",
                   "ExpressionAttributeNames": {"#pk": "pk"},
                   "ExpressionAttributeValues": {":pk": {"S": "sid#haravan#s1"}}}),
        );
        assert_eq!(
            query,
            vec![auth("dynamodb:Query", TABLE, Some("sid#haravan#s1"))]
        );
        let secret = authorizations(
            "secretsmanager.GetSecretValue",
            &json!({"SecretId": "arn:aws:secretsmanager:us-east-1:1:secret:s"}),
            &arn,
        )
        .unwrap();
        assert_eq!(
            secret,
            vec![auth(
                "secretsmanager:GetSecretValue",
                "arn:aws:secretsmanager:us-east-1:1:secret:s",
                None
            )]
        );
        // What this does not read fails rather than passes.
        let batch = json!({"RequestItems": {"t": []}});
        assert!(authorizations("DynamoDB_20120810.BatchWriteItem", &batch, &arn).is_err());
        assert!(authorizations("AmazonSQS.SendMessage", &json!({}), &arn).is_err());
    }

    #[test]
    fn a_transaction_is_authorized_item_by_item() {
        let arn = |t: &str| format!("arn:aws:dynamodb:us-east-1:123456789012:table/{t}");
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "t", "Item": key("webhook#haravan")}},
            {"Update": {"TableName": "t", "Key": key("install#haravan"),
                        "UpdateExpression": "SET #s0 = :s0"}},
            {"Delete": {"TableName": "t", "Key": key("session#haravan#1")}},
            {"ConditionCheck": {"TableName": "t", "Key": key("lease#install#haravan"),
                                "ConditionExpression": "attribute_exists(#pk)"}}
        ]});
        let auths = authorizations("DynamoDB_20120810.TransactWriteItems", &body, &arn).unwrap();
        assert_eq!(
            auths,
            vec![
                auth("dynamodb:PutItem", TABLE, Some("webhook#haravan")),
                auth("dynamodb:UpdateItem", TABLE, Some("install#haravan")),
                auth("dynamodb:DeleteItem", TABLE, Some("session#haravan#1")),
                auth(
                    "dynamodb:ConditionCheckItem",
                    TABLE,
                    Some("lease#install#haravan")
                ),
            ]
        );
        // A policy granting the first three (and what IAM has no such action for) refuses the
        // condition check, by its own action.
        let p = policy(json!([
            scoped("dynamodb:PutItem", "ForAllValues:StringLike", &["webhook#haravan"]),
            scoped("dynamodb:UpdateItem", "ForAllValues:StringLike", &["install#haravan"]),
            scoped("dynamodb:DeleteItem", "ForAllValues:StringLike", &["session#haravan#*"]),
            {"Effect": "Allow", "Action": "dynamodb:TransactWriteItems", "Resource": TABLE}
        ]));
        let refused: Vec<String> = auths
            .iter()
            .filter_map(|a| refusal("haravan-webhooks", &p, a, &HashMap::new()))
            .collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with(
                "haravan-webhooks: dynamodb:ConditionCheckItem denied on arn:aws:dynamodb:us-east-1:123456789012:table/t, partition key lease#install#haravan"
            ),
            "{}",
            refused[0]
        );
        // An item on a partition of its kind's statement that is not listed: refused too.
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "t", "Item": key("install#sesami")}}]});
        let auths = authorizations("DynamoDB_20120810.TransactWriteItems", &body, &arn).unwrap();
        assert_eq!(decide(&p, &auths[0]), Decision::ImplicitDeny);
    }

    #[test]
    fn moto_gets_the_actions_only_with_the_transaction_actions_it_asks_for() {
        let p = policy(json!([
            scoped("dynamodb:UpdateItem", "ForAllValues:StringLike", &["install#haravan"]),
            scoped("dynamodb:GetItem", "ForAllValues:StringLike", &["install#haravan"]),
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
             "Resource": ["arn:aws:secretsmanager:us-east-1:1:secret:s"]},
            {"Effect": "Deny", "Action": "dynamodb:PutItem", "Resource": TABLE}
        ]));
        assert_eq!(
            moto_policy(&p),
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["dynamodb:UpdateItem", "dynamodb:TransactWriteItems"],
                 "Resource": "*"},
                {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:TransactGetItems"],
                 "Resource": "*"},
                {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": "*"}
            ]})
        );
    }

    #[test]
    fn what_is_not_evaluated_is_refused() {
        let parse = |statement: Value| {
            Policy::parse(&json!({"Version": "2012-10-17", "Statement": [statement]}))
        };
        let base = json!({"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE});
        assert!(parse(base.clone()).is_ok());
        let with = |k: &str, v: Value| {
            let mut s = base.as_object().unwrap().clone();
            s.insert(k.into(), v);
            parse(Value::Object(s))
        };
        assert!(with("NotAction", json!("dynamodb:PutItem")).is_err());
        assert!(with("Condition", json!({"StringEquals": {"aws:SourceIp": "1"}})).is_err());
        assert!(
            with(
                "Condition",
                json!({"NumericLessThan": {"dynamodb:LeadingKeys": "1"}})
            )
            .is_err()
        );
        assert!(Policy::parse(&json!("arn:aws:iam::aws:policy/AdministratorAccess")).is_err());
        assert!(Policy::parse(&json!({"DynamoDBCrudPolicy": {"TableName": "t"}})).is_err());
    }

    /// template.yaml's own policies, resolved in a stack of made-up ARNs.
    fn template_policies() -> (Stack, Vec<(String, Vec<Policy>)>) {
        let mut stack = World::stack_of(&BTreeMap::new(), "t");
        for id in [
            "AppSecret",
            "SesamiSecret",
            "HaravanSecret",
            "SaisonSecret",
            "MomoSecret",
        ] {
            stack.refs.insert(
                id.into(),
                format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{id}"),
            );
        }
        let policies = template::functions()
            .into_iter()
            .map(|f| {
                let p = policies_of(&f, &stack).unwrap_or_else(|e| panic!("{}: {e}", f.binary));
                (f.binary, p)
            })
            .collect();
        (stack, policies)
    }

    /// The check the IAM test makes, on the template without `dynamodb:UpdateItem` for
    /// haravan-webhooks: its shop/update is refused, by function, action and partition.
    #[test]
    fn haravan_webhooks_without_update_item_is_refused_by_name() {
        // The shop/update write as DynamoStore::update sends it.
        let update = json!({"TableName": "t", "Key": key("install#haravan#1000444444"),
                            "UpdateExpression": "SET #s0 = :s0",
                            "ConditionExpression": "attribute_exists(#pk)"});
        let auths = authorizations("DynamoDB_20120810.UpdateItem", &update, &|t| {
            format!("{TABLE_ARN_PREFIX}{t}")
        })
        .unwrap();
        let (stack, all) = template_policies();
        let policies = &all.iter().find(|(b, _)| b == "haravan-webhooks").unwrap().1;
        assert_eq!(
            refusal("haravan-webhooks", policies, &auths[0], &HashMap::new()),
            None
        );

        let function = template::functions()
            .into_iter()
            .find(|f| f.binary == "haravan-webhooks")
            .unwrap();
        let without: Vec<Policy> = function
            .policies
            .iter()
            .map(|p| {
                let Ok(Resolved::Value(mut doc)) = stack.resolve(p) else {
                    panic!("a resolved policy")
                };
                for s in doc["Statement"].as_array_mut().unwrap() {
                    let actions = strings(&s["Action"], "Action").unwrap();
                    s["Action"] = json!(
                        actions
                            .into_iter()
                            .filter(|a| a != "dynamodb:UpdateItem")
                            .collect::<Vec<_>>()
                    );
                }
                Policy::parse(&doc).unwrap()
            })
            .collect();
        let refused = refusal("haravan-webhooks", &without, &auths[0], &HashMap::new()).unwrap();
        assert!(
            refused.starts_with("haravan-webhooks: dynamodb:UpdateItem denied on "),
            "{refused}"
        );
        assert!(
            refused.contains("partition key install#haravan#1000444444"),
            "{refused}"
        );
    }

    /// Each function reaches only its own platform's partitions and secrets (and the app's
    /// keys): every table statement is scoped by `dynamodb:LeadingKeys`, to partitions of its
    /// platform. A Sesami function cannot read a Haravan token, say.
    #[test]
    fn no_function_reaches_another_platforms_partitions_or_secrets() {
        let (stack, all) = template_policies();
        let table = &stack.attributes[&("Table".to_owned(), "Arn".to_owned())];
        for (binary, policies) in &all {
            if binary == "connections" {
                // The listing: Query on the table's two indexes only, no item, no secret.
                for s in policies.iter().flat_map(|p| &p.statements) {
                    assert_eq!(s.actions, ["dynamodb:Query"], "{binary}: {s:?}");
                    assert!(
                        s.resources
                            .iter()
                            .all(|r| r.starts_with(&format!("{table}/index/"))),
                        "{binary}: {s:?}"
                    );
                    assert!(!s.conditions.is_empty(), "{binary}: unscoped");
                }
                continue;
            }
            if binary == "connections-refresh" {
                // The health schedule: the connections, refresh leases and outboxes of the
                // three platforms with refresh tokens and their secrets; Query only on those
                // platforms' shards of `by_platform`; nothing of Sesami's or MoMo's.
                let walked = ["haravan", "saison", "weblink"];
                let secrets =
                    ["HaravanSecret", "SaisonSecret", "AppSecret"].map(|id| &stack.refs[id]);
                for s in policies.iter().flat_map(|p| &p.statements) {
                    if s.actions.iter().all(|a| a.starts_with("secretsmanager:")) {
                        assert!(
                            s.resources.iter().all(|r| secrets.contains(&r)),
                            "{binary}: {s:?}"
                        );
                        continue;
                    }
                    let resource = if s.actions == ["dynamodb:Query"] {
                        format!("{table}/index/by_platform")
                    } else {
                        table.clone()
                    };
                    assert_eq!(s.resources, vec![resource], "{binary}: {s:?}");
                    assert!(
                        !s.conditions.is_empty(),
                        "{binary}: unscoped {:?}",
                        s.actions
                    );
                    for c in &s.conditions {
                        assert!(matches!(c.set, SetOperator::ForAll), "{binary}: {c:?}");
                        for v in &c.values {
                            assert!(
                                walked.iter().any(|p| v.contains(&format!("#{p}#"))),
                                "{binary}: {v}"
                            );
                        }
                    }
                }
                for pk in [
                    "install#sesami#s",
                    "tx#momo#r",
                    "token#momo#collection",
                    "outbox#sesami#e",
                ] {
                    for action in ["GetItem", "Query", "PutItem", "UpdateItem", "DeleteItem"] {
                        let a = auth(&format!("dynamodb:{action}"), table, Some(pk));
                        assert_ne!(
                            decide(policies, &a),
                            Decision::Allowed,
                            "{binary}: {action} {pk}"
                        );
                    }
                }
                continue;
            }
            let platform = binary.split('-').next().unwrap();
            let own_secret = stack
                .refs
                .iter()
                .find(|(id, _)| id.to_ascii_lowercase() == format!("{platform}secret"))
                .map(|(_, arn)| arn.clone());
            for s in policies.iter().flat_map(|p| &p.statements) {
                if s.actions.iter().all(|a| a.starts_with("secretsmanager:")) {
                    for r in &s.resources {
                        assert!(
                            Some(r) == own_secret.as_ref() || r == &stack.refs["AppSecret"],
                            "{binary}: reads the secret {r}"
                        );
                    }
                    continue;
                }
                // The publisher's: the bus and the dead-letter queue, nothing of the table.
                if s.actions
                    .iter()
                    .all(|a| a.starts_with("events:") || a.starts_with("sqs:"))
                {
                    assert_eq!(binary, "events-publisher", "{s:?}");
                    let own = [
                        &stack.attributes[&("EventBus".to_owned(), "Arn".to_owned())],
                        &stack.attributes[&("EventsDeadLetterQueue".to_owned(), "Arn".to_owned())],
                    ];
                    assert!(s.resources.iter().all(|r| own.contains(&r)), "{s:?}");
                    continue;
                }
                assert_eq!(&s.resources, &vec![table.clone()], "{binary}: {s:?}");
                assert!(
                    !s.conditions.is_empty(),
                    "{binary}: unscoped {:?}",
                    s.actions
                );
                for c in &s.conditions {
                    assert!(matches!(c.set, SetOperator::ForAll), "{binary}: {c:?}");
                    for v in &c.values {
                        // events-read answers any platform's event: it reads the outbox only.
                        let outbox_reader = binary == "events-read" && v == "outbox#*";
                        assert!(
                            v.contains(&format!("#{platform}")) || outbox_reader,
                            "{binary}: {v}"
                        );
                    }
                }
            }
            if platform != "haravan" {
                for action in ["GetItem", "Query", "PutItem", "UpdateItem", "DeleteItem"] {
                    let a = auth(
                        &format!("dynamodb:{action}"),
                        table,
                        Some("install#haravan"),
                    );
                    assert_ne!(
                        decide(policies, &a),
                        Decision::Allowed,
                        "{binary}: {action}"
                    );
                }
            }
        }
    }
}
