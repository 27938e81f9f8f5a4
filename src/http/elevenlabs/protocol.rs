//! ElevenLabs' text-to-speech WebSocket messages, both ways, and the
//! errors a socket closes with. Pure: no socket, no speech, unit-tested.
//!
//! What a client sends is read leniently, as ElevenLabs reads it: unknown
//! fields are ignored, `context_id` may also be spelt `contextId`, and a
//! message is one JSON object. What piperd sends has the shape of
//! ElevenLabs' own: `audio` (base64), `isFinal`, `alignment`,
//! `normalizedAlignment`, and on multi-stream-input the context under both
//! spellings, since clients read one or the other (Pipecat `contextId`,
//! others `context_id`).

use std::ops::Range;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::audio::AudioFormat;
use crate::http::ApiError;
use crate::speech::encode::Output;
use crate::speech::SpeechError;

/// Largest message a client may send: the HTTP API's body limit.
pub const MAX_MESSAGE_BYTES: usize = crate::http::MAX_BODY_BYTES;
/// Largest message the transport reads whole (beyond it, the socket is
/// just cut): four times the protocol's limit.
pub const MAX_TRANSPORT_BYTES: usize = 4 * MAX_MESSAGE_BYTES;
/// Contexts open at once on one multi-stream-input socket.
pub const MAX_CONTEXTS: usize = 16;
/// `inactivity_timeout`: ElevenLabs' default and largest value, in seconds.
pub const DEFAULT_INACTIVITY_SECS: u64 = 20;
pub const MAX_INACTIVITY_SECS: u64 = 180;
/// The format ElevenLabs answers in when none is asked for.
pub const DEFAULT_OUTPUT_FORMAT: &str = "mp3_44100_128";

/// The two routes: one context per socket, or many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/text-to-speech/{voice_id}/stream-input`
    Single,
    /// `/v1/text-to-speech/{voice_id}/multi-stream-input`
    Multi,
}

impl Kind {
    /// The route label of metrics and logs (bounded: no voice id in it).
    pub fn route(self) -> &'static str {
        match self {
            Kind::Single => "/v1/text-to-speech/stream-input",
            Kind::Multi => "/v1/text-to-speech/multi-stream-input",
        }
    }
}

/// Why a socket is closed: its `error` code, its message and close code.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SocketError {
    #[error("a message must be one JSON object: {0}")]
    InvalidMessage(String),
    #[error("binary messages are not part of the protocol; send JSON text")]
    Binary,
    #[error("a message is larger than {MAX_MESSAGE_BYTES} bytes")]
    MessageTooLarge,
    #[error("more than {MAX_CONTEXTS} contexts open on one socket; close one first")]
    TooManyContexts,
    #[error("unsupported output_format {0:?}; supported here: pcm_<8000|16000|22050|24000|44100|48000>, ulaw_8000, alaw_8000, mp3_22050_32, mp3_44100_<32|64|96|128|192>, opus_48000_<32|64|96|128|192>")]
    UnsupportedFormat(String),
    #[error("missing or invalid API key (xi-api-key header, authorization query parameter, or the first message)")]
    Unauthorized,
    #[error("no input within {0} s (inactivity_timeout); send text or {{\"text\": \"\"}} to keep the socket open")]
    InputTimeout(u64),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Speech(#[from] SpeechError),
}

impl SocketError {
    /// The `error` field: stable codes, the HTTP API's for speech errors.
    pub fn code(&self) -> &'static str {
        match self {
            SocketError::InvalidMessage(_) => "invalid_message",
            SocketError::Binary => "binary_message",
            SocketError::MessageTooLarge => "message_too_large",
            SocketError::TooManyContexts => "too_many_contexts",
            SocketError::UnsupportedFormat(_) => "unsupported_format",
            SocketError::Unauthorized => "unauthorized",
            SocketError::InputTimeout(_) => "input_timeout_exceeded",
            SocketError::ShuttingDown => "shutting_down",
            SocketError::Speech(err) => ApiError::Speech(err.clone()).status_and_code().1,
        }
    }

    /// The WebSocket close code (RFC 6455): 1003 for a binary frame, 1008
    /// (policy) for whatever the client got wrong, 1013 (try again later)
    /// when the server is full, 1001 when it stops, 1011 when the engine failed.
    pub fn close_code(&self) -> u16 {
        match self {
            SocketError::Binary => 1003,
            SocketError::ShuttingDown => 1001,
            SocketError::Speech(err) => {
                let status = ApiError::Speech(err.clone()).status_and_code().0;
                match status.as_u16() {
                    503 => 1013,
                    400..=499 => 1008,
                    _ => 1011,
                }
            }
            _ => 1008,
        }
    }

    /// The error message sent before the close.
    pub fn message(&self) -> String {
        json!({"message": self.to_string(), "error": self.code(), "code": self.close_code()})
            .to_string()
    }

    /// The close frame's reason: at most 123 bytes (RFC 6455), cut at a
    /// character boundary.
    pub fn close_reason(&self) -> String {
        let mut reason = self.code().to_string();
        reason.truncate(123);
        reason
    }
}

/// The audio format of an `output_format` name, for a voice of
/// `voice_rate` Hz. The one place formats are read: more (other PCM rates,
/// µ-law, A-law) are added here.
///
/// MP3 and Opus go through piperd's encoders: MP3 at the voice's rate
/// (decoders read the rate from each frame), Opus in Ogg at 48 kHz. PCM is
/// raw s16le mono, only at the voice's own rate for now.
pub fn output_format(name: &str, voice_rate: u32) -> Result<Output, SocketError> {
    let unsupported = || SocketError::UnsupportedFormat(name.to_string());
    let mut parts = name.split('_');
    let codec = parts.next().unwrap_or_default();
    // Digits as ElevenLabs writes them: no sign, no leading zero.
    let rate: u32 = parts
        .next()
        .and_then(|r| r.parse().ok().filter(|n: &u32| n.to_string() == r))
        .ok_or_else(unsupported)?;
    let bitrate = parts.next();
    if parts.next().is_some() {
        return Err(unsupported());
    }
    let kbps = |allowed: &[&str]| bitrate.is_some_and(|b| allowed.contains(&b));
    let at = |format: AudioFormat, rate: u32| {
        // The voice's own rate needs no resampling.
        let rate = Some(rate).filter(|&rate| rate != voice_rate);
        Output::new(format, rate).map_err(|_| unsupported())
    };
    match codec {
        "pcm" if bitrate.is_none() => at(AudioFormat::Pcm, rate),
        "ulaw" if bitrate.is_none() && rate == 8000 => at(AudioFormat::Ulaw, rate),
        "alaw" if bitrate.is_none() && rate == 8000 => at(AudioFormat::Alaw, rate),
        "mp3" if rate == 22050 && kbps(&["32"]) => at(AudioFormat::Mp3, rate),
        "mp3" if rate == 44100 && kbps(&["32", "64", "96", "128", "192"]) => {
            at(AudioFormat::Mp3, rate)
        }
        // The Opus encoder makes 48 kHz itself.
        "opus" if rate == 48000 && kbps(&["32", "64", "96", "128", "192"]) => {
            Ok(AudioFormat::Opus.into())
        }
        _ => Err(unsupported()),
    }
}

/// `inactivity_timeout` in seconds: 1 to 180, 20 when absent.
pub fn inactivity_timeout(value: Option<&str>) -> Result<u64, SocketError> {
    let Some(value) = value else {
        return Ok(DEFAULT_INACTIVITY_SECS);
    };
    match value.trim().parse::<u64>() {
        Ok(secs) if (1..=MAX_INACTIVITY_SECS).contains(&secs) => Ok(secs),
        _ => Err(SpeechError::InvalidParameter {
            param: "inactivity_timeout",
            message: format!(
                "{value:?} is not a whole number of seconds from 1 to {MAX_INACTIVITY_SECS}"
            ),
        }
        .into()),
    }
}

/// One message from a client, whatever it is for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientMessage {
    /// `None` when absent or null; `""` ends the input (stream-input) or
    /// keeps a context alive (multi-stream-input).
    pub text: Option<String>,
    pub context_id: Option<String>,
    pub flush: bool,
    pub close_context: bool,
    pub close_socket: bool,
    /// `xi_api_key` / `xi-api-key`, or `authorization` (with or without
    /// `Bearer `).
    pub api_key: Option<String>,
    /// `voice_settings.speed`: 1 is the voice's own pace.
    pub speed: Option<f32>,
}

impl ClientMessage {
    pub fn parse(text: &str) -> Result<ClientMessage, SocketError> {
        let invalid = |why: String| SocketError::InvalidMessage(why);
        let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let Value::Object(object) = value else {
            return Err(invalid("not a JSON object".into()));
        };
        let string = |object: &Map<String, Value>, names: &[&str]| -> Result<_, SocketError> {
            for name in names {
                match object.get(*name) {
                    None | Some(Value::Null) => continue,
                    Some(Value::String(s)) => return Ok(Some(s.clone())),
                    Some(other) => {
                        return Err(invalid(format!("{name} must be a string, not {other}")))
                    }
                }
            }
            Ok(None)
        };
        let flag = |name: &str| -> Result<bool, SocketError> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(invalid(format!(
                    "{name} must be true or false, not {other}"
                ))),
            }
        };
        let speed = match object.get("voice_settings") {
            None | Some(Value::Null) => None,
            Some(Value::Object(settings)) => match settings.get("speed") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => n.as_f64().map(|s| s as f32),
                Some(other) => {
                    return Err(invalid(format!(
                        "voice_settings.speed must be a number, not {other}"
                    )))
                }
            },
            Some(other) => {
                return Err(invalid(format!(
                    "voice_settings must be an object, not {other}"
                )))
            }
        };
        if let Some(speed) = speed {
            if !(0.25..=4.0).contains(&speed) {
                return Err(SpeechError::InvalidParameter {
                    param: "voice_settings.speed",
                    message: format!("{speed} is outside 0.25..=4.0"),
                }
                .into());
            }
        }
        let api_key = match string(&object, &["xi_api_key", "xi-api-key"])? {
            Some(key) => Some(key),
            None => string(&object, &["authorization"])?.map(|a| bearer(&a).to_string()),
        };
        Ok(ClientMessage {
            text: string(&object, &["text"])?,
            context_id: string(&object, &["context_id", "contextId"])?,
            flush: flag("flush")?,
            close_context: flag("close_context")?,
            close_socket: flag("close_socket")?,
            api_key,
            speed,
        })
    }
}

/// A key without its `Bearer ` prefix, if it has one.
pub fn bearer(value: &str) -> &str {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim()
}

/// Per-character timing of one message's audio, in milliseconds from the
/// start of that message's audio: ElevenLabs' `alignment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharAlignment {
    pub chars: Vec<String>,
    pub char_start_times_ms: Vec<u64>,
    pub char_durations_ms: Vec<u64>,
}

impl CharAlignment {
    /// The alignment of one message whose audio is `message` (samples of
    /// the context's audio at `rate` a second), from `chars`: the characters
    /// that start in it, each with the samples it is spoken over. Times are
    /// rounded to the millisecond from the message's start; a duration stops
    /// at the message's end (the rest of the character is the next
    /// message's audio).
    pub fn of_message(chars: &[(char, Range<u64>)], message: Range<u64>, rate: u32) -> Self {
        let ms = |sample: u64| {
            let from_start = sample.clamp(message.start, message.end) - message.start;
            (from_start as f64 * 1000.0 / f64::from(rate.max(1))).round() as u64
        };
        let mut alignment = CharAlignment {
            chars: Vec::with_capacity(chars.len()),
            char_start_times_ms: Vec::with_capacity(chars.len()),
            char_durations_ms: Vec::with_capacity(chars.len()),
        };
        for (ch, samples) in chars {
            let start = ms(samples.start);
            alignment.chars.push(ch.to_string());
            alignment.char_start_times_ms.push(start);
            alignment
                .char_durations_ms
                .push(ms(samples.end).saturating_sub(start));
        }
        alignment
    }

    fn to_json(&self) -> Value {
        json!({
            "chars": self.chars,
            "charStartTimesMs": self.char_start_times_ms,
            "charDurationsMs": self.char_durations_ms,
        })
    }
}

/// An audio message. `alignment` is of the text as sent, `normalized` of
/// the text as spoken; `None` is sent as `null`, which clients accept.
pub fn audio_message(
    audio: &[u8],
    alignment: Option<&CharAlignment>,
    normalized: Option<&CharAlignment>,
    context: Option<&str>,
) -> String {
    let mut message = json!({
        "audio": base64::engine::general_purpose::STANDARD.encode(audio),
        "isFinal": null,
        "normalizedAlignment": normalized.map(CharAlignment::to_json),
        "alignment": alignment.map(CharAlignment::to_json),
    });
    with_context(&mut message, context);
    message.to_string()
}

/// The last message of a context (or of the single context).
pub fn final_message(context: Option<&str>) -> String {
    let mut message =
        json!({"audio": null, "isFinal": true, "normalizedAlignment": null, "alignment": null});
    with_context(&mut message, context);
    message.to_string()
}

fn with_context(message: &mut Value, context: Option<&str>) {
    if let Some(id) = context {
        message["contextId"] = json!(id);
        message["context_id"] = json!(id);
    }
}

/// `enable_ssml_parsing`: `true` or `false` (absent: false).
pub fn ssml_parsing(value: Option<&str>) -> Result<bool, SpeechError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(SpeechError::InvalidParameter {
            param: "enable_ssml_parsing",
            message: format!("{other:?} is neither true nor false"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_formats_map_to_the_encoders_or_are_refused() {
        let out = |format: AudioFormat, rate: Option<u32>| Ok(Output::new(format, rate).unwrap());
        assert_eq!(
            output_format("pcm_22050", 22050),
            out(AudioFormat::Pcm, None)
        );
        assert_eq!(
            output_format("pcm_16000", 22050),
            out(AudioFormat::Pcm, Some(16000))
        );
        assert_eq!(
            output_format("pcm_48000", 22050),
            out(AudioFormat::Pcm, Some(48000))
        );
        assert_eq!(
            output_format("ulaw_8000", 22050),
            out(AudioFormat::Ulaw, Some(8000))
        );
        assert_eq!(
            output_format("alaw_8000", 22050),
            out(AudioFormat::Alaw, Some(8000))
        );
        assert_eq!(
            output_format("mp3_44100_128", 22050),
            out(AudioFormat::Mp3, Some(44100))
        );
        assert_eq!(
            output_format("mp3_22050_32", 22050),
            out(AudioFormat::Mp3, None)
        );
        assert_eq!(
            output_format("opus_48000_64", 22050),
            out(AudioFormat::Opus, None)
        );
        for refused in [
            "pcm_12345",
            "pcm_22050_1",
            "mp3_22050_128",
            "mp3_44100",
            "ulaw_16000",
            "wav",
            "",
            "mp3_44100_128_x",
            // Found by fuzzing: a rate is read as written.
            "pcm_+16000",
            "pcm_016000",
            "ulaw_+8000",
        ] {
            assert_eq!(
                output_format(refused, 22050),
                Err(SocketError::UnsupportedFormat(refused.into())),
                "{refused}"
            );
        }
    }

    #[test]
    fn inactivity_timeout_is_1_to_180_seconds() {
        assert_eq!(inactivity_timeout(None), Ok(20));
        assert_eq!(inactivity_timeout(Some("180")), Ok(180));
        assert_eq!(inactivity_timeout(Some("1")), Ok(1));
        for bad in ["0", "181", "-1", "2.5", "soon"] {
            let err = inactivity_timeout(Some(bad)).unwrap_err();
            assert_eq!(err.code(), "invalid_parameter", "{bad}");
            assert_eq!(err.close_code(), 1008);
        }
    }

    #[test]
    fn client_messages_are_read_leniently_but_typed() {
        let init = ClientMessage::parse(
            r#"{"text": " ", "voice_settings": {"stability": 0.5, "speed": 1.1},
                "generation_config": {"chunk_length_schedule": [50]}, "xi_api_key": "k", "x": 1}"#,
        )
        .unwrap();
        assert_eq!(init.text.as_deref(), Some(" "));
        assert_eq!(init.speed, Some(1.1));
        assert_eq!(init.api_key.as_deref(), Some("k"));
        let multi = ClientMessage::parse(r#"{"contextId": "c1", "flush": true}"#).unwrap();
        assert_eq!(multi.context_id.as_deref(), Some("c1"));
        assert!(multi.flush && multi.text.is_none());
        let auth = ClientMessage::parse(r#"{"text": "", "authorization": "Bearer abc"}"#).unwrap();
        assert_eq!(auth.api_key.as_deref(), Some("abc"));
        let close = ClientMessage::parse(r#"{"close_socket": true, "text": null}"#).unwrap();
        assert!(close.close_socket && close.text.is_none());

        for bad in [
            "not json",
            "[1, 2]",
            r#""text""#,
            r#"{"text": 5}"#,
            r#"{"flush": "yes"}"#,
            r#"{"voice_settings": 1}"#,
        ] {
            let err = ClientMessage::parse(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_message", "{bad}");
            assert_eq!(err.close_code(), 1008);
        }
        let fast = ClientMessage::parse(r#"{"voice_settings": {"speed": 9}}"#).unwrap_err();
        assert_eq!(fast.code(), "invalid_parameter");
    }

    #[test]
    fn server_messages_have_elevenlabs_shape() {
        let audio: Value =
            serde_json::from_str(&audio_message(b"\x01\x02", None, None, None)).unwrap();
        assert_eq!(audio["audio"], "AQI=");
        assert!(audio["isFinal"].is_null());
        assert!(audio["alignment"].is_null() && audio["normalizedAlignment"].is_null());
        assert!(audio.get("contextId").is_none());

        let timing = CharAlignment {
            chars: vec!["H".into(), "i".into()],
            char_start_times_ms: vec![0, 70],
            char_durations_ms: vec![70, 90],
        };
        let multi: Value =
            serde_json::from_str(&audio_message(b"", Some(&timing), None, Some("c"))).unwrap();
        assert_eq!(multi["contextId"], "c");
        assert_eq!(multi["context_id"], "c");
        assert_eq!(multi["alignment"]["chars"], json!(["H", "i"]));
        assert_eq!(multi["alignment"]["charStartTimesMs"], json!([0, 70]));
        assert_eq!(multi["alignment"]["charDurationsMs"], json!([70, 90]));

        let last: Value = serde_json::from_str(&final_message(Some("c"))).unwrap();
        assert_eq!(last["isFinal"], true);
        assert!(last["audio"].is_null());
        assert_eq!(last["contextId"], "c");
    }

    #[test]
    fn a_message_aligns_its_characters_from_its_own_start() {
        // 1000 samples a second: samples are milliseconds. The message is
        // samples 500..900; "c" goes on past its end.
        let chars = [('a', 500..520), ('b', 520..700), ('c', 700..950)];
        let got = CharAlignment::of_message(&chars, 500..900, 1000);
        assert_eq!(got.chars, ["a", "b", "c"]);
        assert_eq!(got.char_start_times_ms, [0, 20, 200]);
        assert_eq!(got.char_durations_ms, [20, 180, 200]);
        // At 22,050 a second, to the nearest millisecond.
        let got = CharAlignment::of_message(&[('x', 22050..22072)], 22050..44100, 22050);
        assert_eq!(
            (got.char_start_times_ms[0], got.char_durations_ms[0]),
            (0, 1)
        );
    }

    #[test]
    fn errors_carry_their_code_and_close_code() {
        let timeout: Value =
            serde_json::from_str(&SocketError::InputTimeout(20).message()).unwrap();
        assert_eq!(timeout["error"], "input_timeout_exceeded");
        assert_eq!(timeout["code"], 1008);
        assert!(timeout["message"].as_str().unwrap().contains("20 s"));
        assert_eq!(SocketError::Binary.close_code(), 1003);
        let busy = SocketError::Speech(SpeechError::Overloaded { waiting: 3 });
        assert_eq!((busy.code(), busy.close_code()), ("overloaded", 1013));
        let long = SocketError::Speech(SpeechError::TextTooLong(100_001));
        assert_eq!((long.code(), long.close_code()), ("text_too_long", 1008));
        let crashed = SocketError::Speech(SpeechError::Synth(
            crate::speech::SynthError::EngineCrashed("x".into()),
        ));
        assert_eq!(crashed.close_code(), 1011);
    }
}
