//! Text read as a person would, through the real binary and the real engine.
//!
//! With both noise scales at 0 the voice speaks a line the same way every
//! time, so the audio of a text with numbers and abbreviations can be held
//! against the audio of the words a person would say, written out by hand.

mod common;

use common::*;
use serde_json::{json, Value};

/// The samples of one complete `/api/tts` answer.
async fn speak(server: &Server, voice: &str, text: &str, extra: Value) -> Vec<i16> {
    let mut body = json!({
        "text": text,
        "voice_model": voice,
        "noise_scale": 0.0,
        "noise_w_scale": 0.0,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, _, bytes) = post(server, "/api/tts", body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    parse_wav(&bytes).samples
}

/// Lengths within 1% (the same phonemes give the same durations).
fn same_length(a: &[i16], b: &[i16]) -> bool {
    let (a, b) = (a.len() as f64, b.len() as f64);
    (a - b).abs() <= 0.01 * a.max(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_english_voice_reads_numbers_and_abbreviations_as_a_person_would() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let written = "Dr. Smith paid $5.3 billion at 2:30 PM. Call 555-1234 now.";
    let by_hand = "Doctor Smith paid five point three billion dollars at two thirty PM. \
                   Call five five five, one two three four now.";
    let normalized = speak(&server, VOICE, written, json!({})).await;
    let spoken = speak(&server, VOICE, by_hand, json!({})).await;
    assert!(
        same_length(&normalized, &spoken),
        "{} samples for the written text, {} for the words by hand",
        normalized.len(),
        spoken.len()
    );
    // "normalize": false gives the phonemizer the text as written, which it
    // reads otherwise ("five hundred fifty five dash one thousand…").
    let raw = speak(&server, VOICE, written, json!({"normalize": false})).await;
    assert!(
        !same_length(&raw, &spoken),
        "{} samples as written, {} normalized",
        raw.len(),
        spoken.len()
    );
    // And the two are cached apart.
    let again = speak(&server, VOICE, written, json!({})).await;
    assert_eq!(again.len(), normalized.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_is_read_the_same_as_whole_text() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let written = "On Jan. 5, 2025 it was 72°F in St. Louis.";
    let whole = speak(&server, VOICE, written, json!({})).await;
    let (status, _, bytes) = post(
        &server,
        "/api/tts",
        json!({"text": written, "voice_model": VOICE, "noise_scale": 0.0,
               "noise_w_scale": 0.0, "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let streamed = parse_streamed_wav(&bytes).samples;
    assert!(
        same_length(&whole, &streamed),
        "{} whole, {} streamed",
        whole.len(),
        streamed.len()
    );
    let by_hand = "On January fifth, twenty twenty five it was seventy two degrees \
                   Fahrenheit in Saint Louis.";
    let spoken = speak(&server, VOICE, by_hand, json!({})).await;
    assert!(
        same_length(&whole, &spoken),
        "{} vs {}",
        whole.len(),
        spoken.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_languages_pass_through_as_written() {
    let dir = voices(&[VOICE, "de_DE-test-medium"]);
    let path = dir.path().join("de_DE-test-medium.onnx.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["language"]["code"] = json!("de_DE");
    config["espeak"]["voice"] = json!("de");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let server = Server::start(dir.path(), &[]);
    let text = "Es kostet $500 am 5.3.2025 um 14:05.";
    let default = speak(&server, "de_DE-test-medium", text, json!({})).await;
    let off = speak(
        &server,
        "de_DE-test-medium",
        text,
        json!({"normalize": false}),
    )
    .await;
    assert!(
        same_length(&default, &off),
        "{} samples by default, {} with normalization off",
        default.len(),
        off.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongly_typed_normalize_is_a_json_error() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": "Hello.", "normalize": "yes"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "invalid_request");
}

/// The phonemes piper's own Python API makes of `text` with the bundled
/// voice, one string per sentence.
fn piper_phonemes(text: &str) -> Vec<String> {
    let script = "import json, sys\n\
from piper import PiperVoice\n\
voice = PiperVoice.load(sys.argv[1], config_path=sys.argv[1] + '.json')\n\
print(json.dumps([''.join(p) for p in voice.phonemize(sys.argv[2])]))\n";
    let model = root().join(format!("voices/{VOICE}.onnx"));
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&model)
        .arg(text)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phonemes_are_those_of_the_words_a_person_would_say() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let text = "Dr. Smith owes $5.99 since 2024. Call 555-1234 at 2:30 PM.";
    let (status, _, body) = post(&server, "/api/phonemes", json!({"text": text})).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["voice"], VOICE);
    let sentences = answer["sentences"].as_array().unwrap();
    let expected = [
        (
            "Dr. Smith owes $5.99 since 2024.",
            "Doctor Smith owes five dollars and ninety nine cents since twenty twenty four.",
        ),
        (
            "Call 555-1234 at 2:30 PM.",
            "Call five five five, one two three four at two thirty PM.",
        ),
    ];
    assert_eq!(sentences.len(), expected.len(), "{answer}");
    for (sentence, (original, spoken)) in sentences.iter().zip(expected) {
        assert_eq!(sentence["text"], original);
        assert_eq!(sentence["normalized"], spoken);
        let phonemes: Vec<String> = serde_json::from_value(sentence["phonemes"].clone()).unwrap();
        assert_eq!(phonemes, piper_phonemes(spoken), "{sentence}");
    }
    // Without normalization the engine is given the text as written.
    let (status, _, body) = post(
        &server,
        "/api/phonemes",
        json!({"text": "I owe $5.", "normalize": false, "voice_model": VOICE}),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["sentences"][0]["normalized"], "I owe $5.");
    let phonemes: Vec<String> =
        serde_json::from_value(answer["sentences"][0]["phonemes"].clone()).unwrap();
    assert_eq!(phonemes, piper_phonemes("I owe $5."));
    // Phoneme input reaches the engine untouched.
    let (status, _, body) = post(
        &server,
        "/api/phonemes",
        json!({"text": "Say [[ hɛlˈoʊ ]] 5 times."}),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let sentence = &answer["sentences"][0];
    assert_eq!(sentence["normalized"], "Say [[ hɛlˈoʊ ]] five times.");
    let phonemes: Vec<String> = serde_json::from_value(sentence["phonemes"].clone()).unwrap();
    assert!(phonemes.concat().contains("hɛlˈoʊ"), "{sentence}");
    assert_eq!(phonemes, piper_phonemes("Say [[ hɛlˈoʊ ]] five times."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phonemes_of_bad_requests_are_json_errors() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    for (body, status, code) in [
        (json!({}), 400, "invalid_request"),
        (json!({"text": "  "}), 400, "empty_text"),
        (json!({"text": "..."}), 422, "no_speakable_text"),
        (
            json!({"text": "Hi.", "voice_model": "nope"}),
            404,
            "voice_not_found",
        ),
        (
            json!({"text": "Hi.", "voice_model": "../x"}),
            400,
            "invalid_voice_name",
        ),
    ] {
        let (got, _, answer) = post(&server, "/api/phonemes", body.clone()).await;
        assert_eq!(got, status, "{body}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(error_code(&answer), code, "{body}");
    }
    let response = client()
        .post(server.url("/api/phonemes"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(error_code(&response.bytes().await.unwrap()), "invalid_json");
}
