//! Fuzzing of the frame reader: from any bytes cut anywhere it reads frames
//! or stops on one [`CodecError`], never panics, never buffers more than the
//! limits allow; valid frames, however they are cut, read back whole.

use proptest::prelude::*;
use serde_json::json;
use tokio::io::{duplex, AsyncWriteExt};

use super::*;
use crate::testing::fuzz::{config, json_string, json_value, HANG_MS};
use crate::wyoming::event::{Incoming, KNOWN_TYPES};

/// The most a connection may hold: a header line, its newline, a data block
/// and a payload.
const MOST_BUFFERED: usize = MAX_LINE + 1 + MAX_DATA + MAX_PAYLOAD;

/// What a connection read until the end or its first error.
#[derive(Debug)]
struct Read {
    frames: Vec<Frame>,
    error: Option<CodecError>,
}

/// Writes `parts` one write each (the reader gets a turn between them),
/// closes, and reads frames until the end or the first error, checking the
/// buffer's bound after every frame.
fn read_parts(parts: Vec<Vec<u8>>) -> Read {
    let total: usize = parts.iter().map(Vec::len).sum();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            // Room for everything: the writer never waits for the reader,
            // which may stop early on an error.
            let (ours, mut theirs) = duplex(total + 1);
            let writer = tokio::spawn(async move {
                for part in parts {
                    theirs.write_all(&part).await.unwrap();
                    tokio::task::yield_now().await;
                }
            });
            let mut conn = Connection::new(ours);
            let mut frames = Vec::new();
            // Every frame takes at least its header's newline.
            let error = loop {
                assert!(frames.len() <= total, "more frames than bytes");
                let next = conn.read_frame().await;
                assert!(conn.buffer.len() <= MOST_BUFFERED);
                match next {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => {
                        assert!(!conn.has_partial_frame());
                        break None;
                    }
                    Err(err) => break Some(err),
                }
            };
            writer.await.unwrap();
            Read { frames, error }
        })
}

/// `bytes` cut at `cuts` (any indices, folded into its length).
fn cut(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    at.push(bytes.len());
    let mut parts = Vec::new();
    let mut from = 0;
    for to in at {
        parts.push(bytes[from..to].to_vec());
        from = to;
    }
    parts
}

/// A frame as a peer may send it.
#[derive(Debug, Clone)]
struct Sent {
    kind: String,
    /// Fields in the header's `data`.
    inline: Map<String, Value>,
    /// Fields in the data block (merged over `inline`).
    block: Map<String, Value>,
    payload: Vec<u8>,
    /// `version` and unknown header fields, which readers ignore.
    extra: bool,
}

impl Sent {
    fn bytes(&self) -> Vec<u8> {
        let block = if self.block.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&self.block).unwrap()
        };
        let mut header = json!({"type": self.kind});
        if !self.inline.is_empty() {
            header["data"] = Value::Object(self.inline.clone());
        }
        if !block.is_empty() {
            header["data_length"] = json!(block.len());
        }
        if !self.payload.is_empty() {
            header["payload_length"] = json!(self.payload.len());
        }
        if self.extra {
            header["version"] = json!(PROTOCOL_VERSION);
            header["x-unknown"] = json!([1, {"a": null}]);
        }
        let mut out = serde_json::to_vec(&header).unwrap();
        out.push(b'\n');
        out.extend(block);
        out.extend(&self.payload);
        out
    }

    /// The frame a reader makes of it: its data as serde_json reads JSON
    /// text (whose floats are read to within a bit of the last digit).
    fn frame(&self) -> Frame {
        let reread = |map: &Map<String, Value>| -> Map<String, Value> {
            serde_json::from_slice(&serde_json::to_vec(map).unwrap()).unwrap()
        };
        let mut data = reread(&self.inline);
        data.extend(reread(&self.block));
        Frame {
            kind: self.kind.clone(),
            data,
            payload: Bytes::from(self.payload.clone()),
        }
    }
}

/// Whether a value holds a float: serde_json reads floats to within a bit
/// of the last digit, so those do not read back equal.
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(fields) => fields.values().any(has_float),
        _ => false,
    }
}

fn json_map() -> impl Strategy<Value = Map<String, Value>> {
    let exact = json_value().prop_filter("no float", |v| !has_float(v));
    prop::collection::vec((json_string(), exact), 0..4)
        .prop_map(|fields| fields.into_iter().collect())
}

fn sent_frame() -> impl Strategy<Value = Sent> {
    (
        prop_oneof![
            prop::sample::select(KNOWN_TYPES).prop_map(str::to_string),
            json_string()
        ],
        json_map(),
        json_map(),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(|(kind, inline, block, payload, extra)| Sent {
            kind,
            inline,
            block,
            payload,
            extra,
        })
}

/// Pieces that make up bytes close to the protocol: header lines with
/// lengths of every kind, JSON that is not a header, newlines, anything.
fn near_frames() -> impl Strategy<Value = Vec<u8>> {
    let length = prop_oneof![
        (0u64..64).prop_map(|n| json!(n)),
        Just(json!(MAX_DATA)),
        Just(json!(MAX_DATA + 1)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!("3")),
        Just(Value::Null),
    ];
    let header = (
        prop_oneof![json_string().prop_map(Value::from), json_value()],
        prop::option::of(json_value()),
        prop::option::of(length.clone()),
        prop::option::of(length),
    )
        .prop_map(|(kind, data, data_length, payload_length)| {
            let mut header = json!({"type": kind});
            for (name, value) in [
                ("data", data),
                ("data_length", data_length),
                ("payload_length", payload_length),
            ] {
                if let Some(value) = value {
                    header[name] = value;
                }
            }
            let mut line = serde_json::to_vec(&header).unwrap();
            line.push(b'\n');
            line
        });
    let piece = prop_oneof![
        4 => header,
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => Just(b"\n".to_vec()),
        2 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config(256, HANG_MS))]

    #[test]
    fn fuzz_any_bytes_give_frames_then_an_end_or_one_error(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), near_frames()],
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let read = read_parts(cut(&bytes, &cuts));
        for frame in &read.frames {
            prop_assert!(frame.payload.len() <= MAX_PAYLOAD);
        }
        // Nothing here can fail to read or write: every error is the
        // stream's own.
        prop_assert!(!matches!(read.error, Some(CodecError::Io(_))), "{:?}", read.error);
        // The same bytes in one piece read the same.
        let whole = read_parts(vec![bytes]);
        prop_assert_eq!(&whole.frames, &read.frames);
        prop_assert_eq!(
            whole.error.map(|e| e.to_string()),
            read.error.map(|e| e.to_string())
        );
    }

    #[test]
    fn fuzz_valid_frames_read_back_whole_however_they_are_cut(
        sent in prop::collection::vec(sent_frame(), 0..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let bytes: Vec<u8> = sent.iter().flat_map(Sent::bytes).collect();
        let read = read_parts(cut(&bytes, &cuts));
        prop_assert!(read.error.is_none(), "{:?}", read.error);
        let expected: Vec<Frame> = sent.iter().map(Sent::frame).collect();
        prop_assert_eq!(read.frames, expected);
    }

    /// A frame written by [`Connection::write_frame`] reads back as it was.
    #[test]
    fn fuzz_written_frames_read_back(sent in prop::collection::vec(sent_frame(), 0..6)) {
        // Data as it comes from JSON, so that it is written as it was read.
        let frames: Vec<Frame> = sent.iter().map(Sent::frame).collect();
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let (ours, mut theirs) = duplex(1 << 20);
                let mut conn = Connection::new(ours);
                for frame in &frames {
                    conn.write_frame(frame).await.unwrap();
                }
                conn.flush().await.unwrap();
                drop(conn);
                let mut bytes = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut bytes).await.unwrap();
                bytes
            });
        let read = read_parts(vec![bytes]);
        prop_assert!(read.error.is_none(), "{:?}", read.error);
        prop_assert_eq!(read.frames, frames);
    }

    /// A length is read as the protocol says: a whole number up to its
    /// limit, else refused at once (before anything is read or allocated
    /// for it); a frame shorter than its lengths is cut off, never a frame.
    #[test]
    fn fuzz_lengths_are_checked_against_their_limits(
        field in prop::sample::select(&["data_length", "payload_length"][..]),
        length in prop_oneof![
            (0u64..40).prop_map(|n| json!(n)),
            (MAX_DATA as u64 - 2..MAX_DATA as u64 + 3).prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter_map("finite", serde_json::Number::from_f64).prop_map(Value::Number),
            json_string().prop_map(Value::from),
            Just(json!(true)),
            Just(json!([1])),
        ],
        sent in 0usize..40,
    ) {
        let mut header = Map::new();
        header.insert("type".into(), json!("x"));
        header.insert(field.into(), length.clone());
        let mut line = serde_json::to_vec(&header).unwrap();
        line.push(b'\n');
        // `sent` bytes follow: an object's worth of spaces (a valid data block).
        let follow = if sent >= 2 { format!("{{{}}}", " ".repeat(sent - 2)) } else { " ".repeat(sent) };
        line.extend(follow.as_bytes());
        let read = read_parts(vec![line]);
        match length.as_u64() {
            None if length.is_null() => prop_assert_eq!(read.frames.len(), 1, "{:?}", read),
            None => prop_assert!(
                matches!(read.error, Some(CodecError::BadLength { .. })),
                "{:?} for {}", read.error, length
            ),
            Some(n) if n > MAX_DATA as u64 => prop_assert!(
                matches!(read.error, Some(CodecError::TooLarge { length, .. }) if length == n),
                "{:?} for {}", read.error, n
            ),
            Some(n) if (n as usize) > sent => prop_assert!(
                matches!(read.error, Some(CodecError::Truncated { .. })),
                "{:?} for {} of {} bytes", read.error, n, sent
            ),
            Some(n) if field == "payload_length" => {
                prop_assert!(read.frames.first().is_some_and(|f| f.payload.len() as u64 == n), "{:?}", read);
            }
            // The data block is `sent` bytes of an object: cut short (or
            // only spaces), it is not one.
            Some(n) if n == 0 || (n as usize == sent && sent >= 2) => {
                prop_assert!(read.frames.first().is_some_and(|f| f.data.is_empty()), "{:?}", read);
            }
            Some(_) => prop_assert!(
                matches!(read.error, Some(CodecError::DataBlockNotObject(_))),
                "{:?}", read.error
            ),
        }
    }

    /// Whatever a frame's data holds, the event layer reads it or says why
    /// not; it never panics.
    #[test]
    fn fuzz_any_frame_is_an_event_or_a_reason(
        kind in prop_oneof![prop::sample::select(KNOWN_TYPES).prop_map(str::to_string), json_string()],
        data in prop_oneof![
            json_map(),
            crate::testing::fuzz::json_object_of(&["text", "voice"], json_value()),
            crate::testing::fuzz::json_object_of(
                &["text", "voice"],
                prop_oneof![
                    json_string().prop_map(Value::from),
                    crate::testing::fuzz::json_object_of(&["name", "language", "speaker"], json_value())
                        .prop_map(Value::Object),
                ],
            ),
        ],
    ) {
        let frame = Frame { kind: kind.clone(), data: data.clone(), payload: Bytes::new() };
        match Incoming::from_frame(frame) {
            Ok(Incoming::Other(other)) => prop_assert!(!KNOWN_TYPES.contains(&other.as_str())),
            Ok(Incoming::Synthesize { text, .. } | Incoming::SynthesizeChunk { text }) => {
                prop_assert_eq!(Some(&Value::from(text)), data.get("text"));
            }
            Ok(_) => {}
            Err(reason) => prop_assert!(KNOWN_TYPES.contains(&kind.as_str()), "{}", reason),
        }
    }
}

proptest! {
    #![proptest_config(config(6, HANG_MS))]

    /// Header lines around the limit: read up to it, refused past it.
    #[test]
    fn fuzz_a_header_line_is_read_up_to_its_limit(len in MAX_LINE - 2..MAX_LINE + 3) {
        let mut line = br#"{"type":"x","pad":""}"#.to_vec();
        let pad = len - line.len();
        line.splice(19..19, std::iter::repeat_n(b'a', pad));
        prop_assert_eq!(line.len(), len);
        line.push(b'\n');
        let read = read_parts(vec![line]);
        if len <= MAX_LINE {
            prop_assert!(read.error.is_none(), "{:?}", read.error);
            prop_assert_eq!(read.frames.len(), 1);
        } else {
            prop_assert!(matches!(read.error, Some(CodecError::LineTooLong)), "{:?}", read.error);
        }
    }
}
