//! Generated bodies thrown at every route that reads one, on the real
//! server and engine: random JSON, the routes' fields with wrong types and
//! edge values, huge numbers, invalid UTF-8, JSON cut short, a body over
//! the limit. Every answer is a client's error in the route's shape (JSON;
//! plain text for MaryTTS) or a 200 whose audio decodes; never a 5xx,
//! never a hang; and the server is healthy after, with no engine leaked.
//!
//! The bodies come from proptest strategies with a fixed seed, so a run is
//! the same every time (`FUZZ_ROUTES_SEED` picks another, `FUZZ_ROUTES_CASES`
//! another count per route).

mod common;

use std::time::Duration;

use base64::Engine as _;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};

use common::*;

/// A route that reads a body, its fields, and the shape of its errors.
struct Route {
    path: &'static str,
    fields: &'static [&'static str],
    errors: Shape,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// `{"error": "...", "code": "..."}`
    Piperd,
    /// `{"error": {"message", "type", "code"}}`
    OpenAi,
    /// Plain text, as MaryTTS answers.
    Text,
}

const ROUTES: &[Route] = &[
    Route {
        path: "/api/tts",
        fields: &[
            "text",
            "voice_model",
            "speaker",
            "length_scale",
            "noise_scale",
            "noise_w_scale",
            "sentence_silence",
            "volume",
            "stream",
            "response_format",
            "sample_rate",
            "normalize",
            "timestamps",
            "captions",
        ],
        errors: Shape::Piperd,
    },
    Route {
        path: "/api/warmup",
        fields: &["voice_model"],
        errors: Shape::Piperd,
    },
    Route {
        path: "/api/phonemes",
        fields: &["text", "voice_model", "normalize"],
        errors: Shape::Piperd,
    },
    Route {
        path: "/v1/audio/speech",
        fields: &[
            "model",
            "input",
            "voice",
            "response_format",
            "speed",
            "stream_format",
            "sample_rate",
            "instructions",
        ],
        errors: Shape::OpenAi,
    },
    Route {
        path: "/process",
        fields: &[
            "INPUT_TEXT",
            "INPUT_TYPE",
            "OUTPUT_TYPE",
            "AUDIO",
            "LOCALE",
            "VOICE",
            "effect_Rate_selected",
            "effect_Rate_parameters",
            "effect_Volume_selected",
            "effect_Volume_parameters",
        ],
        errors: Shape::Text,
    },
];

/// Short texts (the audio of a 200 is made and checked) and edge ones.
const TEXTS: &[&str] = &[
    "Hi.",
    "Go now!",
    "It is 5 km.",
    "",
    " ",
    "\u{0}",
    "日本",
    "$5",
    "[[ h ə ]]",
];

fn edge() -> BoxedStrategy<Value> {
    let strings = prop::sample::select(vec![
        "wav",
        "mp3",
        "opus",
        "flac",
        "pcm",
        "aac",
        "ulaw",
        "wav_alaw",
        "vtt",
        "srt",
        "sse",
        "audio",
        "tts-1",
        "alloy",
        VOICE,
        "../x",
        "en_US",
        "TEXT",
        "AUDIO",
        "WAVE_FILE",
        "on",
        "durScale:1.5;",
        "amount:2.0;",
        "amount:1e39",
        "0",
    ]);
    prop_oneof![
        3 => prop::sample::select(TEXTS).prop_map(Value::from),
        3 => strings.prop_map(Value::from),
        2 => prop::sample::select(vec![0.0, -1.0, 0.5, 1.0, 2.0, 4.5, 1e39, 1e-45, 22050.0, 8000.0])
            .prop_map(Value::from),
        1 => prop::sample::select(vec![json!(u64::MAX), json!(i64::MIN), json!(1e308), json!(16000)]),
        2 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => Just(json!([1, "a"])),
        1 => Just(json!({"a": {}})),
        1 => "\\PC{0,6}".prop_map(Value::from),
    ]
    .boxed()
}

fn object(fields: &'static [&'static str]) -> BoxedStrategy<Map<String, Value>> {
    let present = fields
        .iter()
        .map(|name| prop::option::weighted(0.5, edge().prop_map(move |v| (name.to_string(), v))))
        .collect::<Vec<_>>();
    // The text field is there more often than not, so that some bodies
    // are right and speak.
    (
        present,
        prop::option::weighted(0.7, prop::sample::select(TEXTS)),
    )
        .prop_map(move |(present, text)| {
            let mut object: Map<String, Value> = present.into_iter().flatten().collect();
            if let (Some(text), Some(name)) = (text, fields.first()) {
                object.entry(name.to_string()).or_insert(Value::from(text));
            }
            object
        })
        .boxed()
}

/// A body for `route`: JSON of its fields (a form for MaryTTS), other
/// JSON, any bytes, cut short, or with invalid UTF-8.
fn body(route: &'static Route) -> BoxedStrategy<Vec<u8>> {
    let encode = move |object: Map<String, Value>| -> Vec<u8> {
        if route.errors == Shape::Text {
            let pairs: Vec<(String, String)> = object
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect();
            serde_urlencoded::to_string(pairs).unwrap().into_bytes()
        } else {
            serde_json::to_vec(&object).unwrap()
        }
    };
    let valid = object(route.fields).prop_map(encode).boxed();
    prop_oneof![
        6 => valid.clone(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(b"[1, {\"text\": 2}, null]".to_vec()),
        1 => (valid.clone(), any::<prop::sample::Index>())
            .prop_map(|(bytes, at)| bytes[..at.index(bytes.len() + 1)].to_vec()),
        1 => (valid, any::<prop::sample::Index>()).prop_map(|(mut bytes, at)| {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, [0xff, 0xc3]);
            bytes
        }),
    ]
    .boxed()
}

/// Decodes an answer's audio in `format` (or fails the test).
fn check_audio(format: &str, bytes: &[u8], what: &str) {
    assert!(!bytes.is_empty(), "{what}: no audio");
    match format {
        f if f.starts_with("wav") || f == "audio/wav" || f == "audio/x-wav" => {
            assert_eq!(&bytes[..4], b"RIFF", "{what}");
            assert_eq!(&bytes[8..12], b"WAVE", "{what}");
            assert!(bytes.len() > 44, "{what}: {} bytes", bytes.len());
        }
        "mp3" | "audio/mpeg" | "flac" | "audio/flac" => {
            let extension = if format.contains("flac") {
                "flac"
            } else {
                "mp3"
            };
            let stream = symphonia::core::io::MediaSourceStream::new(
                Box::new(std::io::Cursor::new(bytes.to_vec())),
                Default::default(),
            );
            let mut hint = symphonia::core::probe::Hint::new();
            hint.with_extension(extension);
            let mut reader = symphonia::default::get_probe()
                .format(&hint, stream, &Default::default(), &Default::default())
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .format;
            let track = reader.default_track().unwrap().clone();
            let mut decoder = symphonia::default::get_codecs()
                .make(&track.codec_params, &Default::default())
                .unwrap();
            let mut frames = 0;
            while let Ok(packet) = reader.next_packet() {
                frames += decoder
                    .decode(&packet)
                    .unwrap_or_else(|e| panic!("{what}: {e}"))
                    .frames();
            }
            assert!(frames > 0, "{what}: no frames");
        }
        f if f == "opus" || f.starts_with("audio/ogg") => {
            let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes.to_vec()));
            let head = reader
                .read_packet_expected()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(&head.data[..8], b"OpusHead", "{what}");
            let mut eos = false;
            while let Some(packet) = reader
                .read_packet()
                .unwrap_or_else(|e| panic!("{what}: {e}"))
            {
                eos |= packet.last_in_stream();
            }
            assert!(eos, "{what}: no end of stream");
        }
        "pcm" | "audio/pcm" => assert_eq!(bytes.len() % 2, 0, "{what}"),
        "ulaw" | "alaw" | "audio/PCMU" | "audio/PCMA" => {}
        other => panic!("{what}: an answer in {other}"),
    }
}

/// Checks one answer: a client's error in the route's shape, or a 200
/// with what the route promises.
fn check_answer(route: &Route, status: u16, content_type: &str, body: &[u8], what: &str) {
    assert!(
        status == 200 || (400..500).contains(&status),
        "{what}: {status} {}",
        String::from_utf8_lossy(body)
    );
    if status != 200 {
        match route.errors {
            Shape::Text => {
                assert!(
                    content_type.starts_with("text/plain"),
                    "{what}: {content_type}"
                );
                assert!(!String::from_utf8_lossy(body).trim().is_empty(), "{what}");
            }
            shape => {
                let error: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
                    panic!(
                        "{what}: error not JSON ({e}): {:?}",
                        String::from_utf8_lossy(body)
                    )
                });
                let error = if shape == Shape::OpenAi {
                    &error["error"]
                } else {
                    &error
                };
                let message = if shape == Shape::OpenAi {
                    &error["message"]
                } else {
                    &error["error"]
                };
                assert!(
                    message.as_str().is_some_and(|m| !m.is_empty()),
                    "{what}: {error}"
                );
                assert!(error["code"].as_str().is_some(), "{what}: {error}");
            }
        }
        return;
    }
    match route.path {
        "/api/warmup" => {
            let answer: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(answer["ok"], true, "{what}");
        }
        "/api/phonemes" => {
            let answer: Value = serde_json::from_slice(body).unwrap();
            assert!(answer["sentences"].is_array(), "{what}: {answer}");
        }
        _ if content_type.starts_with("application/json") => {
            // Word timestamps: the audio in base64, in its format.
            let answer: Value = serde_json::from_slice(body).unwrap();
            let audio = base64::engine::general_purpose::STANDARD
                .decode(answer["audio"].as_str().unwrap())
                .unwrap();
            check_audio(answer["format"].as_str().unwrap(), &audio, what);
            assert!(answer["words"].is_array(), "{what}");
        }
        _ if content_type.starts_with("application/x-ndjson") => {
            let lines: Vec<Value> = body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            assert!(
                lines.iter().all(|l| l.get("error").is_none()),
                "{what}: {lines:?}"
            );
            assert_eq!(lines.last().unwrap()["done"], true, "{what}");
        }
        _ if content_type.starts_with("text/event-stream") => {
            let events: Vec<Value> = String::from_utf8(body.to_vec())
                .unwrap()
                .split("\n\n")
                .filter(|e| !e.is_empty())
                .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
                .collect();
            assert_eq!(
                events.last().unwrap()["type"],
                "speech.audio.done",
                "{what}"
            );
        }
        _ => {
            let format = content_type.split(';').next().unwrap_or_default().trim();
            let format = if content_type.starts_with("audio/ogg") {
                content_type
            } else {
                format
            };
            check_audio(format, body, what);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_bodies_get_a_client_error_or_audio_never_a_5xx() {
    let voices = voices(&[VOICE]);
    let server = Server::start(voices.path(), &[]);
    let cases: usize = std::env::var("FUZZ_ROUTES_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("FUZZ_ROUTES_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    // Long enough for a short text's audio on a busy machine; a hang is
    // far longer.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let (mut answered, mut spoken) = (0, 0);
    for route in ROUTES {
        let strategy = body(route);
        let mut bodies: Vec<Vec<u8>> = (0..cases)
            .map(|_| strategy.new_tree(&mut runner).unwrap().current())
            .collect();
        // And one over the body limit.
        bodies.push(vec![b' '; (1 << 20) + 1]);
        for body in bodies {
            let what = format!(
                "{} {:?}",
                route.path,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
            let response = client
                .post(server.url(route.path))
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: no answer: {e}\n{}", server.log()));
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let bytes = response
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("{what}: the answer broke off: {e}"));
            check_answer(route, status, &content_type, &bytes, &what);
            answered += 1;
            spoken += usize::from(status == 200);
        }
        // MaryTTS reads the same form from a GET's query.
        if route.errors == Shape::Text {
            for _ in 0..cases / 3 {
                let form = strategy.new_tree(&mut runner).unwrap().current();
                let query = String::from_utf8_lossy(&form).replace(['#', ' '], "");
                let what = format!("GET /process?{query}");
                let response = client
                    .get(server.url(&format!("/process?{query}")))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let bytes = response.bytes().await.unwrap();
                check_answer(route, status, &content_type, &bytes, &what);
                answered += 1;
                spoken += usize::from(status == 200);
            }
        }
    }
    eprintln!("{answered} bodies answered, {spoken} with a 200");
    // Some bodies were right: the check of a 200's audio ran.
    assert!(spoken >= ROUTES.len(), "only {spoken} answers were a 200");

    // Healthy after: it answers, speaks, and runs the one engine it should.
    let (status, health) = get_json(&server, "/health").await;
    assert_eq!(status, 200, "{health}");
    let (status, _, wav) = post(&server, "/api/tts", json!({"text": "Still here."})).await;
    assert_eq!(status, 200);
    assert!(parse_wav(&wav).seconds() > 0.3);
    assert_eq!(server.engines().len(), 1, "{:?}", server.engines());
}

/// Found by fuzzing: a body over the limit is answered without being
/// read, and the server then closes the connection; the answer did not
/// say so, and a client that keeps connections (as every HTTP library
/// does) sent its next request into the closed one and lost it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_closes_its_connection_and_says_so() {
    let voices = voices(&[VOICE]);
    let server = Server::start(voices.path(), &[]);
    // One connection, kept between requests.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    for route in ROUTES {
        let response = client
            .post(server.url(route.path))
            .body(vec![b' '; (1 << 20) + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{}", route.path);
        assert_eq!(
            response
                .headers()
                .get("connection")
                .map(|v| v.to_str().unwrap()),
            Some("close"),
            "{}",
            route.path
        );
        drop(response.bytes().await);
        // The next request goes on a new connection, and is answered.
        let response = client
            .post(server.url(route.path))
            .body("{")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: the request after a 413 was lost: {e:?}", route.path));
        assert_eq!(response.status(), 400, "{}", route.path);
    }
}
