//! The Wyoming events piperd understands and sends, typed with serde.
//!
//! Field names and which of them are required follow the `wyoming` Python
//! package (1.10.2: `tts.py`, `audio.py`, `info.py`, `error.py`), which Home
//! Assistant uses on its side: its `Info.from_event` raises when a required
//! field of a program or voice is missing, so every one of them is always
//! written here, `null` where the package allows it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::codec::Frame;
use crate::speech::Speaker;

/// The voice a request asks for; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct VoiceChoice {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    /// A speaker's name, or its id; the package sends a string, other
    /// clients a number.
    #[serde(default)]
    pub speaker: Option<Speaker>,
}

#[derive(Debug, Deserialize)]
struct SynthesizeData {
    text: String,
    #[serde(default)]
    voice: Option<VoiceChoice>,
}

#[derive(Debug, Deserialize)]
struct StartData {
    #[serde(default)]
    voice: Option<VoiceChoice>,
}

#[derive(Debug, Deserialize)]
struct ChunkData {
    text: String,
}

/// An event from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Describe,
    /// A whole text; inside a stream, the same text again for servers that
    /// do not stream (ignored there).
    Synthesize {
        text: String,
        voice: Option<VoiceChoice>,
    },
    SynthesizeStart {
        voice: Option<VoiceChoice>,
    },
    SynthesizeChunk {
        text: String,
    },
    SynthesizeStop,
    /// Any other type: ignored, as the protocol asks of servers.
    Other(String),
}

/// The event types counted by name in the metrics; any other is `other`,
/// so a client cannot grow the label set.
pub const KNOWN_TYPES: &[&str] = &[
    "describe",
    "synthesize",
    "synthesize-start",
    "synthesize-chunk",
    "synthesize-stop",
];

impl Incoming {
    /// The event a frame carries, or why its data does not fit its type.
    pub fn from_frame(frame: Frame) -> Result<Incoming, String> {
        let data = Value::Object(frame.data);
        let parsed = |what: &str, err: serde_json::Error| format!("invalid {what} event: {err}");
        Ok(match frame.kind.as_str() {
            "describe" => Incoming::Describe,
            "synthesize" => {
                let d: SynthesizeData =
                    serde_json::from_value(data).map_err(|e| parsed("synthesize", e))?;
                Incoming::Synthesize {
                    text: d.text,
                    voice: d.voice,
                }
            }
            "synthesize-start" => {
                let d: StartData =
                    serde_json::from_value(data).map_err(|e| parsed("synthesize-start", e))?;
                Incoming::SynthesizeStart { voice: d.voice }
            }
            "synthesize-chunk" => {
                let d: ChunkData =
                    serde_json::from_value(data).map_err(|e| parsed("synthesize-chunk", e))?;
                Incoming::SynthesizeChunk { text: d.text }
            }
            "synthesize-stop" => Incoming::SynthesizeStop,
            _ => Incoming::Other(frame.kind),
        })
    }
}

/// Who made a program or voice, and where it comes from.
#[derive(Debug, Clone, Serialize)]
pub struct Attribution {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TtsSpeaker {
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TtsVoice {
    pub name: String,
    pub attribution: Attribution,
    pub installed: bool,
    pub description: Option<String>,
    pub version: Option<String>,
    pub languages: Vec<String>,
    /// Multi-speaker voices only; `null` for one speaker (as wyoming-piper).
    pub speakers: Option<Vec<TtsSpeaker>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TtsProgram {
    pub name: String,
    pub attribution: Attribution,
    pub installed: bool,
    pub description: Option<String>,
    pub version: Option<String>,
    pub voices: Vec<TtsVoice>,
    pub supports_synthesize_streaming: bool,
}

/// PCM format of the audio events: piperd always sends 16-bit mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    pub rate: u32,
    pub width: u16,
    pub channels: u16,
}

impl AudioFormat {
    pub fn mono16(rate: u32) -> AudioFormat {
        AudioFormat {
            rate,
            width: 2,
            channels: 1,
        }
    }

    fn fields(&self, timestamp: u64) -> Map<String, Value> {
        let mut data = Map::new();
        data.insert("rate".into(), self.rate.into());
        data.insert("width".into(), self.width.into());
        data.insert("channels".into(), self.channels.into());
        data.insert("timestamp".into(), timestamp.into());
        data
    }
}

/// An event to a client.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// The answer to `describe`: piperd's one TTS program. The other
    /// domains (asr, handle, intent, wake, mic, snd) are empty lists.
    Info(TtsProgram),
    /// `timestamp`s are milliseconds of audio since the start.
    AudioStart(AudioFormat),
    AudioChunk {
        format: AudioFormat,
        timestamp: u64,
        pcm: Bytes,
    },
    AudioStop {
        timestamp: u64,
    },
    SynthesizeStopped,
    Error {
        text: String,
        code: &'static str,
    },
}

impl Outgoing {
    pub fn into_frame(self) -> Frame {
        match self {
            Outgoing::Info(program) => {
                let mut data = Map::new();
                for domain in ["asr", "handle", "intent", "wake", "mic", "snd"] {
                    data.insert(domain.into(), Value::Array(Vec::new()));
                }
                let program = serde_json::to_value(program).expect("the info serializes");
                data.insert("tts".into(), Value::Array(vec![program]));
                Frame::new("info", data)
            }
            Outgoing::AudioStart(format) => Frame::new("audio-start", format.fields(0)),
            Outgoing::AudioChunk {
                format,
                timestamp,
                pcm,
            } => Frame {
                kind: "audio-chunk".into(),
                data: format.fields(timestamp),
                payload: pcm,
            },
            Outgoing::AudioStop { timestamp } => {
                let mut data = Map::new();
                data.insert("timestamp".into(), timestamp.into());
                Frame::new("audio-stop", data)
            }
            Outgoing::SynthesizeStopped => Frame::new("synthesize-stopped", Map::new()),
            Outgoing::Error { text, code } => {
                let mut data = Map::new();
                data.insert("text".into(), text.into());
                data.insert("code".into(), code.into());
                Frame::new("error", data)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(kind: &str, data: Value) -> Frame {
        Frame::new(kind, data.as_object().unwrap().clone())
    }

    #[test]
    fn synthesize_with_and_without_a_voice() {
        let plain = Incoming::from_frame(frame("synthesize", json!({"text": "Hi."}))).unwrap();
        assert_eq!(
            plain,
            Incoming::Synthesize {
                text: "Hi.".into(),
                voice: None
            }
        );
        let voiced = Incoming::from_frame(frame(
            "synthesize",
            json!({"text": "Hi.", "voice": {"name": "v", "speaker": "2"}, "text_format": "text"}),
        ))
        .unwrap();
        let Incoming::Synthesize { voice, .. } = voiced else {
            panic!("{voiced:?}")
        };
        let voice = voice.unwrap();
        assert_eq!(voice.name.as_deref(), Some("v"));
        assert_eq!(voice.speaker, Some(Speaker::Name("2".into())));
        // A number is taken as an id.
        let by_id = Incoming::from_frame(frame(
            "synthesize-start",
            json!({"voice": {"language": "en_US", "speaker": 1}}),
        ))
        .unwrap();
        let Incoming::SynthesizeStart { voice: Some(voice) } = by_id else {
            panic!("{by_id:?}")
        };
        assert_eq!(voice.speaker, Some(Speaker::Id(1)));
        assert_eq!(voice.language.as_deref(), Some("en_US"));
    }

    #[test]
    fn a_missing_text_is_an_error_and_an_unknown_type_is_other() {
        let err = Incoming::from_frame(frame("synthesize", json!({}))).unwrap_err();
        assert!(err.contains("text"), "{err}");
        assert!(Incoming::from_frame(frame("synthesize-chunk", json!({"text": 3}))).is_err());
        assert_eq!(
            Incoming::from_frame(frame("ping", json!({}))).unwrap(),
            Incoming::Other("ping".into())
        );
        assert_eq!(
            Incoming::from_frame(frame("synthesize-stop", json!({}))).unwrap(),
            Incoming::SynthesizeStop
        );
    }

    #[test]
    fn info_has_every_field_the_package_requires() {
        let voice = TtsVoice {
            name: "v".into(),
            attribution: Attribution {
                name: "a".into(),
                url: "u".into(),
            },
            installed: true,
            description: Some("d".into()),
            version: None,
            languages: vec!["en_US".into()],
            speakers: None,
        };
        let program = TtsProgram {
            name: "piperd".into(),
            attribution: voice.attribution.clone(),
            installed: true,
            description: None,
            version: Some("0".into()),
            voices: vec![voice],
            supports_synthesize_streaming: true,
        };
        let frame = Outgoing::Info(program).into_frame();
        assert_eq!(frame.kind, "info");
        let tts = &frame.data["tts"][0];
        for field in [
            "name",
            "attribution",
            "installed",
            "description",
            "version",
            "voices",
        ] {
            assert!(tts.get(field).is_some(), "program lacks {field}");
        }
        assert_eq!(tts["supports_synthesize_streaming"], true);
        let voice = &tts["voices"][0];
        for field in [
            "name",
            "attribution",
            "installed",
            "description",
            "version",
            "languages",
            "speakers",
        ] {
            assert!(voice.get(field).is_some(), "voice lacks {field}");
        }
        assert_eq!(frame.data["asr"], json!([]));
    }

    #[test]
    fn audio_events_carry_their_format() {
        let format = AudioFormat::mono16(22050);
        let chunk = Outgoing::AudioChunk {
            format,
            timestamp: 46,
            pcm: Bytes::from_static(&[0, 0]),
        }
        .into_frame();
        assert_eq!(chunk.kind, "audio-chunk");
        assert_eq!(
            Value::Object(chunk.data),
            json!({"rate": 22050, "width": 2, "channels": 1, "timestamp": 46})
        );
        assert_eq!(chunk.payload.len(), 2);
        let error = Outgoing::Error {
            text: "no".into(),
            code: "c",
        }
        .into_frame();
        assert_eq!(
            Value::Object(error.data),
            json!({"text": "no", "code": "c"})
        );
    }
}
