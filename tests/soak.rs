//! The soak (tests/soak/driver.py) on the real binary: every front-end at
//! once through the real clients, over 3 voices on 2 engine processes, with
//! engines killed and a voice replaced while it runs. `SOAK_SECONDS` sets its
//! length: 60 in `make test`, 600 in `make soak`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const VOICES: [&str; 3] = ["soak-a", "soak-b", "soak-c"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn soak_every_front_end_with_engine_kills_and_a_replaced_voice() {
    let seconds = std::env::var("SOAK_SECONDS").unwrap_or_else(|_| "60".into());
    let dir = voices(&VOICES);
    let temp = tempfile::Builder::new()
        .prefix("piperd-soak-temp")
        .tempdir()
        .unwrap();
    let wyoming = free_port().to_string();
    // `SOAK_PIPER_LOG=info,piperd=debug` to see each request's sentences.
    let log_filter = std::env::var("SOAK_PIPER_LOG").unwrap_or_else(|_| "info".into());
    let mut server = Server::start(
        dir.path(),
        &[
            ("PIPER_WYOMING_PORT", wyoming.as_str()),
            ("PIPER_MAX_PROCESSES", "2"),
            // Every complete answer goes through a temp file, so one left
            // behind shows as a leak.
            ("PIPER_SPOOL_THRESHOLD_MB", "0"),
            ("PIPER_TEMP_DIR", temp.path().to_str().unwrap()),
            // A small cache fills during the warm-up, so it does not read as
            // growth of the server's memory afterwards.
            ("PIPER_AUDIO_CACHE_MB", "4"),
            ("PIPER_LOG", log_filter.as_str()),
        ],
    );
    let decoder = root().join("target/release/examples/soak-decode");
    assert!(
        decoder.exists(),
        "{} is missing: build with `cargo build --release --bins --examples --tests`",
        decoder.display()
    );
    let frontends = std::env::var("SOAK_FRONTENDS").unwrap_or_default();
    let mut driver = Command::new(python())
        .arg(root().join("tests/soak/driver.py"))
        .args(["--base", &server.base])
        .args(["--wyoming-port", &wyoming])
        .args(["--pid", &server.pid().to_string()])
        .args(["--voices-dir", dir.path().to_str().unwrap()])
        .args(["--temp-dir", temp.path().to_str().unwrap()])
        .args(["--voices", &VOICES.join(",")])
        .args(["--decoder", decoder.to_str().unwrap()])
        .args(["--seconds", &seconds])
        .args(if frontends.is_empty() {
            vec![]
        } else {
            vec!["--frontends", frontends.as_str()]
        })
        .stdout(Stdio::piped())
        .spawn()
        .expect("the driver starts");
    // Its lines as they come (shown live with --nocapture, as `make soak` runs it).
    let mut last = String::new();
    for line in BufReader::new(driver.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        println!("{line}");
        last = line;
    }
    let status = driver.wait().unwrap();
    // The server's log, for the losses the driver printed (by request id).
    let log_path = root().join("target/soak-server.log");
    let _ = std::fs::write(&log_path, server.log());
    println!("server log: {}", log_path.display());

    // The driver stopped the server with SIGTERM: it exits 0, engines gone.
    assert_eq!(
        server.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        server.log()
    );
    assert!(server.engines().is_empty(), "engines left");
    let (requests, rest) = last
        .strip_prefix("soak: ")
        .and_then(|l| l.split_once(" requests, "))
        .unwrap_or_else(|| panic!("the driver's last line is not its summary: {last:?}"));
    assert!(requests.parse::<u32>().unwrap() > 0, "{last}");
    assert_eq!(rest, "0 lost, 0 malformed, 0 leaked", "{last}");
    assert!(status.success(), "the soak failed: {last}");
}
