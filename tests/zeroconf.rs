//! Home Assistant discovers the Wyoming port over mDNS
//! (`PIPER_WYOMING_ZEROCONF`), seen with the `zeroconf` package it uses.
//!
//! The server and the browser run in a network namespace of their own
//! (`unshare -n`, so the test needs root, as CI has), whose only interface is
//! loopback: no multicast packet leaves it.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn the_wyoming_port_is_announced_and_withdrawn() {
    let dir = voices(&[VOICE]);
    let output = std::process::Command::new("unshare")
        .arg("-n")
        .arg(python())
        .arg(root().join("tests/zeroconf_client.py"))
        .arg(env!("CARGO_BIN_EXE_piperd"))
        .arg(dir.path())
        .arg("Living room")
        .output()
        .expect("unshare (util-linux) runs the test in a network namespace");
    assert!(
        output.status.success(),
        "the test needs root for its network namespace: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    let log = result["log"].as_str().unwrap_or_default();
    assert_eq!(result["found"], true, "not discovered: {log}");
    let name = "Living room._wyoming._tcp.local.";
    assert_eq!(
        result["services"][name],
        serde_json::json!([["127.0.0.1"], 10200]),
        "{result}"
    );
    // The announced address answers as piperd's Wyoming service.
    assert_eq!(result["programs"], serde_json::json!(["piperd"]), "{log}");
    assert_eq!(result["exit_code"], 0, "{log}");
    // Stopping says goodbye, so Home Assistant forgets it at once.
    assert_eq!(result["withdrawn"], true, "{result}");
    assert_eq!(result["removed"], serde_json::json!([name]));
}
