//! template.yaml and the code agree: the local server's route table is exactly the template's
//! routes, each served by the function whose binary the table names, and every binary in
//! functions/ is deployed.

use gatehouse_local::routes;
use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)).unwrap()
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
                r.function.to_owned(),
            )
        })
        .collect();
    assert_eq!(local, template);
}

/// Binaries that operators run by hand, not functions behind routes.
const OPERATOR_COMMANDS: &[&str] = &["momo-provision"];

#[test]
fn every_function_binary_is_deployed() {
    let deployed: BTreeSet<String> = template_routes().into_iter().map(|(_, _, b)| b).collect();
    let built: BTreeSet<String> = read("functions/Cargo.toml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_owned())
        .filter(|n| n != "gatehouse-functions" && !OPERATOR_COMMANDS.contains(&n.as_str()))
        .collect();
    assert_eq!(built, deployed);
}

/// The README's first command, `cargo run -p gatehouse-local`, needs a default binary now that
/// the crate has several.
#[test]
fn the_local_server_is_the_default_run() {
    let manifest = read("tests/Cargo.toml");
    assert!(
        manifest.contains("default-run = \"gatehouse-local\""),
        "tests/Cargo.toml must say default-run = \"gatehouse-local\""
    );
    assert!(read("README.md").contains("cargo run -p gatehouse-local "));
}

/// A request out of time is answered by the adapter, not its handler, in the format the binary
/// passes to `gatehouse::lambda::run`: the local server's table must say the same, so that a 503
/// for a browser route is a page in both.
#[test]
fn every_function_runs_with_its_routes_format() {
    for route in routes::all() {
        let source = read(&format!("functions/{}.rs", route.function));
        let formats: Vec<&str> = ["Format::Html", "Format::Json"]
            .into_iter()
            .filter(|f| source.contains(f))
            .collect();
        assert_eq!(
            formats,
            vec![format!("Format::{:?}", route.format)],
            "{} {}: functions/{}.rs",
            route.method,
            route.path,
            route.function
        );
    }
}
