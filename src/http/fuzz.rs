//! Fuzzing of what the HTTP front-end reads from clients: the JSON bodies
//! of `/api/tts`, `/api/phonemes`, `/api/warmup` and `/v1/audio/speech`,
//! and the ElevenLabs WebSockets' messages, query and `output_format`.
//! Whatever comes, the answer is a request that holds every check or a
//! client's error (a 4xx); nothing panics.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::elevenlabs::protocol::{
    inactivity_timeout, output_format, ClientMessage, SocketError, MAX_INACTIVITY_SECS,
};
use super::openai::{SpeechPlan, SpeechRequest};
use super::seed::{PhonemesRequest, TtsPlan, TtsRequest, WarmupRequest};
use super::ApiError;
use crate::audio::AudioFormat;
use crate::speech::encode::{Output, SAMPLE_RATES};
use crate::speech::{SpeechError, MAX_TEXT_CHARS};
use crate::testing::fuzz::{body_bytes, config, json_object_of, json_string, json_value};

const TTS_FIELDS: &[&str] = &[
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
];

const SPEECH_FIELDS: &[&str] = &[
    "model",
    "input",
    "voice",
    "response_format",
    "speed",
    "stream_format",
    "sample_rate",
    "instructions",
];

const VOICE: &str = "en_US-joe-medium";

/// Values a client may well send for one field or another: right ones,
/// wrong ones of the right type, and edges.
fn edge() -> impl Strategy<Value = Value> {
    let mut names: Vec<&'static str> = AudioFormat::ALL.iter().map(|f| f.name()).collect();
    names.extend([
        "MP3",
        "wav_ulaw",
        "vtt",
        "srt",
        "WebVTT",
        "sse",
        "audio",
        "tts-1",
        "alloy",
        VOICE,
        "en_US-joe-medium.onnx",
        "../etc/passwd",
        "",
        " ",
        "\n",
        "Hello there.",
        "0",
        "bob",
    ]);
    const NUMBERS: &[f64] = &[
        0.0, -0.0, -1.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 4.01, 9.99, 10.0, 10.5, 1e39, -1e39,
        1e-45, 1e300, 8000.0, 22050.0,
    ];
    prop_oneof![
        prop::sample::select(names).prop_map(Value::from),
        prop::sample::select(NUMBERS).prop_map(Value::from),
        prop::sample::select(&SAMPLE_RATES[..]).prop_map(Value::from),
        prop_oneof![
            Just(json!(u64::MAX)),
            Just(json!(i64::MIN)),
            Just(json!(u32::MAX)),
            Just(json!(1u64 << 32)),
            Just(json!(-1))
        ],
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        // Text over the limit, and at it.
        prop_oneof![
            Just(Value::from("a".repeat(MAX_TEXT_CHARS + 1))),
            Just(Value::from("é".repeat(MAX_TEXT_CHARS)))
        ],
    ]
}

fn field_value() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![3 => edge(), 1 => json_value()]
}

/// Bodies of a route with `fields`: objects of them, other JSON, broken JSON.
fn bodies(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    body_bytes(prop_oneof![
        6 => json_object_of(fields, field_value()).prop_map(Value::Object),
        1 => json_value(),
    ])
}

/// An error a client caused: a 4xx, and `invalid_json` exactly when the
/// body is not JSON at all.
fn check_client_error(err: &ApiError, body: &[u8]) -> Result<(), TestCaseError> {
    let (status, code) = err.status_and_code();
    prop_assert!(
        status.is_client_error(),
        "{} ({}) for {:?}",
        status,
        err,
        String::from_utf8_lossy(body)
    );
    let is_json = serde_json::from_slice::<Value>(body).is_ok();
    prop_assert_eq!(
        code == "invalid_json",
        !is_json,
        "{} for {:?}",
        err,
        String::from_utf8_lossy(body)
    );
    Ok(())
}

/// A text the speech core takes: not blank, within the limit.
fn check_text(text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!text.trim().is_empty());
    prop_assert!(text.chars().count() <= MAX_TEXT_CHARS);
    Ok(())
}

fn check_output(output: &Output) -> Result<(), TestCaseError> {
    prop_assert!(output.format.is_supported());
    prop_assert!(output.sample_rate.is_none_or(|r| SAMPLE_RATES.contains(&r)));
    Ok(())
}

proptest! {
    #![proptest_config(config(1024, 0))]

    #[test]
    fn fuzz_tts_bodies_are_requests_or_client_errors(body in bodies(TTS_FIELDS)) {
        match TtsRequest::plan(&body) {
            Err(err) => check_client_error(&err, &body)?,
            Ok(TtsPlan { request, output, captions, timestamps, options }) => {
                check_text(&request.text)?;
                check_output(&output)?;
                prop_assert!(options.check_ranges().is_ok());
                prop_assert!(!(captions.is_some() && request.stream));
                prop_assert_eq!(timestamps, request.timestamps || captions.is_some());
                let value: Value = serde_json::from_slice(&body).unwrap();
                prop_assert_eq!(value["text"].as_str(), Some(request.text.as_str()));
            }
        }
    }

    #[test]
    fn fuzz_phonemes_bodies_are_requests_or_client_errors(body in bodies(&["text", "voice_model", "normalize"])) {
        match PhonemesRequest::from_body(&body) {
            Err(err) => check_client_error(&err, &body)?,
            Ok(request) => check_text(&request.text)?,
        }
    }

    #[test]
    fn fuzz_warmup_bodies_are_requests_or_client_errors(body in bodies(&["voice_model"])) {
        match WarmupRequest::from_body(&body) {
            // An empty body is the default voice's warm-up, not JSON.
            Err(err) => check_client_error(&err, &body)?,
            Ok(request) => {
                let blank = body.iter().all(|b| b.is_ascii_whitespace());
                let named = serde_json::from_slice::<Value>(&body).ok().map(|v| v["voice_model"].clone());
                prop_assert!(
                    (blank && request.voice_model.is_none())
                        || named == Some(request.voice_model.clone().map_or(Value::Null, Value::from)),
                    "{:?} from {:?}", request, String::from_utf8_lossy(&body)
                );
            }
        }
    }

    #[test]
    fn fuzz_openai_bodies_are_requests_or_client_errors(body in bodies(SPEECH_FIELDS)) {
        match SpeechRequest::plan(&body, &[VOICE.to_string()]) {
            Err(err) => check_client_error(&err, &body)?,
            Ok(SpeechPlan { request, output, speed, sse }) => {
                check_text(&request.input)?;
                check_output(&output)?;
                prop_assert!((0.25..=4.0).contains(&speed));
                prop_assert_eq!(sse, request.stream_format.as_deref() == Some("sse"));
            }
        }
    }

    /// Any text at all is a message or the socket's `invalid_message`.
    #[test]
    fn fuzz_any_websocket_text_is_a_message_or_its_error(text in prop_oneof![
        any::<String>(),
        json_value().prop_map(|v| v.to_string()),
        body_bytes(json_value()).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        if let Err(err) = ClientMessage::parse(&text) {
            prop_assert!(matches!(err.code(), "invalid_message" | "invalid_parameter"), "{}", err);
            prop_assert_eq!(err.close_code(), 1008);
            prop_assert!(err.close_reason().len() <= 123);
        }
    }

    /// Messages of the protocol's fields with values of every type: read
    /// as the protocol says, the first spelling present (and not null)
    /// counting, or refused naming what is wrong.
    #[test]
    fn fuzz_websocket_messages_are_read_field_by_field(object in json_object_of(
        &["text", "context_id", "contextId", "flush", "close_context", "close_socket",
          "xi_api_key", "xi-api-key", "authorization", "voice_settings"],
        prop_oneof![
            3 => field_value(),
            1 => json_object_of(&["speed", "stability"], field_value()).prop_map(Value::Object),
        ],
    )) {
        let text = Value::Object(object.clone()).to_string();
        let first = |names: &[&str]| names.iter().find_map(|n| object.get(*n).filter(|v| !v.is_null()));
        let string_ok = |names: &[&str]| first(names).is_none_or(Value::is_string);
        let flag_ok = |name: &str| object.get(name).is_none_or(|v| v.is_null() || v.is_boolean());
        let speed = match object.get("voice_settings") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(settings)) => match settings.get("speed") {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64().map(|s| s as f32)),
                Some(_) => Err(()),
            },
            Some(_) => Err(()),
        };
        let key_fields_ok = string_ok(&["xi_api_key", "xi-api-key"])
            && (first(&["xi_api_key", "xi-api-key"]).is_some() || string_ok(&["authorization"]));
        let typed = string_ok(&["text"])
            && string_ok(&["context_id", "contextId"])
            && ["flush", "close_context", "close_socket"].into_iter().all(flag_ok)
            && key_fields_ok
            && speed.is_ok();
        let in_range = speed.is_ok_and(|s| s.is_none_or(|s| (0.25..=4.0).contains(&s)));
        match ClientMessage::parse(&text) {
            Ok(message) => {
                prop_assert!(typed && in_range, "{} read as {:?}", text, message);
                let as_string = |names: &[&str]| first(names).and_then(Value::as_str).map(str::to_string);
                prop_assert_eq!(message.text, as_string(&["text"]));
                prop_assert_eq!(message.context_id, as_string(&["context_id", "contextId"]));
                prop_assert_eq!(message.flush, object.get("flush") == Some(&Value::Bool(true)));
                prop_assert_eq!(message.close_socket, object.get("close_socket") == Some(&Value::Bool(true)));
                prop_assert_eq!(message.speed, speed.unwrap());
                let key = as_string(&["xi_api_key", "xi-api-key"]).or_else(|| {
                    as_string(&["authorization"]).map(|a| super::elevenlabs::protocol::bearer(&a).to_string())
                });
                prop_assert_eq!(message.api_key, key);
            }
            Err(SocketError::InvalidMessage(_)) => prop_assert!(!typed, "{}", text),
            // The speed is checked first: a message wrong in both ways
            // is refused for either.
            Err(SocketError::Speech(SpeechError::InvalidParameter { param, .. })) => {
                prop_assert_eq!(param, "voice_settings.speed");
                prop_assert!(speed.is_ok() && !in_range, "{}", text);
            }
            Err(other) => prop_assert!(false, "{} for {}", other, text),
        }
    }

    /// `output_format`: exactly the names the protocol lists are taken.
    #[test]
    fn fuzz_output_format_takes_exactly_the_listed_names(
        name in prop_oneof![
            any::<String>(),
            (
                prop::sample::select(&["pcm", "ulaw", "alaw", "mp3", "opus", "wav", "PCM", ""][..]),
                prop_oneof![
                    prop::sample::select(&SAMPLE_RATES[..]).prop_map(|r| r.to_string()),
                    any::<u32>().prop_map(|r| r.to_string()),
                    prop::sample::select(&["+16000", "016000", "-8000", "", "22050.0", "4294967296", " 8000"][..])
                        .prop_map(str::to_string),
                ],
                prop::option::of(prop_oneof![
                    prop::sample::select(&["32", "64", "96", "128", "192", "0", "1", "+32", "032", ""][..])
                        .prop_map(str::to_string),
                    json_string(),
                ]),
                prop::option::of(json_string()),
            )
                .prop_map(|(codec, rate, bitrate, more)| {
                    let mut name = format!("{codec}_{rate}");
                    for part in [bitrate, more].into_iter().flatten() {
                        name.push('_');
                        name.push_str(&part);
                    }
                    name
                }),
        ],
        voice_rate in prop::sample::select(&[16_000u32, 22_050, 24_000][..]),
    ) {
        let listed = listed_formats();
        match output_format(&name, voice_rate) {
            Ok(output) => {
                prop_assert!(listed.contains(&name), "{:?} was taken", name);
                check_output(&output)?;
                if output.format == AudioFormat::Pcm {
                    let rate: u32 = name["pcm_".len()..].parse().unwrap();
                    prop_assert_eq!(output.sample_rate.unwrap_or(voice_rate), rate);
                }
            }
            Err(err) => {
                prop_assert!(!listed.contains(&name), "{:?} was refused: {}", name, err);
                prop_assert_eq!(err, SocketError::UnsupportedFormat(name.clone()));
            }
        }
    }

    /// `inactivity_timeout`: 1 to 180 seconds, or the socket's
    /// `invalid_parameter`, whatever the query says.
    #[test]
    fn fuzz_inactivity_timeout_is_in_range_or_refused(value in prop::option::of(prop_oneof![
        any::<String>(),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..200).prop_map(|n| n.to_string()),
        (0u64..200).prop_map(|n| format!(" {n}\t")),
    ])) {
        match inactivity_timeout(value.as_deref()) {
            Ok(secs) => {
                prop_assert!((1..=MAX_INACTIVITY_SECS).contains(&secs));
                prop_assert!(value.is_none() || value.as_deref().is_some_and(|v| v.contains(&secs.to_string())));
            }
            Err(err) => {
                prop_assert_eq!(err.code(), "invalid_parameter");
                prop_assert_eq!(err.close_code(), 1008);
            }
        }
    }

    /// The upgrade's query, as the route reads it (an unreadable query is
    /// no query), gives a timeout and a format or the socket's error.
    #[test]
    fn fuzz_websocket_queries_give_settings_or_errors(query in prop_oneof![
        any::<String>(),
        prop::collection::vec(
            (
                prop::sample::select(&["output_format", "inactivity_timeout", "authorization", "x", "output_format%00"][..]),
                prop_oneof![json_string(), Just("pcm_16000".to_string()), Just("mp3_44100_128".to_string()), Just("%ZZ".to_string()), Just("30".to_string())],
            ),
            0..4,
        )
        .prop_map(|pairs| pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")),
    ]) {
        let query: HashMap<String, String> = serde_urlencoded::from_str(&query).unwrap_or_default();
        let timeout = inactivity_timeout(query.get("inactivity_timeout").map(String::as_str));
        let format = output_format(
            query.get("output_format").map_or(super::elevenlabs::protocol::DEFAULT_OUTPUT_FORMAT, String::as_str),
            22_050,
        );
        for err in [timeout.err(), format.err()].into_iter().flatten() {
            prop_assert_eq!(err.close_code(), 1008);
            prop_assert!(err.close_reason().len() <= 123);
        }
    }
}

/// Found by fuzzing: the reader stops at the first wrong field, and so
/// called a body cut short after one (or followed by junk) a wrong field,
/// not the broken JSON it is.
#[test]
fn a_body_that_is_not_json_is_invalid_json_whatever_its_fields() {
    for body in [
        &b"{\"captions\":1"[..],
        b"{\"text\":0.0",
        b"0\0",
        b"{\"text\": 5} x",
        b"{\"text\": \"a\", \"x\": \"\xff\"}",
        b"{\"voice_model\":0.0,\"\xc3\":null}",
    ] {
        let err = TtsRequest::plan(body).unwrap_err();
        assert_eq!(err.status_and_code().1, "invalid_json", "{err}");
    }
    let err = TtsRequest::plan(br#"{"text": 5}"#).unwrap_err();
    assert_eq!(err.status_and_code().1, "invalid_request", "{err}");
}

/// Every `output_format` name the protocol lists (docs and the error
/// message): PCM at each of piperd's rates, G.711 at 8 kHz, MP3 and Opus
/// at ElevenLabs' rates and bitrates.
fn listed_formats() -> Vec<String> {
    let mut names: Vec<String> = SAMPLE_RATES.iter().map(|r| format!("pcm_{r}")).collect();
    names.extend([
        "ulaw_8000".into(),
        "alaw_8000".into(),
        "mp3_22050_32".into(),
    ]);
    for kbps in [32, 64, 96, 128, 192] {
        names.push(format!("mp3_44100_{kbps}"));
        names.push(format!("opus_48000_{kbps}"));
    }
    names
}
