//! The admin API's OpenAPI document: OpenAPI 3.1, true to the server's routes and to the route
//! matrix of `admin.rs`, and the same as `docs/openapi.json`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{CLIENT, admin, call, routes};
use crate::helpers::{TestApp, spawn_app};

/// Where the API lives; the document's paths start with it, `call`'s do not.
const API: &str = "/admin/api";

/// The document's own path, under `API`: the one operation that needs no credentials.
const DOCUMENT: &str = "/openapi.json";

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

const REFRESH: &str = "refresh it with `UPDATE_OPENAPI=1 cargo test -p portcullis-web --test it \
                       openapi` and commit docs/openapi.json";

fn kept_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
}

/// The document as the server serves it, checked to be served as it should.
async fn served(app: &TestApp) -> Value {
    let res = app
        .http
        .get(app.url(&format!("{API}{DOCUMENT}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "served without credentials");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("cache-control"), "public, max-age=3600");
    res.json().await.unwrap()
}

/// A documented operation: its method, its path template under `API`, and whether it takes a
/// body.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Operation {
    method: String,
    path: String,
    body: bool,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn operations(doc: &Value) -> Vec<Operation> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        let path = path
            .strip_prefix(API)
            .unwrap_or_else(|| panic!("{path} is not under {API}"));
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            assert!(
                METHODS.iter().any(|m| m.as_str() == method),
                "{method} {path}: not a method the API uses"
            );
            out.push(Operation {
                method,
                path: path.to_owned(),
                body: op.get("requestBody").is_some(),
            });
        }
    }
    out
}

/// A concrete path for a template: every `{parameter}` becomes an id that names nothing.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| if is_parameter(s) { CLIENT } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_parameter(segment: &str) -> bool {
    segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}')
}

/// Whether `path` is an instance of `template`: a `{parameter}` matches one segment.
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (is_parameter(t) && !p.is_empty()) || t == p)
}

/// Every `$ref` in `value`.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(r) if k == "$ref" => out.push(r.clone()),
                    _ => references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_kept_in_docs() {
    let app = spawn_app().await;
    let doc = served(&app).await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "OpenAPI 3.1, not {version:?}");
    assert_eq!(doc["info"]["title"], "Portcullis admin API");

    // Every operation but the document names its caller, and has an id of its own.
    let mut ids = BTreeSet::new();
    for op in operations(&doc) {
        let entry = &doc["paths"][format!("{API}{}", op.path)][op.method.to_ascii_lowercase()];
        let id = entry["operationId"].as_str().unwrap_or_default().to_owned();
        assert!(!id.is_empty() && ids.insert(id.clone()), "{op}: id {id:?}");
        let security = entry.get("security");
        if op.path == DOCUMENT {
            assert!(security.is_none(), "{op} needs no credentials");
        } else {
            assert_eq!(
                security,
                Some(&json!([{ "bearer": [] }, { "session": [] }])),
                "{op}"
            );
        }
    }

    // Every reference resolves, and every path parameter is described.
    let mut refs = Vec::new();
    references(&doc, &mut refs);
    for r in &refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r}: not local"));
        assert!(doc.pointer(pointer).is_some(), "{r} names nothing");
    }
    for op in operations(&doc) {
        let entry = &doc["paths"][format!("{API}{}", op.path)][op.method.to_ascii_lowercase()];
        let described: BTreeSet<&str> = entry["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        let named: BTreeSet<&str> = op
            .path
            .split('/')
            .filter(|s| is_parameter(s))
            .map(|s| &s[1..s.len() - 1])
            .collect();
        assert_eq!(described, named, "{op}: path parameters");
    }

    let path = kept_path();
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        let mut text = serde_json::to_string_pretty(&doc).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        return;
    }
    let kept = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read ({e}): {REFRESH}", path.display()));
    let kept: Value = serde_json::from_str(&kept)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {REFRESH}", path.display()));
    assert!(
        kept == doc,
        "docs/openapi.json differs from the document the server serves: {REFRESH}"
    );
}

#[tokio::test]
async fn every_documented_operation_exists_and_no_other_method_does() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let doc = served(&app).await;
    let ops = operations(&doc);
    let mut wrong = Vec::new();

    // Without credentials, each documented operation is refused by the gate, so the route and
    // method exist: a 404 or 405 would mean the document names what the server lacks.
    for op in &ops {
        let method = Method::from_bytes(op.method.as_bytes()).unwrap();
        let body = op.body.then(|| json!({}));
        let (status, res) = call(&app, None, method, &concrete(&op.path), body).await;
        let expected = if op.path == DOCUMENT {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        if status != expected {
            wrong.push(format!("{op}: {status}, not {expected}: {res}"));
        }
    }

    // With credentials, a method the document does not name for a path is not there.
    let paths: BTreeSet<&str> = ops.iter().map(|op| op.path.as_str()).collect();
    for path in paths {
        let documented: BTreeSet<&str> = ops
            .iter()
            .filter(|op| op.path == path)
            .map(|op| op.method.as_str())
            .collect();
        for method in METHODS.iter().filter(|m| !documented.contains(m.as_str())) {
            let (status, res) = call(
                &app,
                Some(&root.key_rw),
                method.clone(),
                &concrete(path),
                None,
            )
            .await;
            if status != StatusCode::METHOD_NOT_ALLOWED {
                wrong.push(format!(
                    "{method} {path}: {status}, not 405 (undocumented?): {res}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the document and the server disagree:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn the_document_and_the_route_matrix_agree() {
    let app = spawn_app().await;
    let doc = served(&app).await;
    let ops = operations(&doc);
    let matrix = routes(
        "0190f0f0-0000-7000-8000-00000000000a",
        "0190f0f0-0000-7000-8000-00000000000b",
    );

    let undocumented: Vec<String> = matrix
        .iter()
        .filter(|(method, path, _)| {
            !ops.iter()
                .any(|op| op.method == method.as_str() && matches(&op.path, path))
        })
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect();
    let untested: Vec<String> = ops
        .iter()
        .filter(|op| op.path != DOCUMENT)
        .filter(|op| {
            !matrix
                .iter()
                .any(|(method, path, _)| op.method == method.as_str() && matches(&op.path, path))
        })
        .map(ToString::to_string)
        .collect();
    assert!(
        undocumented.is_empty() && untested.is_empty(),
        "routes() in tests/it/admin.rs and the OpenAPI document disagree.\n\
         In routes() but not documented:\n  {}\n\
         Documented but not in routes():\n  {}",
        undocumented.join("\n  "),
        untested.join("\n  "),
    );
}
