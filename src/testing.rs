//! Fixtures shared by the unit tests: a voice's description, and a voices
//! folder spoken by the engine's test double.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::voices::{files_for, Fingerprint, VoiceInfo};

/// A voice as the catalog describes it, with no files behind it.
pub fn voice_info(name: &str, sample_rate: u32, speakers: &[(&str, u32)]) -> VoiceInfo {
    VoiceInfo {
        name: name.into(),
        files: files_for(std::path::Path::new("/v"), name),
        fingerprint: Fingerprint {
            model: (None, 1),
            config: (None, 1),
        },
        language: "en_US".into(),
        quality: "medium".into(),
        sample_rate,
        num_speakers: speakers.len().max(1) as u32,
        speakers: speakers.iter().map(|(n, i)| (n.to_string(), *i)).collect(),
        length_scale: 1.0,
    }
}

/// A voices folder holding voice `v`, and a configuration that has the
/// engine's test double (tests/fake_engine.py) speak it, with `vars` over
/// the defaults.
pub fn fake_engine_setup(vars: &[(&str, &str)]) -> (tempfile::TempDir, Arc<Config>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("v.onnx"), b"not read by the double").unwrap();
    std::fs::write(
        dir.path().join("v.onnx.json"),
        br#"{"audio":{"sample_rate":22050}}"#,
    )
    .unwrap();
    let double = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fake_engine.py");
    let mut env: HashMap<String, String> = [
        ("PIPER_VOICES_DIR", dir.path().to_str().unwrap()),
        ("PIPER_PYTHON", "python3"),
        ("PIPER_ENGINE", double.to_str().unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    (dir, Arc::new(Config::from_vars(&env).unwrap()))
}

/// Fuzzing with proptest: the configuration of a target, and the inputs
/// several targets share. Every target runs in `cargo test --release --lib`
/// (filter `fuzz` for them alone) with a fixed number of cases;
/// `PROPTEST_CASES=N` runs N instead, for a longer search.
pub mod fuzz {
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use serde_json::{Map, Value};

    /// `cases` cases (or `PROPTEST_CASES`), each killed after `timeout_ms`
    /// when that is not 0 (the cases then run in a child process, so that a
    /// hang fails the target instead of stalling the suite), no regression
    /// files: a failure found becomes a named test beside the target.
    pub fn config(cases: u32, timeout_ms: u32) -> Config {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases);
        Config {
            cases,
            timeout: timeout_ms,
            failure_persistence: None,
            // Shrinking a failure stops after a minute: the first failing
            // input is reported anyway.
            max_shrink_time: 60_000,
            ..Config::default()
        }
    }

    /// A bound on one case of a target whose code loops: far above what a
    /// case takes on a busy machine, so that only a hang reaches it.
    pub const HANG_MS: u32 = 30_000;

    /// A JSON scalar: every kind, edge numbers included.
    pub fn json_scalar() -> BoxedStrategy<Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop_oneof![
                any::<f64>(),
                Just(0.0),
                Just(-0.0),
                Just(1e300),
                Just(-1e300),
                Just(1e-300),
                Just(f64::MIN_POSITIVE)
            ]
            .prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
                .map(Value::Number)),
            json_string().prop_map(Value::from),
        ]
        .boxed()
    }

    /// A short string of any chars, often plain.
    pub fn json_string() -> BoxedStrategy<String> {
        prop_oneof![
            "[a-zA-Z0-9 _.-]{0,12}",
            ".{0,12}",
            any::<String>().prop_map(|s| s.chars().take(24).collect()),
        ]
        .boxed()
    }

    /// Any JSON value, nested a few levels.
    pub fn json_value() -> BoxedStrategy<Value> {
        json_scalar()
            .prop_recursive(3, 24, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                    prop::collection::vec((json_string(), inner), 0..5).prop_map(|fields| {
                        Value::Object(fields.into_iter().collect::<Map<_, _>>())
                    }),
                ]
            })
            .boxed()
    }

    /// A JSON object whose fields are `names` (each present or not) with
    /// values of any type, plus a few others: a body of the right shape with
    /// wrong, right and edge values.
    pub fn json_object_of(
        names: &'static [&'static str],
        value: impl Strategy<Value = Value> + Clone + 'static,
    ) -> BoxedStrategy<Map<String, Value>> {
        let fields = names
            .iter()
            .map(|name| prop::option::weighted(0.6, value.clone().prop_map(move |v| (*name, v))))
            .collect::<Vec<_>>();
        (
            fields,
            prop::collection::vec((json_string(), json_value()), 0..2),
        )
            .prop_map(|(fields, extra)| {
                let mut object: Map<String, Value> = extra.into_iter().collect();
                for (name, value) in fields.into_iter().flatten() {
                    object.insert(name.to_string(), value);
                }
                object
            })
            .boxed()
    }

    /// Bytes of a body: any bytes, JSON text cut short, invalid UTF-8 in a
    /// string, or whitespace, built on `valid` (the JSON of a body).
    pub fn body_bytes(
        valid: impl Strategy<Value = Value> + 'static,
    ) -> impl Strategy<Value = Vec<u8>> {
        let valid = valid
            .prop_map(|v| serde_json::to_vec(&v).expect("a value serializes"))
            .boxed();
        prop_oneof![
            4 => valid.clone(),
            1 => prop::collection::vec(any::<u8>(), 0..256),
            1 => (valid.clone(), any::<prop::sample::Index>()).prop_map(|(bytes, cut)| {
                let at = cut.index(bytes.len() + 1);
                bytes[..at].to_vec()
            }),
            1 => (valid, any::<prop::sample::Index>(), prop::collection::vec(0x80u8..=0xff, 1..4))
                .prop_map(|(mut bytes, at, bad)| {
                    // Inside a string when there is one, else anywhere.
                    let quotes: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b'"').collect();
                    let at = if quotes.is_empty() { at.index(bytes.len() + 1) } else { quotes[at.index(quotes.len())] + 1 };
                    bytes.splice(at..at, bad);
                    bytes
                }),
            1 => "[ \t\r\n]{0,4}".prop_map(String::into_bytes),
        ]
    }

    /// Text as users and language models write it: words in several
    /// scripts, numbers, money, dates, abbreviations, phonemes, marks,
    /// every kind of whitespace and control char, and any chars at all.
    pub fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(text_token(), 0..40).prop_map(|tokens| tokens.concat())
    }

    /// One token of [`text`].
    pub fn text_token() -> impl Strategy<Value = String> {
        const WORDS: &[&str] = &[
            "the",
            "river",
            "Quiet",
            "of",
            "a",
            "I",
            "in",
            "am",
            "pm",
            "St",
            "Dr",
            "vs",
            "café",
            "naïve",
            "Straße",
            "Дом",
            "日本語",
            "こんにちは",
            "😀",
            "x",
            "e.g",
            "etc",
            "Mr",
        ];
        const MARKS: &[&str] = &[
            " ",
            " ",
            " ",
            ". ",
            ", ",
            "! ",
            "? ",
            "…",
            "。",
            "、",
            "！",
            "\n",
            "\n\n",
            " \r\n \r\n",
            "\t",
            "  ",
            ".\" ",
            "; ",
            " — ",
            "",
            "...",
            ":",
            "\u{0}",
            "\u{85}",
            "\u{a0}",
            "\u{2028}",
            "(",
            ")",
            "\"",
            "'",
            "’",
            "[[",
            "]]",
            "$",
            "€",
            "£",
            "%",
            "&",
            "#",
            "/",
            "-",
            "+",
            "°",
            "@",
            "*",
        ];
        const TRIGGERS: &[&str] = &[
            "$500",
            "2024",
            "Dr.",
            "St.",
            "5 km",
            "1990s",
            "e.g.",
            "&",
            "3/4",
            "555-1234",
            "Henry VIII",
            "January 5, 2025",
            "[[ h ə ]]",
            "...",
            "(7)",
            "—",
            "2:30 PM",
            "50%",
            "example.com",
            "#1",
            "-3.5",
            "1st",
            "$5.3 billion",
            "72°F",
            "10-20",
            "MP3",
            "1,234",
            "'90s",
            "1/4",
            "$0.01",
            "12:00",
            "Jan.",
            "No. 5",
            "U.S.",
            "60 km/h",
            "3.14159",
            "1e10",
            "0x1F",
            "Apr 1",
            "9:99",
            "$",
            "99999999999999999999",
            "-0",
            "1.2.3",
            "IV.",
        ];
        prop_oneof![
            3 => prop::sample::select(WORDS).prop_map(str::to_string),
            3 => prop::sample::select(MARKS).prop_map(str::to_string),
            3 => prop::sample::select(TRIGGERS).prop_map(str::to_string),
            2 => "[0-9]{1,25}",
            1 => "[0-9]{1,6}[.,:/-][0-9]{1,6}",
            1 => "[A-Za-z]{1,12}",
            1 => ".{1,8}",
            1 => any::<char>().prop_map(String::from),
        ]
    }
}
