//! Fuzzing of `/process` forms: any bytes, and forms of MaryTTS's fields
//! with any values, are a request that holds every check made before
//! speech, or a client's error (a 4xx); nothing panics.

use proptest::prelude::*;

use super::{Failure, MaryRequest, RequestError};
use crate::speech::{Speech, VoiceOptions, MAX_TEXT_CHARS};
use crate::testing::fuzz::{config, json_string};

/// A form value: right ones, wrong ones, and any text, percent-encoded or
/// not.
fn value() -> impl Strategy<Value = String> {
    let right = prop::sample::select(
        &[
            "TEXT",
            "text",
            "SSML",
            "AUDIO",
            "PHONEMES",
            "WAVE_FILE",
            "wave",
            "AU_FILE",
            "en_US",
            "de_DE",
            "en_US-joe-medium",
            "cmu-slt-hsmm",
            "on",
            "ON",
            "off",
            "durScale:1.5;",
            "durScale%3A1.5%3B",
            "amount:2.0;",
            "amount:NaN",
            "amount:inf",
            "amount:1e39",
            "durScale:0.05",
            "durScale:-1",
            "amount:10.5",
            "durScale:",
            ":;:;",
            "durScale:1:2",
            "Hello+world%21",
            "%ZZ",
            "%",
            "+",
            "",
            " ",
        ][..],
    );
    prop_oneof![
        3 => right.prop_map(str::to_string),
        2 => json_string(),
        1 => json_string().prop_map(|s| serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_string()),
        1 => (1usize..4).prop_map(|n| "a".repeat(MAX_TEXT_CHARS - 1 + n)),
    ]
}

fn form() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(
        &[
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
            "effect_Robot_selected",
            "input_text",
            "x",
        ][..],
    );
    let pair = (name, value(), any::<bool>()).prop_map(|(name, value, equals)| {
        if equals || value.is_empty() {
            format!("{name}={value}")
        } else {
            name.to_string()
        }
    });
    prop_oneof![
        6 => prop::collection::vec(pair, 0..10).prop_map(|pairs| pairs.join("&").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..128),
        1 => (prop::collection::vec(any::<u8>(), 1..4), value()).prop_map(|(junk, v)| {
            // Invalid UTF-8 inside the text.
            let mut form = b"INPUT_TEXT=".to_vec();
            form.extend(junk);
            form.extend(v.into_bytes());
            form
        }),
    ]
}

/// What `/process` checks before it looks a voice up, in its order.
fn checked(form: &[u8]) -> Result<MaryRequest, Failure> {
    let request = MaryRequest::parse(form)?;
    Speech::check_text(&request.text)?;
    VoiceOptions {
        length_scale: request.length_scale,
        volume: request.volume,
        ..VoiceOptions::default()
    }
    .check_ranges()?;
    Ok(request)
}

proptest! {
    #![proptest_config(config(1024, 0))]

    #[test]
    fn fuzz_forms_are_requests_or_client_errors(form in form()) {
        match checked(&form) {
            Ok(request) => {
                prop_assert!(!request.text.trim().is_empty());
                prop_assert!(request.text.chars().count() <= MAX_TEXT_CHARS);
                for value in [request.length_scale, request.volume].into_iter().flatten() {
                    prop_assert!(value.is_finite());
                }
                for field in [&request.locale, &request.voice].into_iter().flatten() {
                    prop_assert!(!field.is_empty() && field.trim() == field);
                }
            }
            Err(failure) => {
                prop_assert!(failure.status.is_client_error(), "{:?} for {:?}", failure, String::from_utf8_lossy(&form));
                prop_assert!(!failure.message.is_empty());
            }
        }
    }

    /// The last of a repeated field counts, and a field's value is read
    /// back as it was sent, percent-encoding and all.
    #[test]
    fn fuzz_a_sent_text_is_read_back(text in ".{1,40}", before in ".{0,10}") {
        let form = serde_urlencoded::to_string([("INPUT_TEXT", &before), ("INPUT_TEXT", &text)]).unwrap();
        let request = MaryRequest::parse(form.as_bytes());
        prop_assert_eq!(request.map(|r| r.text), Ok::<_, RequestError>(text));
    }
}
