//! The framed stdin/stdout protocol spoken with an engine process.
//!
//! Requests go down as one JSON object per line; answers come back as binary
//! frames so that audio needs no encoding and every utterance has an explicit
//! end. `docs/engine-protocol.md` is the description for engine authors; this
//! file is the reference implementation on the server's side.
//!
//! A frame is a 12-byte header, `b"PD"`, a kind byte, a zero byte, the request
//! id (u32 LE) and the payload length (u32 LE), then the payload. Anything
//! else on stdout is a broken engine, reported as [`ProtocolError`].

use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes that open every frame.
pub const MAGIC: [u8; 2] = *b"PD";
/// Size of a frame header.
pub const HEADER_LEN: usize = 12;
/// Largest payload accepted: one sentence of audio is far below this, so a
/// bigger length means the stream is garbage, not a long utterance.
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// What a payload's buffer starts at; it grows as the bytes come.
const PAYLOAD_STEP: usize = 256 << 10;

/// Synthesis options, as the engine receives them (absent: the voice's own).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SynthOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length_scale: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_scale: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_w_scale: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentence_silence: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<f32>,
    /// Phonemes instead of audio: the one `A` frame of the answer holds them
    /// as JSON (docs/engine-protocol.md).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub phonemize: bool,
}

/// One request line.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub id: u32,
    pub text: &'a str,
    /// onnxruntime intra-op threads to synthesize it on (absent: the
    /// engine's default, every core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Whether a listener may be waiting for its start: small first decoder
    /// chunks (absent: true).
    #[serde(skip_serializing_if = "is_true")]
    pub first: bool,
    /// The text the same job most likely sends next, with the same options:
    /// the engine may make its frontend ahead, on a core this one leaves
    /// idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<&'a str>,
    /// Nothing is known to follow `next` (absent: false): the engine
    /// leaves part of its decode to its own request.
    #[serde(skip_serializing_if = "is_false")]
    pub next_last: bool,
    #[serde(flatten)]
    pub options: &'a SynthOptions,
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Request<'_> {
    /// The request as the line written to the engine's stdin.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a request always serializes");
        line.push(b'\n');
        line
    }
}

/// The line that takes request `id` back: the engine stops synthesizing it
/// and answers with [`Frame::Cancelled`] (or its usual end, if it was done).
pub fn cancel_line(id: u32) -> Vec<u8> {
    format!("{{\"cancel\":{id}}}\n").into_bytes()
}

/// What the engine says once its voice is loaded.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ReadyInfo {
    pub sample_rate: u32,
    #[serde(default)]
    pub num_speakers: u32,
    #[serde(default)]
    pub engine: String,
    #[serde(default)]
    pub load_ms: f64,
    /// Sentences the engine synthesizes at once (absent: one).
    #[serde(default = "one")]
    pub threads: u32,
    /// Whether the engine understands cancel lines.
    #[serde(default)]
    pub cancel: bool,
    /// Whether it synthesizes sentences in decoder chunks (`false`: the
    /// voice's graph could not be split, sentences come whole); absent for
    /// engines that do not say.
    #[serde(default)]
    pub chunked: Option<bool>,
    /// Whether it makes the frontend of a request's `next` sentence ahead
    /// (absent: no).
    #[serde(default)]
    pub ahead: bool,
}

fn one() -> u32 {
    1
}

/// A frame from the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Ready(ReadyInfo),
    /// 16-bit little-endian mono PCM for request `id`.
    Audio {
        id: u32,
        pcm: Bytes,
    },
    /// When each written word of request `id` is spoken (at most one,
    /// after its audio).
    Words {
        id: u32,
        words: Vec<EngineWord>,
    },
    /// Request `id` is complete.
    Done {
        id: u32,
        samples: u64,
    },
    /// Request `id` failed; `unspeakable` when the text held nothing to say.
    Error {
        id: u32,
        message: String,
        unspeakable: bool,
    },
    /// Request `id` was cancelled before it was done; its audio is void.
    Cancelled {
        id: u32,
    },
}

/// A written word of a request's text and when the engine spoke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineWord {
    /// Bytes of the request's text.
    pub text: Range<usize>,
    /// First sample and the sample after the last, from the start of the
    /// request's audio.
    pub samples: Range<u64>,
    /// Where each of its phonemes ends (increasing; the last is
    /// `samples.end`); empty when none was found for it.
    pub phonemes: Vec<u64>,
}

/// A stream that is not the protocol.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtocolError {
    #[error("engine wrote bytes that are not a frame (header {0:02x?})")]
    BadMagic([u8; 2]),
    #[error("engine wrote a frame of unknown kind {0:#04x}")]
    UnknownKind(u8),
    #[error("engine announced a frame of {0} bytes, more than any utterance")]
    Oversized(u32),
    #[error("engine sent audio with an odd number of bytes ({0}), not 16-bit samples")]
    OddAudio(usize),
    #[error("engine sent an unreadable {kind} frame: {reason}")]
    BadPayload { kind: &'static str, reason: String },
    #[error("engine output ended in the middle of a frame")]
    Truncated,
    #[error("reading engine output failed: {0}")]
    Io(String),
}

#[derive(Deserialize)]
struct DonePayload {
    #[serde(default)]
    samples: u64,
}

#[derive(Deserialize)]
struct WordsPayload {
    words: Vec<(u64, u64, u64, u64, Vec<u64>)>,
}

#[derive(Deserialize)]
struct ErrorPayload {
    #[serde(default)]
    message: String,
    #[serde(default)]
    unspeakable: bool,
}

fn json<'a, T: Deserialize<'a>>(kind: &'static str, payload: &'a [u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(payload).map_err(|e| ProtocolError::BadPayload {
        kind,
        reason: e.to_string(),
    })
}

/// Decodes one frame from its header fields and payload.
pub fn decode(kind: u8, id: u32, payload: Vec<u8>) -> Result<Frame, ProtocolError> {
    match kind {
        b'R' => Ok(Frame::Ready(json("ready", &payload)?)),
        b'A' => {
            if payload.len() % 2 != 0 {
                return Err(ProtocolError::OddAudio(payload.len()));
            }
            Ok(Frame::Audio {
                id,
                pcm: Bytes::from(payload),
            })
        }
        b'W' => {
            let payload: WordsPayload = json("words", &payload)?;
            let mut words = Vec::with_capacity(payload.words.len());
            for (start, end, first, last, phonemes) in payload.words {
                let ordered = phonemes.windows(2).all(|w| w[0] <= w[1])
                    && phonemes.first().is_none_or(|&p| p >= first)
                    && phonemes.last().is_none_or(|&p| p == last);
                if start > end || first > last || !ordered {
                    return Err(ProtocolError::BadPayload {
                        kind: "words",
                        reason: format!(
                            "a word out of order: bytes {start}..{end}, samples {first}..{last}, phonemes {phonemes:?}"
                        ),
                    });
                }
                words.push(EngineWord {
                    text: start as usize..end as usize,
                    samples: first..last,
                    phonemes,
                });
            }
            Ok(Frame::Words { id, words })
        }
        b'D' => {
            let done: DonePayload = json("done", &payload)?;
            Ok(Frame::Done {
                id,
                samples: done.samples,
            })
        }
        b'X' => {
            let err: ErrorPayload = json("error", &payload)?;
            Ok(Frame::Error {
                id,
                message: err.message,
                unspeakable: err.unspeakable,
            })
        }
        b'C' => Ok(Frame::Cancelled { id }),
        other => Err(ProtocolError::UnknownKind(other)),
    }
}

/// Reads the next frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Frame>, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader
            .read(&mut header[filled..])
            .await
            .map_err(|e| ProtocolError::Io(e.to_string()))?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(ProtocolError::Truncated)
            };
        }
        filled += n;
    }
    if header[..2] != MAGIC {
        return Err(ProtocolError::BadMagic([header[0], header[1]]));
    }
    let kind = header[2];
    let id = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::Oversized(len));
    }
    // Memory for what arrives, not for what the header promises: a garbled
    // length costs no more than the bytes that came.
    let mut payload = Vec::with_capacity((len as usize).min(PAYLOAD_STEP));
    let read = (&mut *reader)
        .take(u64::from(len))
        .read_to_end(&mut payload)
        .await
        .map_err(|e| ProtocolError::Io(e.to_string()))?;
    if read < len as usize {
        return Err(ProtocolError::Truncated);
    }
    decode(kind, id, payload).map(Some)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::from(MAGIC);
        out.push(kind);
        out.push(0);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    async fn read_all(bytes: Vec<u8>) -> Vec<Result<Option<Frame>, ProtocolError>> {
        let mut reader = std::io::Cursor::new(bytes);
        let mut out = Vec::new();
        loop {
            let next = read_frame(&mut reader).await;
            let stop = !matches!(next, Ok(Some(_)));
            out.push(next);
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn reads_a_whole_conversation() {
        let mut bytes = frame(b'R', 0, br#"{"sample_rate":22050,"num_speakers":1}"#);
        bytes.extend(frame(b'A', 7, &[1, 0, 2, 0]));
        bytes.extend(frame(b'D', 7, br#"{"samples":2}"#));
        bytes.extend(frame(b'C', 9, b""));
        bytes.extend(frame(
            b'X',
            8,
            br#"{"message":"nothing speakable","unspeakable":true}"#,
        ));
        let frames = read_all(bytes).await;
        assert_eq!(frames.len(), 6);
        assert!(matches!(&frames[0], Ok(Some(Frame::Ready(r))) if r.sample_rate == 22050));
        assert_eq!(
            frames[1],
            Ok(Some(Frame::Audio {
                id: 7,
                pcm: Bytes::from_static(&[1, 0, 2, 0])
            }))
        );
        assert_eq!(frames[2], Ok(Some(Frame::Done { id: 7, samples: 2 })));
        assert_eq!(frames[3], Ok(Some(Frame::Cancelled { id: 9 })));
        assert!(matches!(
            &frames[4],
            Ok(Some(Frame::Error {
                id: 8,
                unspeakable: true,
                ..
            }))
        ));
        assert_eq!(frames[5], Ok(None));
    }

    #[test]
    fn words_are_byte_ranges_and_sample_ranges() {
        let frame = decode(
            b'W',
            3,
            br#"{"words":[[0,5,1024,7000,[3000,7000]],[6,11,7400,9000,[]]]}"#.to_vec(),
        );
        assert_eq!(
            frame,
            Ok(Frame::Words {
                id: 3,
                words: vec![
                    EngineWord {
                        text: 0..5,
                        samples: 1024..7000,
                        phonemes: vec![3000, 7000],
                    },
                    EngineWord {
                        text: 6..11,
                        samples: 7400..9000,
                        phonemes: Vec::new(),
                    },
                ],
            })
        );
        for bad in [
            &br#"{"words":[[5,0,1,2,[]]]}"#[..],
            br#"{"words":[[0,5,9,2,[]]]}"#,
            br#"{"words":[[0,5,1,[]]]}"#,
            br#"{"words":[[0,-5,1,2,[]]]}"#,
            br#"{"words":[[0,5,1,9,[5,4,9]]]}"#,
            br#"{"words":[[0,5,1,9,[5,8]]]}"#,
        ] {
            assert!(
                matches!(
                    decode(b'W', 3, bad.to_vec()),
                    Err(ProtocolError::BadPayload { kind: "words", .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_hang() {
        let frames = read_all(b"Traceback (most recent call last):\n".to_vec()).await;
        assert_eq!(frames[0], Err(ProtocolError::BadMagic(*b"Tr")));
    }

    #[tokio::test]
    async fn truncation_is_detected_in_header_and_payload() {
        assert_eq!(
            read_all(b"PDA".to_vec()).await[0],
            Err(ProtocolError::Truncated)
        );
        let mut cut = frame(b'A', 1, &[0; 100]);
        cut.truncate(50);
        assert_eq!(read_all(cut).await[0], Err(ProtocolError::Truncated));
    }

    #[tokio::test]
    async fn wrong_sample_format_and_sizes_are_rejected() {
        let odd = read_all(frame(b'A', 1, &[0; 3])).await;
        assert_eq!(odd[0], Err(ProtocolError::OddAudio(3)));
        let mut huge = frame(b'A', 1, &[]);
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            read_all(huge).await[0],
            Err(ProtocolError::Oversized(u32::MAX))
        );
        assert_eq!(
            read_all(frame(b'Z', 1, &[])).await[0],
            Err(ProtocolError::UnknownKind(b'Z'))
        );
        assert!(matches!(
            read_all(frame(b'D', 1, b"{not json")).await[0],
            Err(ProtocolError::BadPayload { kind: "done", .. })
        ));
    }

    #[test]
    fn request_lines_carry_only_the_options_given() {
        let options = SynthOptions {
            length_scale: Some(1.5),
            ..Default::default()
        };
        let line = Request {
            id: 3,
            text: "Hi \"there\"",
            threads: None,
            first: true,
            next: None,
            next_last: false,
            options: &options,
        }
        .to_line();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"id\":3,\"text\":\"Hi \\\"there\\\"\",\"length_scale\":1.5}\n"
        );
        let shared = Request {
            id: 5,
            text: "Hi",
            threads: Some(1),
            first: false,
            next: Some("Bye."),
            next_last: true,
            options: &SynthOptions::default(),
        }
        .to_line();
        assert_eq!(
            shared,
            b"{\"id\":5,\"text\":\"Hi\",\"threads\":1,\"first\":false,\"next\":\"Bye.\",\"next_last\":true}\n"
        );
        assert_eq!(cancel_line(4), b"{\"cancel\":4}\n");
    }
}
