//! `deploy/portcullis.example.toml` documents every key, and parses.

use portcullis_web::settings::{Config, Settings};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/portcullis.example.toml"
);

#[test]
fn the_example_configuration_is_valid() {
    let settings = Settings::load(Some(std::path::Path::new(EXAMPLE))).expect("the example parses");
    Config::from_settings(&settings).expect("the example is valid");
}

#[test]
fn every_key_is_documented() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let defaults = serde_json::to_value(Settings::default()).unwrap();
    let mut missing = Vec::new();
    for (section, keys) in defaults.as_object().unwrap() {
        let header = format!("[{section}]");
        let Some(start) = text.find(&header) else {
            missing.push(header);
            continue;
        };
        let body = &text[start + header.len()..];
        let body = &body[..body.find("\n[").unwrap_or(body.len())];
        for key in keys.as_object().unwrap().keys() {
            let documented = body.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
            });
            if !documented {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented in deploy/portcullis.example.toml: {missing:?}"
    );
}
