//! template.yaml and the code agree: the local server's route table is exactly the template's
//! routes, each served by the function whose binary the table names, and every binary in
//! functions/ is deployed (behind its routes, or on a schedule).

use gatehouse::routes;
use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(rel),
    )
    .unwrap()
}

/// `(method, path, binary)` of every HttpApi event, read line by line: each function resource
/// names its binary (`Binary:`) before its events (`Path:`, then `Method:`).
fn template_routes() -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    let (mut binary, mut path) = (String::new(), None::<String>);
    for line in read("template.yaml").lines() {
        let t = line.trim();
        if line.starts_with("  ") && !line.starts_with("   ") && t.ends_with(':') {
            binary.clear();
        }
        if let Some(b) = t.strip_prefix("Binary:") {
            binary = b.trim().to_owned();
        } else if let Some(p) = t.strip_prefix("Path:") {
            path = Some(p.trim().to_owned());
        } else if let Some(m) = t.strip_prefix("Method:") {
            let p = path.take().expect("Path: comes before Method:");
            assert!(!binary.is_empty(), "the function of {p} names its binary");
            out.insert((m.trim().to_uppercase(), p, binary.clone()));
        }
    }
    out
}

#[test]
fn local_routes_are_exactly_the_templates() {
    let template = template_routes();
    assert!(!template.is_empty());
    let local: BTreeSet<(String, String, String)> = routes::all()
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_owned(),
                r.function_name().to_owned(),
            )
        })
        .collect();
    assert_eq!(local, template);
}

/// Every binary the template deploys: behind routes, on a schedule (`momo-reconcile`,
/// `connections-refresh`) or on the table's stream (`events-publisher`).
fn template_binaries() -> BTreeSet<String> {
    read("template.yaml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Binary:"))
        .map(|b| b.trim().to_owned())
        .collect()
}

#[test]
fn every_function_binary_is_deployed() {
    let deployed = template_binaries();
    let routed: BTreeSet<String> = template_routes().into_iter().map(|(_, _, b)| b).collect();
    let scheduled: BTreeSet<String> = deployed.difference(&routed).cloned().collect();
    assert_eq!(
        scheduled,
        BTreeSet::from([
            "momo-reconcile".to_owned(),
            "connections-refresh".to_owned(),
            "events-publisher".to_owned()
        ]),
        "the functions without a route"
    );
    let built: BTreeSet<String> = read("functions/Cargo.toml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_owned())
        .filter(|n| n != "gatehouse-functions")
        .collect();
    assert_eq!(built, deployed);
}

/// The scheduled binaries serve no route, so no `Function` constant names them: each runs its
/// module's runner, shared with the local server and the tests, and nothing else.
#[test]
fn every_scheduled_binary_runs_its_modules_runner() {
    for (binary, call) in [
        ("momo-reconcile", "gatehouse::momo::run_reconciler()"),
        ("connections-refresh", "gatehouse::health::run_schedule()"),
    ] {
        let source = read(&format!("functions/{binary}.rs"));
        assert!(
            source.contains(call),
            "functions/{binary}.rs must call {call}"
        );
        assert!(!source.contains("gatehouse::lambda::run("), "{binary}");
    }
}

/// The README's first command, `cargo run -p gatehouse-local`, needs a default binary now that
/// the crate has several.
#[test]
fn the_local_server_is_the_default_run() {
    let manifest = read("tests/local/Cargo.toml");
    assert!(
        manifest.contains("default-run = \"gatehouse-local\""),
        "tests/local/Cargo.toml must say default-run = \"gatehouse-local\""
    );
    assert!(read("README.md").contains("cargo run -p gatehouse-local "));
}

// ---------------------------------------------------------------------------------------------
// template.yaml as data, for the tests that deploy parts of it on moto (tests/it/iam.rs)

use serde_json::{Map, Value};
use std::collections::HashMap;

/// template.yaml as JSON, with CloudFormation's short-form tags in their long form (`!Ref X` is
/// `{"Ref": "X"}`, `!GetAtt A.B` is `{"Fn::GetAtt": ["A", "B"]}`, `!Sub s` is `{"Fn::Sub": s}`),
/// as CloudFormation itself reads it.
pub(crate) fn template() -> Value {
    let yaml: serde_norway::Value =
        serde_norway::from_str(&read("template.yaml")).expect("template.yaml is YAML");
    long_form(yaml)
}

fn long_form(yaml: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).expect("a YAML number is a JSON number"),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(long_form).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let k = k.as_str().expect("template keys are strings").to_owned();
                    (k, long_form(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = long_form(tagged.value);
            let (key, value) = match (name, value) {
                ("Ref", v) => ("Ref".to_owned(), v),
                ("Condition", v) => ("Condition".to_owned(), v),
                ("GetAtt", Value::String(s)) => {
                    let (resource, attribute) =
                        s.split_once('.').expect("!GetAtt names Resource.Attribute");
                    (
                        "Fn::GetAtt".to_owned(),
                        serde_json::json!([resource, attribute]),
                    )
                }
                (other, v) => (format!("Fn::{other}"), v),
            };
            Value::Object(Map::from_iter([(key, value)]))
        }
    }
}

/// One `AWS::Serverless::Function` of the template.
pub(crate) struct Function {
    /// The binary it runs (`Metadata.BuildProperties.Binary`), e.g. `haravan-webhooks`.
    pub binary: String,
    /// Its environment: the `Globals` ones, then its own over them, unresolved.
    pub environment: Map<String, Value>,
    /// Its `Policies`, unresolved (none: the function may call nothing).
    pub policies: Vec<Value>,
}

/// Every function of the template, in the template's order.
pub(crate) fn functions() -> Vec<Function> {
    let t = template();
    let globals = t["Globals"]["Function"]["Environment"]["Variables"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let resources = t["Resources"].as_object().expect("Resources");
    resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(id, r)| {
            let mut environment = globals.clone();
            if let Some(own) = r["Properties"]["Environment"]["Variables"].as_object() {
                environment.extend(own.clone());
            }
            let policies = match &r["Properties"]["Policies"] {
                Value::Null => Vec::new(),
                Value::Array(list) => list.clone(),
                // SAM takes a single policy (a document or a managed policy's name) as well.
                one => vec![one.clone()],
            };
            Function {
                binary: r["Metadata"]["BuildProperties"]["Binary"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{id} names its binary"))
                    .to_owned(),
                environment,
                policies,
            }
        })
        .collect()
}

/// What a template's `Ref`, `Fn::GetAtt` and `Fn::Sub` stand for in one deployment of it.
#[derive(Default, Clone)]
pub(crate) struct Stack {
    /// `Ref` of a resource: e.g. the table's name, a secret's ARN.
    pub refs: HashMap<String, String>,
    /// `Fn::GetAtt` of a resource's attribute, e.g. `("Table", "Arn")`.
    pub attributes: HashMap<(String, String), String>,
    /// `AWS::Region`, `AWS::AccountId`, `AWS::Partition`, ...
    pub pseudo: HashMap<String, String>,
}

/// A value of the template with its intrinsic functions resolved in `stack`.
#[derive(Debug, PartialEq)]
pub(crate) enum Resolved {
    /// A value the stack determines.
    Value(Value),
    /// The value of a template parameter (chosen at deploy time).
    Parameter(String),
}

impl Stack {
    /// `value` with every intrinsic function resolved. A `Ref` of a parameter at the top level
    /// is [`Resolved::Parameter`]; anywhere deeper, and any intrinsic this reader does not know
    /// (`Fn::If`, `Fn::Select`, ...), is an error, so that a test never reads a guess.
    pub(crate) fn resolve(&self, value: &Value) -> Result<Resolved, String> {
        if let Some(name) = value.get("Ref").and_then(Value::as_str)
            && value.as_object().is_some_and(|o| o.len() == 1)
            && !self.refs.contains_key(name)
            && !self.pseudo.contains_key(name)
        {
            return Ok(Resolved::Parameter(name.to_owned()));
        }
        self.resolve_value(value).map(Resolved::Value)
    }

    fn resolve_value(&self, value: &Value) -> Result<Value, String> {
        match value {
            Value::Array(items) => items
                .iter()
                .map(|v| self.resolve_value(v))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) if map.len() == 1 => {
                let (key, arg) = map.iter().next().expect("one entry");
                match key.as_str() {
                    "Ref" => {
                        let name = arg.as_str().ok_or("Ref of a non-string")?;
                        self.refs
                            .get(name)
                            .or_else(|| self.pseudo.get(name))
                            .map(|s| Value::String(s.clone()))
                            .ok_or_else(|| format!("Ref {name}: not a resource of the stack"))
                    }
                    "Fn::GetAtt" => {
                        let parts: Vec<&str> = arg
                            .as_array()
                            .ok_or("Fn::GetAtt of a non-list")?
                            .iter()
                            .filter_map(Value::as_str)
                            .collect();
                        let [resource, attribute] = parts[..] else {
                            return Err(format!("Fn::GetAtt {arg}: not [Resource, Attribute]"));
                        };
                        self.attribute(resource, attribute).map(Value::String)
                    }
                    "Fn::Sub" => {
                        let text = arg.as_str().ok_or("Fn::Sub with variables is not read")?;
                        self.substitute(text).map(Value::String)
                    }
                    other if other.starts_with("Fn::") || other == "Condition" => {
                        Err(format!("{other} is not resolved by the tests"))
                    }
                    _ => self.resolve_object(map),
                }
            }
            Value::Object(map) => self.resolve_object(map),
            other => Ok(other.clone()),
        }
    }

    fn resolve_object(&self, map: &Map<String, Value>) -> Result<Value, String> {
        map.iter()
            .map(|(k, v)| Ok((k.clone(), self.resolve_value(v)?)))
            .collect::<Result<Map<_, _>, String>>()
            .map(Value::Object)
    }

    fn attribute(&self, resource: &str, attribute: &str) -> Result<String, String> {
        self.attributes
            .get(&(resource.to_owned(), attribute.to_owned()))
            .cloned()
            .ok_or_else(|| format!("Fn::GetAtt {resource}.{attribute}: not known to the stack"))
    }

    /// `${Name}` and `${Resource.Attribute}` replaced (`${!Literal}` stays `${Literal}`).
    fn substitute(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .ok_or_else(|| format!("Fn::Sub {text}: unclosed ${{"))?;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str(&format!("${{{literal}}}"));
            } else if let Some((resource, attribute)) = name.split_once('.') {
                out.push_str(&self.attribute(resource, attribute)?);
            } else {
                let value = self
                    .refs
                    .get(name)
                    .or_else(|| self.pseudo.get(name))
                    .ok_or_else(|| format!("Fn::Sub {text}: ${{{name}}} is not known"))?;
                out.push_str(value);
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The two readers of the template agree: the functions read as YAML are the binaries the
/// routes name, and every one of them names its binary.
#[test]
fn the_yaml_reading_finds_every_routed_function() {
    let routed: BTreeSet<String> = template_routes().into_iter().map(|(_, _, b)| b).collect();
    let read: BTreeSet<String> = functions().into_iter().map(|f| f.binary).collect();
    assert!(routed.is_subset(&read), "{routed:?} ⊄ {read:?}");
}

#[test]
fn intrinsics_resolve_or_refuse() {
    let mut stack = Stack::default();
    stack.refs.insert("Table".into(), "t-1".into());
    stack.attributes.insert(
        ("Table".into(), "Arn".into()),
        "arn:aws:dynamodb:us-east-1:1:table/t-1".into(),
    );
    stack
        .pseudo
        .insert("AWS::Region".into(), "us-east-1".into());
    let t = |v: Value| stack.resolve(&v);
    use serde_json::json;
    assert_eq!(
        t(json!({"Ref": "Table"})),
        Ok(Resolved::Value(json!("t-1")))
    );
    assert_eq!(
        t(json!({"Ref": "LogLevel"})),
        Ok(Resolved::Parameter("LogLevel".into()))
    );
    assert_eq!(
        t(json!([{"Fn::GetAtt": ["Table", "Arn"]}, {"Fn::Sub": "${Table.Arn}/index/*"}])),
        Ok(Resolved::Value(json!([
            "arn:aws:dynamodb:us-east-1:1:table/t-1",
            "arn:aws:dynamodb:us-east-1:1:table/t-1/index/*"
        ])))
    );
    assert_eq!(
        t(json!({"Fn::Sub": "${AWS::Region}-${!Literal}"})),
        Ok(Resolved::Value(json!("us-east-1-${Literal}")))
    );
    assert!(t(json!([{"Ref": "LogLevel"}])).is_err());
    assert!(t(json!({"Fn::If": ["C", 1, 2]})).is_err());
    assert!(t(json!({"Fn::GetAtt": ["Other", "Arn"]})).is_err());
}

/// The template's hardening: a log level that cannot ask the SDK for raw answers, logs kept a
/// bounded time, access logs without query strings (they carry codes and signatures), and a
/// table that cannot be deleted by accident.
#[test]
fn logs_and_the_table_are_hardened() {
    let t = template();
    assert_eq!(
        t["Parameters"]["LogLevel"]["AllowedValues"],
        serde_json::json!(["error", "warn", "info", "debug"])
    );
    let resources = &t["Resources"];
    assert_eq!(
        resources["Table"]["Properties"]["DeletionProtectionEnabled"],
        true
    );
    for group in ["FunctionLogs", "ApiAccessLogs"] {
        assert_eq!(resources[group]["Type"], "AWS::Logs::LogGroup", "{group}");
        assert_eq!(
            resources[group]["Properties"]["RetentionInDays"],
            serde_json::json!({"Ref": "LogRetentionDays"}),
            "{group}"
        );
    }
    assert_eq!(
        t["Globals"]["Function"]["LoggingConfig"]["LogGroup"],
        serde_json::json!({"Ref": "FunctionLogs"})
    );
    let access = &resources["HttpApi"]["Properties"]["AccessLogSettings"];
    let format = access["Format"].as_str().expect("an access log format");
    assert!(format.contains("$context.routeKey"), "{format}");
    for leak in ["querystring", "$context.path", "$input", "$request"] {
        assert!(
            !format
                .to_ascii_lowercase()
                .contains(&leak.to_ascii_lowercase()),
            "{leak}"
        );
    }
    // Every function logs to the shared group: none overrides it.
    for (name, resource) in resources.as_object().unwrap() {
        if resource["Type"] == "AWS::Serverless::Function" {
            assert!(
                resource["Properties"].get("LoggingConfig").is_none(),
                "{name} logs elsewhere"
            );
        }
    }
}

/// Every binary runs the route table's function of its own name, so a Lambda function, the
/// local server and the event tests serve a route with the same handler and the same error
/// format (a 503 for a request out of time is a page on a browser route in all of them). The
/// constant's name is the function's (`SESAMI_WEBHOOKS` for `sesami-webhooks`; the common
/// crate's own test holds each constant's `name` to its identifier).
#[test]
fn every_binary_runs_its_routes_function() {
    for route in routes::all() {
        let name = route.function_name();
        let source = read(&format!("functions/{name}.rs"));
        let constant = name.to_ascii_uppercase().replace('-', "_");
        let call = format!("gatehouse::lambda::run(&gatehouse::routes::{constant})");
        assert!(
            source.contains(&call),
            "{} {}: functions/{name}.rs must call {call}",
            route.method,
            route.path,
        );
        assert_eq!(
            source.matches("gatehouse::lambda::run(").count(),
            1,
            "{name}"
        );
    }
}

/// The README's "Where is…" table answers each question with one path, and each path exists:
/// a newcomer following it lands on the file.
#[test]
fn the_readmes_where_is_table_points_at_files_that_exist() {
    let readme = read("README.md");
    let table = readme
        .split("### Where is")
        .nth(1)
        .expect("README.md has a \"Where is\" table");
    let rows: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(rows.len() >= 5, "five questions at least: {rows:?}");
    for row in rows {
        let answer = row.split('|').nth(2).unwrap_or_default();
        let path = answer.split('`').nth(1).unwrap_or_default();
        assert!(!path.is_empty(), "no path in {row:?}");
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path);
        assert!(full.exists(), "{path} (README \"Where is\") does not exist");
    }
}

/// The app's back-end routes (`/v1/*`, and MoMo's request to pay) are IAM-authorized on API
/// Gateway: the event that declares each names `Auth: Authorizer: AWS_IAM`, and no other does.
#[test]
fn back_end_routes_are_iam_authorized() {
    let text = read("template.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let mut iam = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(p) = line.trim().strip_prefix("Path:") {
            let rest = &lines[i + 1..(i + 5).min(lines.len())];
            if rest.iter().any(|l| l.trim() == "Authorizer: AWS_IAM") {
                iam.insert(p.trim().to_owned());
            }
        }
    }
    let expected: BTreeSet<String> = routes::all()
        .iter()
        .map(|r| r.path)
        .filter(|p| p.starts_with("/v1/"))
        .chain(["/momo/requesttopay"])
        .map(str::to_owned)
        .collect();
    assert!(expected.contains("/v1/connections"), "{expected:?}");
    assert_eq!(iam, expected);
    for route in routes::all() {
        if route.path.starts_with("/v1/") {
            assert!(
                iam.contains(route.path),
                "{} is not IAM-authorized",
                route.path
            );
        }
    }
}

/// Every alarm on a Gatehouse metric watches one the code emits (`gatehouse::metrics::names`),
/// on a dimension set every line of it declares (the total, or one dimension alone); the alarms
/// cover what docs/operations.md says they do; each notifies `AlarmTopicArn` only when it is
/// set; the dashboard names only metrics the code emits; tracing is the `Tracing` parameter's.
#[test]
fn alarms_and_the_dashboard_watch_metrics_the_code_emits() {
    use gatehouse::metrics::{NAMESPACE, names};
    let t = template();
    let resources = t["Resources"].as_object().unwrap();
    let mut watched = BTreeSet::new();
    for (name, resource) in resources {
        if resource["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        let p = &resource["Properties"];
        let metric = p["MetricName"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: one metric, by name"));
        let namespace = p["Namespace"].as_str().unwrap();
        if namespace == NAMESPACE {
            assert!(
                names::ALL.contains(&metric),
                "{name} watches {metric}, which the code does not emit"
            );
            let dims = p["Dimensions"].as_array().map_or(0, Vec::len);
            assert!(dims <= 1, "{name}: a set the lines do not declare");
        }
        watched.insert(format!("{namespace}/{metric}"));
        for actions in ["AlarmActions", "OKActions"] {
            assert_eq!(
                p[actions],
                serde_json::json!({"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}],
                                   {"Ref": "AWS::NoValue"}]}),
                "{name}: {actions}"
            );
        }
        assert_eq!(p["TreatMissingData"], "notBreaching", "{name}");
    }
    for metric in [
        "Gatehouse/RefreshFailed",
        "Gatehouse/WebhookRefused",
        "Gatehouse/Responses",
        "Gatehouse/MomoPendingBacklog",
        "AWS/ApiGateway/5xx",
        "AWS/SQS/ApproximateNumberOfMessagesVisible",
    ] {
        assert!(watched.contains(metric), "no alarm on {metric}");
    }
    assert_eq!(
        t["Conditions"]["HasAlarmTopic"],
        serde_json::json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]})
    );
    assert_eq!(t["Parameters"]["AlarmTopicArn"]["Default"], "");

    let dashboards: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Dashboard")
        .collect();
    assert_eq!(dashboards.len(), 1, "one dashboard for the stack");
    let body = dashboards[0]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("the dashboard's body is one !Sub string");
    // Its JSON, once CloudFormation has substituted `${...}`.
    let mut substituted = String::new();
    let mut rest = body;
    while let Some(at) = rest.find("${") {
        substituted.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("a closed ${...}") + at;
        substituted.push('X');
        rest = &rest[end + 1..];
    }
    substituted.push_str(rest);
    let json: Value = serde_json::from_str(&substituted).expect("the dashboard body is JSON");
    let mut shown = BTreeSet::new();
    for widget in json["widgets"].as_array().unwrap() {
        for row in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for item in row.as_array().unwrap() {
                if let Some(expression) = item["expression"].as_str() {
                    for part in expression.split("MetricName=\"").skip(1) {
                        let metric = part.split('"').next().unwrap();
                        if expression.contains(&format!("{{{NAMESPACE},")) {
                            shown.insert(metric.to_owned());
                        }
                    }
                }
            }
            if row[0] == NAMESPACE {
                shown.insert(row[1].as_str().unwrap().to_owned());
            }
        }
    }
    for metric in &shown {
        assert!(
            names::ALL.contains(&metric.as_str()),
            "the dashboard shows {metric}, which the code does not emit"
        );
    }
    for metric in names::ALL {
        assert!(
            shown.contains(metric),
            "the dashboard does not show {metric}"
        );
    }

    assert_eq!(
        t["Globals"]["Function"]["Tracing"],
        serde_json::json!({"Ref": "Tracing"})
    );
    assert_eq!(
        t["Parameters"]["Tracing"]["AllowedValues"],
        serde_json::json!(["Active", "PassThrough"])
    );
}
