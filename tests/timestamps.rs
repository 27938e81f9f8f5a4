//! Word timestamps and captions on `/api/tts`, on the real engine: the times
//! are checked against the silences found in the audio itself.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

/// Silent runs of the audio: (start, end) in seconds, at least `least`
/// long, where every 10 ms window stays under a low level.
fn silences(samples: &[i16], rate: u32, least: f64) -> Vec<(f64, f64)> {
    let window = (rate / 100) as usize;
    let mut out = Vec::new();
    let mut run: Option<usize> = None;
    let windows: Vec<&[i16]> = samples.chunks(window).collect();
    for (k, w) in windows.iter().enumerate() {
        let quiet = rms(w) < 150.0;
        match (quiet, run) {
            (true, None) => run = Some(k),
            (false, Some(from)) => {
                out.push((from, k));
                run = None;
            }
            _ => {}
        }
    }
    if let Some(from) = run {
        out.push((from, windows.len()));
    }
    let secs = |k: usize| (k * window) as f64 / f64::from(rate);
    out.into_iter()
        .map(|(a, b)| (secs(a), secs(b).min(samples.len() as f64 / f64::from(rate))))
        .filter(|(a, b)| b - a >= least)
        .collect()
}

fn words(value: &Value) -> Vec<(String, f64, f64, usize, usize)> {
    value["words"]
        .as_array()
        .unwrap_or_else(|| panic!("no words: {value}"))
        .iter()
        .map(|w| {
            (
                w["word"].as_str().unwrap().to_string(),
                w["start"].as_f64().unwrap(),
                w["end"].as_f64().unwrap(),
                w["char_start"].as_u64().unwrap() as usize,
                w["char_end"].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

fn chars(text: &str, range: std::ops::Range<usize>) -> String {
    text.chars()
        .skip(range.start)
        .take(range.end - range.start)
        .collect()
}

async fn timed(server: &Server, body: Value) -> (reqwest::header::HeaderMap, Value) {
    let (status, headers, body) = post(server, "/api/tts", body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    (headers, serde_json::from_slice(&body).unwrap())
}

/// Every written word once, in order, its span on it in the text, its times
/// ordered and inside the audio.
fn check_words(
    text: &str,
    got: &[(String, f64, f64, usize, usize)],
    expected: &[&str],
    audio: f64,
) {
    let names: Vec<&str> = got.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(names, expected);
    let mut last_end = 0.0;
    for (word, start, end, from, to) in got {
        assert_eq!(&chars(text, *from..*to), word, "span of {word}");
        assert!(
            *start >= last_end - 1e-9,
            "{word} starts before the word before ends"
        );
        assert!(end > start, "{word}: {start}..{end}");
        assert!(
            *end <= audio + 1e-3,
            "{word} ends after the audio ({audio} s)"
        );
        last_end = *end;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_are_timed_against_the_silences_in_the_audio() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let text = "The ship left the harbour at dawn.  It carried twelve crates of “fresh” apples, \
                and nobody on board knew why.\nThe captain smiled.";
    let (headers, value) = timed(
        &server,
        json!({"text": text, "timestamps": true, "sentence_silence": 1.0}),
    )
    .await;
    assert_eq!(headers["x-audio-cache"], "miss");
    assert_eq!(value["format"], "wav");
    assert_eq!(value["sample_rate"], 22050);
    let wav = parse_wav(&BASE64.decode(value["audio"].as_str().unwrap()).unwrap());
    let audio = wav.seconds();
    assert!((value["duration"].as_f64().unwrap() - audio).abs() < 0.002);
    let got = words(&value);
    let expected = [
        "The", "ship", "left", "the", "harbour", "at", "dawn", "It", "carried", "twelve", "crates",
        "of", "fresh", "apples", "and", "nobody", "on", "board", "knew", "why", "The", "captain",
        "smiled",
    ];
    check_words(text, &got, &expected, audio);

    // The second of silence after each sentence, found in the audio: the
    // last word before it ends where it starts, the first word after it
    // starts where it ends (the clause pause at the comma is shorter).
    let pauses = silences(&wav.samples, 22050, 0.9);
    assert_eq!(pauses.len(), 3, "{pauses:?}");
    let ends = [got[6].2, got[19].2, got[22].2];
    let starts = [got[7].1, got[20].1];
    let mut errors = Vec::new();
    for (k, &(from, to)) in pauses.iter().enumerate() {
        errors.push((ends[k] - from).abs());
        if k < 2 {
            errors.push((starts[k] - to).abs());
        }
    }
    // The trailing silence runs to the end of the audio.
    assert!((pauses[2].1 - audio).abs() < 0.02, "{pauses:?} {audio}");
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    println!("boundary errors (s): {errors:?}, median {median:.3}");
    assert!(
        median <= 0.05,
        "median boundary error {median} s: {errors:?}"
    );
    assert!(errors.iter().all(|&e| e <= 0.12), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_words_stay_one_entry_and_the_cache_keeps_the_times() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    // espeak says "$500" as two words in its own order, and "1,234" as five;
    // the normalizer writes "Dr." out as "Doctor", a rewrite of the whole
    // abbreviation, so its entry is "Dr." as written.
    let text = "Pay $500 by 10:30, or 1,234 items (well... okay—fine) go to Dr. Smith's.";
    let body = json!({"text": text, "timestamps": true, "response_format": "mp3"});
    let (headers, first) = timed(&server, body.clone()).await;
    assert_eq!(headers["x-audio-cache"], "miss");
    assert_eq!(first["format"], "mp3");
    let got = words(&first);
    let expected = [
        "Pay", "$500", "by", "10:30", "or", "1,234", "items", "well", "okay", "fine", "go", "to",
        "Dr.", "Smith's",
    ];
    check_words(text, &got, &expected, first["duration"].as_f64().unwrap());
    assert!(
        got[1].2 - got[1].1 > got[0].2 - got[0].1,
        "\"$500\" is said as several words: {got:?}"
    );
    let (headers, again) = timed(&server, body).await;
    assert_eq!(headers["x-audio-cache"], "hit");
    assert_eq!(again["words"], first["words"]);
    assert_eq!(again["audio"], first["audio"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_parse_as_webvtt_and_srt() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let text = "Captions come in cues. This second sentence is long enough that a single cue \
                of two lines cannot hold it, so it is cut at a word.";
    for kind in ["vtt", "srt"] {
        let (_, value) = timed(&server, json!({"text": text, "captions": kind})).await;
        let captions = value["captions"].as_str().unwrap();
        let check = match kind {
            "vtt" => {
                "import sys, webvtt\n\
                 v = webvtt.from_string(sys.stdin.read(), strict=True)\n\
                 for c in v: print(c.start, c.end, c.text.replace(chr(10), ' '), sep='|')"
            }
            _ => {
                "import sys, srt\n\
                 for c in srt.parse(sys.stdin.read(), ignore_errors=False): \
                 print(c.start, c.end, c.content.replace(chr(10), ' '), sep='|')"
            }
        };
        let mut child = std::process::Command::new(python())
            .arg("-c")
            .arg(check)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(captions.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{kind} does not parse: {}\n{captions}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cues: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.rsplit('|').next().unwrap().to_string())
            .collect();
        assert!(cues.len() >= 3, "{kind}: {cues:?}");
        assert_eq!(cues[0], "Captions come in cues.");
        // Every word once, in order, across the cues.
        assert_eq!(
            cues.join(" "),
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        // The words are there too.
        assert_eq!(words(&value).len(), text.split_whitespace().count());
    }
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": "Hi.", "captions": "ass"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "invalid_parameter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_ndjson_with_times_over_the_whole_stream() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let text = "First comes one sentence. Then another follows it. And a third ends the stream.";
    let mut stream = post_stream(
        &server,
        "/api/tts",
        json!({"text": text, "timestamps": true, "stream": true, "sentence_silence": 0.3}),
    )
    .await;
    let mut bytes = Vec::new();
    while let Some(piece) = stream.next().await {
        bytes.extend_from_slice(&piece.unwrap());
    }
    let lines: Vec<Value> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "three sentences and the end: {lines:?}");
    let mut audio = Vec::new();
    let mut all = Vec::new();
    for line in &lines[..3] {
        assert_eq!(line["format"], "wav");
        audio.extend(BASE64.decode(line["audio"].as_str().unwrap()).unwrap());
        let got = words(line);
        assert!(!got.is_empty(), "{line}");
        all.extend(got);
    }
    let end = &lines[3];
    assert_eq!(end["done"], true);
    audio.extend(BASE64.decode(end["audio"].as_str().unwrap()).unwrap());
    let wav = parse_streamed_wav(&audio);
    let expected: Vec<&str> = text
        .split_whitespace()
        .map(|w| w.trim_end_matches('.'))
        .collect();
    check_words(text, &all, &expected, wav.seconds());
    assert!((end["duration"].as_f64().unwrap() - wav.seconds()).abs() < 0.002);
    // The third sentence starts after two sentences and their silence.
    assert!(all[8].1 > 2.0 * 0.3 + 1.0, "{all:?}");

    // Bad captions with a stream are refused up front.
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": text, "captions": "vtt", "stream": true}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "invalid_parameter");
}
