//! The deployment files in `deploy/`: everything that can be checked without Docker, a cluster
//! or the network. The YAML files are parsed with Python's PyYAML when it is installed (the
//! workspace has no YAML parser); `systemd-analyze verify` runs when systemd is installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use portcullis_web::settings::{Config, ENV_PREFIX, Settings};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `deploy/`, recursively, sorted.
fn deploy_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&deploy_dir(), &mut files);
    files.sort();
    files
}

fn yaml_files() -> Vec<PathBuf> {
    deploy_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect()
}

/// Every YAML file under `deploy/` parsed by PyYAML, as JSON (a list of documents per file,
/// keyed by the path relative to `deploy/`); `None` when Python or PyYAML is missing.
fn parsed_yaml() -> Option<BTreeMap<String, Vec<Value>>> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        out = {}\n\
        for path in sys.argv[1:]:\n    \
            with open(path) as f:\n        \
                out[path] = list(yaml.safe_load_all(f))\n\
        json.dump(out, sys.stdout)\n";
    let probe = Command::new("python3").args(["-c", "import yaml"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("note: python3 with PyYAML is not installed: the YAML files were not parsed");
        return None;
    }
    let files = yaml_files();
    let output = Command::new("python3")
        .args(["-c", SCRIPT])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "a YAML file under deploy/ does not parse:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let by_path: BTreeMap<String, Vec<Value>> = serde_json::from_slice(&output.stdout).unwrap();
    let root = deploy_dir();
    Some(
        by_path
            .into_iter()
            .map(|(path, docs)| {
                let relative = Path::new(&path).strip_prefix(&root).unwrap();
                (relative.to_string_lossy().into_owned(), docs)
            })
            .collect(),
    )
}

/// The `PORTCULLIS__…` names in `text`.
fn env_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(ENV_PREFIX) {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// What `name` would set, as `section.key`, or why it sets nothing.
fn setting_of(name: &str, defaults: &Value) -> Result<String, String> {
    let path: Vec<String> = name
        .strip_prefix(ENV_PREFIX)
        .unwrap_or(name)
        .split("__")
        .map(str::to_lowercase)
        .collect();
    let [section, key, deeper @ ..] = path.as_slice() else {
        return Err("names no section.key".into());
    };
    let value = defaults
        .get(section)
        .ok_or_else(|| format!("there is no section [{section}]"))?
        .get(key)
        .ok_or_else(|| format!("there is no key {key} in [{section}]"))?;
    if !deeper.is_empty() && !value.is_object() {
        return Err(format!("{section}.{key} is not a table"));
    }
    Ok(format!("{section}.{key}"))
}

/// Settings as the server loads them from `toml` and environment variables `env`, without
/// touching this process's environment: each variable is parsed and placed as figment's `Env`
/// provider would (`PORTCULLIS__A__B` → `a.b`).
fn load(toml: Option<&str>, env: &[(String, String)]) -> Result<Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(text) = toml {
        let file = dir.path().join("portcullis.toml");
        std::fs::write(&file, text).unwrap();
        // The real loader must accept the file on its own.
        Settings::load(Some(&file)).map_err(|e| e.to_string())?;
        figment = figment.merge(Toml::file_exact(&file));
    }
    for (name, raw) in env {
        let key = name
            .strip_prefix(ENV_PREFIX)
            .unwrap()
            .to_lowercase()
            .replace("__", ".");
        let value: figment::value::Value = raw.parse().unwrap();
        figment = figment.merge((key, value));
    }
    figment.extract().map_err(|e| e.to_string())
}

fn test_master_key() -> String {
    portcullis_core::keys::MasterKey::generate(&portcullis_core::OsRandom)
        .unwrap()
        .to_base64()
}

/// Test values for the secrets the deployment files leave to the operator.
fn test_secret(name: &str) -> String {
    match name {
        "PORTCULLIS__KEYS__MASTER_KEY" | "PORTCULLIS_MASTER_KEY" => test_master_key(),
        "PORTCULLIS__DATABASE__URL" => "postgres://portcullis:pw@postgres:5432/portcullis".into(),
        "PORTCULLIS__BOOTSTRAP__ADMIN_PASSWORD" | "PORTCULLIS_ADMIN_PASSWORD" => {
            "correct horse battery staple".into()
        }
        "PORTCULLIS__RATE_LIMIT__REDIS_URL" => "redis://redis:6379".into(),
        "POSTGRES_PASSWORD" => "0123456789abcdef".into(),
        other => panic!("no test value for the secret {other}"),
    }
}

/// The block scalar `key: |` of a YAML file, as YAML reads it (clipped: one final newline).
fn block_scalar(yaml: &str, key: &str) -> String {
    let header = format!("{key}: |");
    let lines = yaml.lines().skip_while(|l| l.trim() != header).skip(1);
    let mut body: Vec<&str> = Vec::new();
    let mut indent = None;
    for line in lines {
        let this = line.len() - line.trim_start().len();
        if line.trim().is_empty() {
            body.push("");
            continue;
        }
        let block = *indent.get_or_insert(this);
        if this < block {
            break;
        }
        body.push(&line[block..]);
    }
    while body.last() == Some(&"") {
        body.pop();
    }
    assert!(!body.is_empty(), "no `{header}` block");
    format!("{}\n", body.join("\n"))
}

/// The `KEY: value` entries of the mapping `key:` (two spaces deeper), quotes and comments
/// removed: enough for the flat mappings of these files.
fn flat_mapping(yaml: &str, key: &str) -> Vec<(String, String)> {
    let start = yaml
        .lines()
        .position(|l| l.trim() == format!("{key}:"))
        .unwrap_or_else(|| panic!("no `{key}:` mapping"));
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = lines[start].len() - lines[start].trim_start().len();
    let mut entries = Vec::new();
    for line in &lines[start + 1..] {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.len() - line.trim_start().len() <= indent {
            break;
        }
        let (k, v) = trimmed.split_once(": ").unwrap();
        let v = v.trim();
        let v = if let Some(quoted) = v.strip_prefix('"') {
            &quoted[..quoted.find('"').unwrap()]
        } else if let Some(quoted) = v.strip_prefix('\'') {
            &quoted[..quoted.find('\'').unwrap()]
        } else {
            v.split(" #").next().unwrap().trim()
        };
        entries.push((k.to_owned(), v.to_owned()));
    }
    entries
}

/// Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}`, with `vars` as the
/// environment.
fn interpolate(raw: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let inner_end = rest[at..].find('}').unwrap() + at;
        let inner = &rest[at + 2..inner_end];
        let name_end = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let (name, operator) = inner.split_at(name_end);
        let value = if let Some(default) = operator.strip_prefix(":-") {
            vars(name).unwrap_or_else(|| default.to_owned())
        } else if operator.starts_with(":?") {
            vars(name).unwrap_or_else(|| panic!("{name} is required and has no test value"))
        } else {
            assert!(operator.is_empty(), "${{{inner}}}");
            vars(name).unwrap_or_default()
        };
        out.push_str(&value);
        rest = &rest[inner_end + 1..];
    }
    out.push_str(rest);
    out
}

/// The number after `prefix` on the first line that has it.
fn number_after(text: &str, prefix: &str) -> u64 {
    let at = text.find(prefix).unwrap_or_else(|| panic!("no {prefix:?}")) + prefix.len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| *c == ' ' || *c == '"')
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?}"))
}

#[test]
fn every_yaml_file_parses() {
    assert!(yaml_files().len() >= 8, "{:?}", yaml_files());
    if let Some(parsed) = parsed_yaml() {
        for (path, docs) in &parsed {
            assert!(
                !docs.is_empty() && docs.iter().all(Value::is_object),
                "{path}: not a mapping"
            );
        }
        // What the other tests read from the text is what YAML reads.
        let configmap = &parsed["k8s/configmap.yaml"][0];
        assert_eq!(
            configmap["data"]["portcullis.toml"],
            block_scalar(&read("k8s/configmap.yaml"), "portcullis.toml")
        );
        let secret = &parsed["k8s/secret.yaml"][0]["stringData"];
        for (name, value) in flat_mapping(&read("k8s/secret.yaml"), "stringData") {
            assert_eq!(secret[&name], value, "{name}");
        }
        let deployment = &parsed["k8s/deployment.yaml"][0]["spec"]["template"]["spec"];
        let container = &deployment["containers"][0];
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(deployment["securityContext"]["runAsNonRoot"], true);
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        let compose = &parsed["compose.yaml"][0]["services"];
        for node in ["migrate", "node1", "node2"] {
            assert!(
                compose[node]["environment"]["PORTCULLIS__KEYS__MASTER_KEY"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("${PORTCULLIS_MASTER_KEY:?")),
                "{node} takes the master key from the environment"
            );
        }
    }
}

#[test]
fn every_environment_variable_names_a_setting() {
    let defaults = serde_json::to_value(Settings::default()).unwrap();
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    for path in deploy_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for name in env_names(&text) {
            // `PORTCULLIS__…` and the pattern `PORTCULLIS__SECTION__KEY` in prose.
            if name == ENV_PREFIX || name == "PORTCULLIS__SECTION__KEY" {
                continue;
            }
            match setting_of(&name, &defaults) {
                Ok(_) => seen.push(name),
                Err(why) => wrong.push(format!("{}: {name}: {why}", path.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    for expected in [
        "PORTCULLIS__KEYS__MASTER_KEY",
        "PORTCULLIS__DATABASE__URL",
        "PORTCULLIS__RATE_LIMIT__REDIS_URL",
        "PORTCULLIS__RATE_LIMIT__TRUSTED_PROXIES",
        "PORTCULLIS__SERVER__LISTEN",
    ] {
        assert!(seen.iter().any(|n| n == expected), "{expected} is not used");
    }
}

#[test]
fn the_kubernetes_configuration_is_accepted() {
    let toml = block_scalar(&read("k8s/configmap.yaml"), "portcullis.toml");
    let secrets = flat_mapping(&read("k8s/secret.yaml"), "stringData");
    let names: Vec<&str> = secrets.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.contains(&"PORTCULLIS__KEYS__MASTER_KEY")
            && names.contains(&"PORTCULLIS__DATABASE__URL"),
        "{names:?}"
    );
    // Without its secrets the ConfigMap alone is refused (an https issuer needs a master key).
    let bare = load(Some(&toml), &[]).unwrap();
    assert!(Config::from_settings(&bare).is_err());

    let filled: Vec<(String, String)> = secrets
        .iter()
        .map(|(name, _)| (name.clone(), test_secret(name)))
        .collect();
    let settings = load(Some(&toml), &filled).unwrap();
    let config = Config::from_settings(&settings).unwrap();
    assert!(!config.listen.ip().is_loopback());
    assert!(config.issuer.as_ref().is_some_and(|i| i.is_https()));
    assert!(!config.rate_limits.trusted_proxies.ranges.is_empty());
    assert!(config.rate_limits.redis_url.is_some());

    // Each placeholder left in the Secret stops the server, naming its setting.
    let defaults = serde_json::to_value(Settings::default()).unwrap();
    for (name, placeholder) in &secrets {
        let mut env = filled.clone();
        env.retain(|(n, _)| n != name);
        env.push((name.clone(), placeholder.clone()));
        let key = setting_of(name, &defaults).unwrap();
        let refused = load(Some(&toml), &env)
            .and_then(|s| Config::from_settings(&s).map_err(|e| e.to_string()))
            .err()
            .unwrap_or_else(|| panic!("the placeholder of {name} is accepted"));
        assert!(refused.contains(&key), "{name}: {refused}");
    }

    // Pods are given longer to stop than the server takes.
    let deployment = read("k8s/deployment.yaml");
    let grace = number_after(&deployment, "terminationGracePeriodSeconds:");
    let pre_stop = number_after(&deployment, "command: [\"sleep\",");
    assert!(
        grace > config.shutdown_timeout.as_secs() + pre_stop,
        "terminationGracePeriodSeconds {grace}"
    );
}

#[test]
fn the_kubernetes_manifests_are_hardened() {
    let deployment = read("k8s/deployment.yaml");
    for needle in [
        "kind: Deployment",
        "replicas: 2",
        "runAsNonRoot: true",
        "runAsUser: 10001",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "type: RuntimeDefault",
        "automountServiceAccountToken: false",
        "startupProbe:",
        "topologySpreadConstraints:",
        "name: PORTCULLIS_CONFIG",
        "secretRef:",
    ] {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks {needle}"
        );
    }
    let probe_path = |probe: &str| {
        let at = deployment
            .find(&format!("{probe}:"))
            .unwrap_or_else(|| panic!("no {probe}"));
        let path = &deployment[at..][deployment[at..].find("path:").unwrap() + 5..];
        path.lines().next().unwrap().trim().to_owned()
    };
    assert_eq!(probe_path("readinessProbe"), "/readyz");
    assert_eq!(probe_path("livenessProbe"), "/healthz");
    let limits = &deployment[deployment.find("limits:").expect("resource limits")..];
    assert!(limits.contains("cpu:") && limits.contains("memory:"));
    assert!(deployment.contains("requests:"));

    let job = read("k8s/job-migrate.yaml");
    for needle in [
        "kind: Job",
        "args: [\"migrate\"]",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
    ] {
        assert!(job.contains(needle), "job-migrate.yaml lacks {needle}");
    }
    assert!(read("k8s/pdb.yaml").contains("minAvailable: 1"));
    let service = read("k8s/service.yaml");
    assert!(service.contains("type: ClusterIP") && service.contains("port: 80"));

    // The kustomization lists every manifest, and only those; none sets a namespace.
    let kustomization = read("k8s/kustomization.yaml");
    let listed: Vec<String> = kustomization
        .lines()
        .skip_while(|l| l.trim() != "resources:")
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- ").map(str::to_owned))
        .collect();
    let mut present: Vec<String> = std::fs::read_dir(deploy_dir().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    present.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, present);
    for file in &listed {
        assert!(
            !read(&format!("k8s/{file}")).contains("namespace:"),
            "{file} sets a namespace"
        );
    }
}

#[test]
fn the_compose_configuration_is_accepted() {
    let compose = read("compose.yaml");
    let env = flat_mapping(&compose, "environment");
    let secret_vars: Vec<String> = {
        let mut names = Vec::new();
        let mut rest = compose.as_str();
        while let Some(at) = rest.find(":?") {
            let name_start = rest[..at].rfind("${").unwrap() + 2;
            names.push(rest[name_start..at].to_owned());
            rest = &rest[at + 2..];
        }
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(
        secret_vars,
        [
            "PORTCULLIS_ADMIN_PASSWORD",
            "PORTCULLIS_MASTER_KEY",
            "POSTGRES_PASSWORD"
        ]
    );
    // No secret is written in the file: each comes from the environment, required.
    for (name, value) in &env {
        if name.contains("MASTER_KEY") || name.contains("PASSWORD") || name.contains("DATABASE") {
            assert!(
                value.contains("${") && value.contains(":?"),
                "{name}: {value}"
            );
        }
    }
    // env.example names each of them.
    let example = read("env.example");
    for var in &secret_vars {
        assert!(
            example.lines().any(|l| l.starts_with(&format!("{var}="))),
            "env.example lacks {var}"
        );
    }

    let resolved: Vec<(String, String)> = env
        .iter()
        .map(|(name, value)| {
            let vars = |var: &str| {
                secret_vars
                    .iter()
                    .any(|s| s == var)
                    .then(|| test_secret(var))
            };
            (name.clone(), interpolate(value, &vars))
        })
        .collect();
    let settings = load(None, &resolved).unwrap();
    let config = Config::from_settings(&settings).unwrap();
    assert!(config.rate_limits.redis_url.is_some());

    // Forwarding headers are believed from the balancer only, which strips the client's own.
    let lb_address = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("ipv4_address: "))
        .expect("the balancer has a fixed address");
    assert_eq!(settings.rate_limit.trusted_proxies, [lb_address]);
    let haproxy = read("haproxy.cfg");
    for needle in [
        "balance roundrobin",
        "option forwardfor",
        "http-request del-header Forwarded",
        "http-request del-header X-Forwarded-For",
        "uri /readyz",
        "server node1 node1:8080",
        "server node2 node2:8080",
        "default-server check",
    ] {
        assert!(haproxy.contains(needle), "haproxy.cfg lacks {needle}");
    }
    for needle in [
        "image: postgres:16",
        "image: redis:7",
        "pg_isready",
        "redis-cli\", \"ping",
        "condition: service_completed_successfully",
        "command: [\"migrate\"]",
        "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro",
    ] {
        assert!(compose.contains(needle), "compose.yaml lacks {needle}");
    }
}

#[test]
fn the_image_runs_as_a_numeric_non_root_user() {
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let stages: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].starts_with("FROM rust:"), "{}", stages[0]);
    assert!(
        stages[1].starts_with("FROM debian:bookworm-slim"),
        "{}",
        stages[1]
    );
    let runtime = &dockerfile[dockerfile.rfind("\nFROM ").unwrap()..];
    let user = runtime
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.chars().all(|c| c.is_ascii_digit()) && uid != "0",
        "USER {user}"
    );
    assert!(runtime.contains(&format!("--uid {uid}")));
    assert!(read("k8s/deployment.yaml").contains(&format!("runAsUser: {uid}")));

    for needle in [
        "cargo build --release --locked -p portcullis-web --bin portcullis",
        "--mount=type=cache,target=/usr/local/cargo/registry",
        "--mount=type=cache,target=/src/target",
        "--no-install-recommends",
        "libssl3",
        "libsqlite3-0",
        "rm -rf /var/lib/apt/lists/*",
        "WORKDIR /var/lib/portcullis",
        "PORTCULLIS__SERVER__LISTEN=0.0.0.0:8080",
        "EXPOSE 8080",
        "ENTRYPOINT [\"/usr/local/bin/portcullis\"]",
        "CMD [\"serve\"]",
    ] {
        assert!(dockerfile.contains(needle), "the Dockerfile lacks {needle}");
    }

    // The toolchain is at least the workspace's rust-version.
    let version = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"))
            .unwrap();
    let required = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(version(image) >= version(required), "{image} < {required}");

    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dockerignore"))
            .unwrap();
    for needle in ["target/", ".git/", "data/", "node_modules/", "deploy/.env"] {
        assert!(
            ignore.lines().any(|l| l.trim() == needle),
            ".dockerignore lacks {needle}"
        );
    }
}

#[test]
fn the_systemd_unit_is_sandboxed() {
    let unit = read("portcullis.service");
    let directives: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    let has = |d: &str| directives.contains(&d);
    for d in [
        "User=portcullis",
        "StateDirectory=portcullis",
        "ConfigurationDirectory=portcullis",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "ExecStart=/usr/local/bin/portcullis serve",
        "ExecStartPre=/usr/local/bin/portcullis migrate",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(has(d), "portcullis.service lacks {d}");
    }
    assert!(
        directives
            .iter()
            .any(|d| d.starts_with("EnvironmentFile=/")),
        "secrets come from an EnvironmentFile"
    );
    let stop = number_after(&unit, "\nTimeoutStopSec=");
    assert!(
        stop > Settings::default().server.shutdown_timeout.0,
        "TimeoutStopSec={stop}"
    );

    // systemd's own reading of the unit, with ExecStart pointing at a binary that exists.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: systemd-analyze is not installed: the unit was not verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("portcullis.service");
    let binary = crate::helpers::binary();
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/portcullis", &binary.to_string_lossy()),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // systemd-analyze exits 0 on an unknown or malformed directive, but names the unit.
    let about_the_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("portcullis.service"))
        .collect();
    assert!(
        output.status.success() && about_the_unit.is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}
