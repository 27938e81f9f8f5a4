//! A bounded load test on loopback: 300 requests at concurrency 16 over
//! four voices sharing two processes, random lengths, some clients leaving
//! early. Every answer must be a valid WAV or a documented 503/504 error,
//! and afterwards nothing may be left behind.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const REQUESTS: usize = 300;
const CONCURRENCY: usize = 16;

fn rss_of(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Deterministic pseudo-random numbers (no crate needed).
fn lcg(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |bound| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % bound
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_requests_over_four_voices_and_two_processes() {
    let names = ["l1", "l2", "l3", "l4"];
    let dir = voices(&names);
    let spool = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("PIPER_MAX_PROCESSES", "2"),
            ("PIPER_QUEUE_TIMEOUT", "10"),
            // Spool every complete answer, to prove no temp file is left.
            ("PIPER_SPOOL_THRESHOLD_MB", "0"),
            ("PIPER_TEMP_DIR", spool.path().to_str().unwrap()),
            // The audio cache holds up to its budget by design; off here, so
            // that any growth would be a leak.
            ("PIPER_AUDIO_CACHE_MB", "0"),
        ],
    );
    // Warm the allocator and two voices before the baseline.
    for name in &names[..2] {
        let (status, _, _) = post(
            &server,
            "/api/tts",
            json!({"text": prose(300), "voice_model": name}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let rss_before = rss_of(server.pid());

    let mut random = lcg(7);
    let plans: Vec<(String, String, bool)> = (0..REQUESTS)
        .map(|i| {
            let voice = names[random(4) as usize].to_string();
            let text = prose(20 + random(300) as usize);
            let leave_early = i % 10 == 3;
            (voice, text, leave_early)
        })
        .collect();
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let left = Arc::new(AtomicUsize::new(0));
    let server_ref = &server;
    futures::stream::iter(plans)
        .for_each_concurrent(CONCURRENCY, |(voice, text, leave_early)| {
            let (ok, refused, left) = (ok.clone(), refused.clone(), left.clone());
            async move {
                let response = client()
                    .post(server_ref.url("/api/tts"))
                    .json(&json!({"text": text, "voice_model": voice, "stream": leave_early}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                if status == 200 && leave_early {
                    let mut stream = response.bytes_stream();
                    let _ = stream.next().await;
                    left.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let body = response.bytes().await.unwrap();
                match status {
                    200 => {
                        let wav = parse_wav(&body);
                        assert_eq!(wav.spec.sample_rate, 22050);
                        assert!(wav.seconds() > 0.5);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    503 | 504 => {
                        let value: Value = serde_json::from_slice(&body).unwrap();
                        let code = value["code"].as_str().unwrap();
                        assert!(
                            ["process_limit", "voice_unavailable", "engine_timeout"]
                                .contains(&code),
                            "undocumented {status} {code}"
                        );
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
                }
            }
        })
        .await;
    let (ok, refused, left) = (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        left.load(Ordering::Relaxed),
    );
    eprintln!("load: {ok} WAVs, {refused} documented refusals, {left} clients left early");
    assert_eq!(ok + refused + left, REQUESTS);
    assert!(ok >= REQUESTS / 2, "most requests should succeed");

    // Nothing left behind: at most the process limit, no temp files.
    let settled = eventually(Duration::from_secs(30), || server.engines().len() <= 2).await;
    assert!(settled, "{} engines", server.engines().len());
    assert_eq!(
        std::fs::read_dir(spool.path()).unwrap().count(),
        0,
        "temp files left"
    );
    // Spool files are unlinked at once; an open one would show in /proc.
    let spool_prefix = spool.path().to_string_lossy().to_string();
    let open_spools = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .map(|target| target.to_string_lossy().starts_with(&spool_prefix))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(open_spools, 0, "spool files still open after the load");
    let (_, health) = get_json(&server, "/health").await;
    assert!(health["processes"].as_u64().unwrap() <= 2);
    let rss_after = rss_of(server.pid());
    let growth = rss_after as i64 - rss_before as i64;
    eprintln!(
        "server RSS: {} MiB before, {} MiB after",
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(growth < 20 << 20, "server RSS grew by {} MiB", growth >> 20);
}
