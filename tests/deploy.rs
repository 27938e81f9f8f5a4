//! Checks on the deployment files under `deploy/`.
//!
//! * Every Kubernetes manifest passes `kubernetes-validate --strict`
//!   (installed into `.venv` by `make setup`).
//! * The manifests, the systemd unit and the Containerfile agree with the
//!   server: ports 5050 (HTTP), 10200 (Wyoming) and 59125 (MaryTTS),
//!   probes on `/health`,
//!   stop timeouts longer than the drain grace.
//!
//! YAML is read as text (no YAML parser among the dependencies), so the checks
//! below look at `key: value` lines and indentation only.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// The server's default port (PIPER_PORT unset).
const SERVER_DEFAULT_PORT: u16 = 5050;
/// The server's default Wyoming port (PIPER_WYOMING_PORT unset).
const WYOMING_DEFAULT_PORT: u16 = 10200;
/// The port the deploy files give MaryTTS's API (PIPER_MARYTTS_PORT),
/// MaryTTS's own.
const MARYTTS_PORT: u16 = 59125;
/// The server's default drain grace after SIGTERM (PIPER_SHUTDOWN_GRACE unset).
const SERVER_DEFAULT_GRACE_SECS: u64 = 30;
/// How long the server gives its engine processes after SIGTERM before SIGKILL.
const ENGINE_STOP_SECS: u64 = 2;
/// Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.37.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Value of a YAML `key: value` line, without comment and quotes.
fn yaml_value(line: &str) -> Option<(&str, String)> {
    let line = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    let trimmed = line.trim().trim_start_matches("- ");
    let (key, value) = trimmed.split_once(':')?;
    let value = value
        .trim()
        .trim_matches('"')
        .trim_matches('\'')
        .to_string();
    Some((key.trim(), value))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Lines of the block opened by the first line whose key is `key`
/// (the lines indented deeper than it, up to the next line that is not).
fn yaml_blocks<'a>(text: &'a str, key: &str) -> Vec<Vec<&'a str>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let Some((k, v)) = yaml_value(line) else {
            continue;
        };
        if k != key || !v.is_empty() {
            continue;
        }
        let base = indent(line);
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .copied()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .take_while(|l| indent(l) > base)
            .collect();
        blocks.push(block);
    }
    blocks
}

/// All values of `key` anywhere in `lines` (comments skipped).
fn values_of(lines: &[&str], key: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| yaml_value(l))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

fn single_value(text: &str, key: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let values = values_of(&lines, key);
    assert_eq!(
        values.len(),
        1,
        "expected exactly one `{key}:` line, found {values:?}"
    );
    values.into_iter().next().unwrap()
}

/// Value of the env var `name` in the Deployment's `env:` list, if set.
fn deployment_env(text: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| yaml_value(l).is_some_and(|(k, v)| k == "name" && v == name))?;
    yaml_value(lines.get(at + 1)?)
        .filter(|(k, _)| *k == "value")
        .map(|(_, v)| v)
}

/// Seconds from a systemd time span such as `45`, `45s`, `1min`, `1min 30s`.
fn systemd_seconds(span: &str) -> u64 {
    let mut total = 0;
    for part in span.split_whitespace() {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        let unit = &part[digits.len()..];
        let n: u64 = digits
            .parse()
            .unwrap_or_else(|_| panic!("bad time span {span:?}"));
        total += match unit {
            "" | "s" | "sec" => n,
            "m" | "min" => n * 60,
            _ => panic!("unexpected unit in time span {span:?}"),
        };
    }
    total
}

/// `Key=value` settings of a systemd unit (last one wins, as in systemd for scalars).
fn unit_setting(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .next_back()
}

/// `Environment=NAME=value` of a systemd unit.
fn unit_env(unit: &str, name: &str) -> Option<String> {
    unit.lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(|l| l.split_whitespace())
        .map(|kv| kv.trim_matches('"'))
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .next_back()
}

/// Containerfile instructions with `\` continuations joined.
fn containerfile_instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(t);
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn kubernetes_manifests() -> Vec<PathBuf> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .filter(|p| p.file_stem().and_then(|s| s.to_str()) != Some("kustomization"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let validator = root().join(".venv/bin/kubernetes-validate");
    assert!(
        validator.is_file(),
        "{} is missing: run `make setup` (it installs kubernetes-validate into .venv)",
        validator.display()
    );
    for file in kubernetes_manifests() {
        let out = Command::new(&validator)
            .arg("--strict")
            .args(["--kubernetes-version", KUBERNETES_VERSION])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", validator.display()));
        assert!(
            out.status.success(),
            "kubernetes-validate --strict rejected {} ({}):\n{}{}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    for file in kubernetes_manifests() {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            kustomization
                .lines()
                .any(|l| l.trim() == format!("- {name}")),
            "kustomization.yaml does not list {name}"
        );
    }
}

#[test]
fn server_default_port_is_the_deployed_port() {
    // The ports the files below deploy must be the server's defaults.
    for port in [SERVER_DEFAULT_PORT, WYOMING_DEFAULT_PORT, MARYTTS_PORT] {
        let mut found = false;
        let mut stack = vec![root().join("src")];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    found |= fs::read_to_string(&path)
                        .unwrap()
                        .contains(&port.to_string());
                }
            }
        }
        assert!(
            found,
            "the server sources no longer mention port {port}: update deploy/ and this test"
        );
    }
}

#[test]
fn deployment_probes_ports_and_grace() {
    let text = read("deploy/kubernetes/deployment.yaml");
    let port = SERVER_DEFAULT_PORT.to_string();

    // Two container ports, the server's, named http and wyoming.
    let ports_blocks = yaml_blocks(&text, "ports");
    assert_eq!(
        ports_blocks.len(),
        1,
        "expected one `ports:` list in the Deployment"
    );
    let wyoming = WYOMING_DEFAULT_PORT.to_string();
    let marytts = MARYTTS_PORT.to_string();
    assert_eq!(
        values_of(&ports_blocks[0], "containerPort"),
        vec![port.clone(), wyoming.clone(), marytts.clone()]
    );
    assert_eq!(
        values_of(&ports_blocks[0], "name"),
        vec![
            "http".to_string(),
            "wyoming".to_string(),
            "marytts".to_string()
        ]
    );
    assert_eq!(
        deployment_env(&text, "PIPER_MARYTTS_PORT"),
        Some(marytts),
        "PIPER_MARYTTS_PORT differs from the container port"
    );
    if let Some(p) = deployment_env(&text, "PIPER_PORT") {
        assert_eq!(p, port, "PIPER_PORT differs from the container port");
    }
    if let Some(p) = deployment_env(&text, "PIPER_WYOMING_PORT") {
        assert_eq!(
            p, wyoming,
            "PIPER_WYOMING_PORT differs from the container port"
        );
    }
    assert_eq!(
        deployment_env(&text, "PIPER_HOST").as_deref(),
        Some("0.0.0.0"),
        "PIPER_HOST must be 0.0.0.0 in a pod"
    );

    // Prometheus scrapes the same port.
    assert_eq!(single_value(&text, "prometheus.io/port"), port);
    assert_eq!(single_value(&text, "prometheus.io/path"), "/metrics");

    // Probes: readiness and liveness exist, all on /health via the http port.
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(yaml_blocks(&text, probe).len(), 1, "expected one {probe}");
    }
    let mut probes = 0;
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        for block in yaml_blocks(&text, probe) {
            probes += 1;
            assert_eq!(
                values_of(&block, "path"),
                vec!["/health".to_string()],
                "{probe} path"
            );
            let probe_port = values_of(&block, "port");
            assert!(
                probe_port == vec!["http".to_string()] || probe_port == vec![port.clone()],
                "{probe} port is {probe_port:?}"
            );
        }
    }
    assert!(probes >= 2);
    // Readiness must react to the 503 of a draining pod quickly.
    let readiness = &yaml_blocks(&text, "readinessProbe")[0];
    let failure: u64 = values_of(readiness, "failureThreshold")
        .first()
        .map_or(3, |v| v.parse().unwrap());
    assert!(
        failure <= 2,
        "readiness failureThreshold {failure} is too slow to notice draining"
    );

    // The kubelet must wait longer than preStop + drain grace + engine stop.
    let grace: u64 = single_value(&text, "terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    let drain: u64 = deployment_env(&text, "PIPER_SHUTDOWN_GRACE")
        .map_or(SERVER_DEFAULT_GRACE_SECS, |v| v.parse().unwrap());
    let pre_stop: u64 = yaml_blocks(&text, "preStop")
        .first()
        .and_then(|block| block.iter().find(|l| l.contains("sleep")))
        .map(|l| {
            l.chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap()
        })
        .unwrap_or(0);
    assert!(
        grace > 30,
        "terminationGracePeriodSeconds {grace} must exceed 30"
    );
    assert!(
        grace > pre_stop + drain + ENGINE_STOP_SECS,
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain} + engine stop {ENGINE_STOP_SECS}"
    );
}

#[test]
fn service_targets_the_http_and_wyoming_ports() {
    let text = read("deploy/kubernetes/service.yaml");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        values_of(&lines, "port"),
        vec![
            SERVER_DEFAULT_PORT.to_string(),
            WYOMING_DEFAULT_PORT.to_string(),
            MARYTTS_PORT.to_string()
        ]
    );
    assert_eq!(
        values_of(&lines, "targetPort"),
        vec!["http", "wyoming", "marytts"]
    );
}

#[test]
fn systemd_unit_stops_cleanly_and_is_hardened() {
    let unit = read("deploy/piperd.service");
    assert_eq!(unit_setting(&unit, "KillMode").as_deref(), Some("mixed"));
    let timeout =
        systemd_seconds(&unit_setting(&unit, "TimeoutStopSec").expect("TimeoutStopSec is not set"));
    let drain: u64 = unit_env(&unit, "PIPER_SHUTDOWN_GRACE")
        .map_or(SERVER_DEFAULT_GRACE_SECS, |v| v.parse().unwrap());
    assert!(timeout > 30, "TimeoutStopSec {timeout} must exceed 30");
    assert!(
        timeout > drain + ENGINE_STOP_SECS,
        "TimeoutStopSec {timeout} <= drain {drain} + engine stop {ENGINE_STOP_SECS}"
    );
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("Restart", "on-failure"),
        ("ExecStart", "/usr/local/bin/piperd"),
        ("WorkingDirectory", "/opt/piperd"),
    ] {
        assert_eq!(unit_setting(&unit, key).as_deref(), Some(want), "{key}");
    }
    if let Some(p) = unit_env(&unit, "PIPER_PORT") {
        assert_eq!(p, SERVER_DEFAULT_PORT.to_string());
    }
    if let Some(p) = unit_env(&unit, "PIPER_WYOMING_PORT") {
        assert_eq!(p, WYOMING_DEFAULT_PORT.to_string());
    }
    assert_eq!(
        unit_env(&unit, "PIPER_MARYTTS_PORT"),
        Some(MARYTTS_PORT.to_string())
    );
}

#[test]
fn containerfile_exposes_the_port_and_checks_health() {
    let instructions = containerfile_instructions(&read("deploy/Containerfile"));
    let with = |word: &str| -> Vec<&String> {
        instructions
            .iter()
            .filter(|i| {
                i.split_whitespace()
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case(word))
            })
            .collect()
    };

    let expose: Vec<&str> = with("EXPOSE")
        .iter()
        .flat_map(|i| i.split_whitespace().skip(1))
        .collect();
    assert_eq!(
        expose
            .iter()
            .map(|p| p.trim_end_matches("/tcp"))
            .collect::<Vec<_>>(),
        vec![
            SERVER_DEFAULT_PORT.to_string(),
            WYOMING_DEFAULT_PORT.to_string(),
            MARYTTS_PORT.to_string()
        ],
        "EXPOSE"
    );
    assert!(
        with("ENV")
            .iter()
            .any(|i| i.contains(&format!("PIPER_MARYTTS_PORT={MARYTTS_PORT}"))),
        "the image must serve MaryTTS on its port"
    );

    let health = with("HEALTHCHECK");
    assert_eq!(health.len(), 1, "expected one HEALTHCHECK");
    assert!(
        health[0].contains("/health"),
        "HEALTHCHECK does not hit /health: {}",
        health[0]
    );
    assert!(
        !health[0].contains("curl"),
        "HEALTHCHECK must not need curl (not in the image)"
    );

    let env = with("ENV")
        .iter()
        .map(|i| i.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        env.contains("PIPER_HOST=0.0.0.0"),
        "the image must set PIPER_HOST=0.0.0.0"
    );
    assert!(
        with("STOPSIGNAL").iter().any(|i| i.contains("SIGTERM")),
        "STOPSIGNAL SIGTERM"
    );
}
