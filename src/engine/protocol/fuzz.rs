//! Fuzzing of the engine's frame decoder: from any bytes, arriving in any
//! pieces, it reads frames or stops on a [`ProtocolError`], never panics,
//! and never takes memory for a payload before its bytes have come.

use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::prelude::*;
use serde_json::json;
use tokio::io::ReadBuf;

use super::*;
use crate::testing::fuzz::{config, json_value};

/// Engine output arriving `step` bytes (at most) a read, that notes the
/// largest buffer a read offered it: what the decoder had allocated.
struct Meter {
    bytes: Vec<u8>,
    at: usize,
    step: usize,
    largest_offer: usize,
}

impl AsyncRead for Meter {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        me.largest_offer = me.largest_offer.max(buf.remaining());
        let n = buf.remaining().min(me.step).min(me.bytes.len() - me.at);
        buf.put_slice(&me.bytes[me.at..me.at + n]);
        me.at += n;
        Poll::Ready(Ok(()))
    }
}

/// Every frame until the end or the first error, and the largest buffer
/// offered to a read.
fn read_all(bytes: Vec<u8>, step: usize) -> (Vec<Frame>, Option<ProtocolError>, usize) {
    let total = bytes.len();
    let mut meter = Meter {
        bytes,
        at: 0,
        step: step.max(1),
        largest_offer: 0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut frames = Vec::new();
    let error = runtime.block_on(async {
        loop {
            // Every frame takes at least its header.
            assert!(frames.len() * HEADER_LEN <= total);
            match read_frame(&mut meter).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return None,
                Err(err) => return Some(err),
            }
        }
    });
    (frames, error, meter.largest_offer)
}

fn frame(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::from(MAGIC);
    out.extend([kind, 0]);
    out.extend(id.to_le_bytes());
    out.extend((payload.len() as u32).to_le_bytes());
    out.extend(payload);
    out
}

/// A payload that may be a frame's JSON, right or wrong.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let word = (
        0u64..50,
        0u64..50,
        0u64..5000,
        0u64..5000,
        prop::collection::vec(0u64..5000, 0..4),
    )
        .prop_map(|(a, b, c, d, p)| json!([a, b, c, d, p]));
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(word, 0..4)
            .prop_map(|w| serde_json::to_vec(&json!({"words": w})).unwrap()),
        (any::<u64>(), any::<bool>()).prop_map(|(n, b)| {
            serde_json::to_vec(
                &json!({"samples": n, "sample_rate": n, "message": "m", "unspeakable": b}),
            )
            .unwrap()
        }),
    ]
}

/// Frames with every kind, right or wrong payloads, and lengths that do or
/// do not match what follows.
fn near_frames() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![prop::sample::select(&b"RAWDXC"[..]), any::<u8>(),];
    let one = (
        kind,
        any::<u32>(),
        payload(),
        prop::option::weighted(0.2, any::<u32>()),
    )
        .prop_map(|(kind, id, payload, lie)| {
            let mut bytes = frame(kind, id, &payload);
            if let Some(len) = lie {
                bytes[8..12].copy_from_slice(&len.to_le_bytes());
            }
            bytes
        });
    let piece = prop_oneof![4 => one, 1 => prop::collection::vec(any::<u8>(), 0..16)];
    prop::collection::vec(piece, 0..6).prop_map(|p| p.concat())
}

/// The most a read may be offered after `delivered` bytes: the first
/// buffer, and then a doubling of what came.
fn bound(delivered: usize) -> usize {
    PAYLOAD_STEP.max(2 * delivered + 64)
}

proptest! {
    #![proptest_config(config(512, 0))]

    #[test]
    fn fuzz_any_bytes_give_frames_then_an_end_or_one_error(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..512), near_frames()],
        step in 1usize..40,
    ) {
        let total = bytes.len();
        let (frames, error, largest) = read_all(bytes.clone(), step);
        prop_assert!(!matches!(error, Some(ProtocolError::Io(_))), "{:?}", error);
        prop_assert!(largest <= bound(total), "a read was offered {} bytes of {}", largest, total);
        for frame in &frames {
            if let Frame::Audio { pcm, .. } = frame {
                prop_assert!(pcm.len() % 2 == 0);
            }
            if let Frame::Words { words, .. } = frame {
                for word in words {
                    prop_assert!(word.text.start <= word.text.end);
                    prop_assert!(word.samples.start <= word.samples.end);
                }
            }
        }
        // Read in one piece, the same.
        let (whole, whole_error, _) = read_all(bytes, usize::MAX);
        prop_assert_eq!(whole, frames);
        prop_assert_eq!(whole_error, error);
    }

    /// A header's length, whatever it says, costs memory only for the bytes
    /// that follow it: over the limit it is refused, short it is truncated.
    #[test]
    fn fuzz_a_length_field_allocates_nothing_ahead_of_its_bytes(
        kind in prop::sample::select(&b"RAWDXC"[..]),
        len in prop_oneof![any::<u32>(), MAX_PAYLOAD - 2..MAX_PAYLOAD + 3, 0u32..4096],
        sent in 0usize..4096,
        step in prop_oneof![Just(usize::MAX), 1usize..4096],
    ) {
        let mut bytes = frame(kind, 1, &vec![b' '; sent]);
        bytes[8..12].copy_from_slice(&len.to_le_bytes());
        let (frames, error, largest) = read_all(bytes, step);
        prop_assert!(largest <= bound(sent + HEADER_LEN), "a read was offered {} bytes", largest);
        if len > MAX_PAYLOAD {
            prop_assert_eq!(error, Some(ProtocolError::Oversized(len)));
        } else if len as usize > sent {
            prop_assert_eq!(error, Some(ProtocolError::Truncated));
        } else {
            // The payload is `len` spaces: right for audio (when even) and
            // a cancel, not JSON for the others; the rest is no header.
            let first = frames.first().map(Ok).or(error.as_ref().map(Err));
            match kind {
                b'A' if len % 2 == 0 => prop_assert!(matches!(first, Some(Ok(Frame::Audio { pcm, .. })) if pcm.len() == len as usize), "{:?}", first),
                b'A' => prop_assert_eq!(first, Some(Err(&ProtocolError::OddAudio(len as usize)))),
                b'C' => prop_assert_eq!(first, Some(Ok(&Frame::Cancelled { id: 1 }))),
                _ => prop_assert!(matches!(first, Some(Err(ProtocolError::BadPayload { .. }))), "{:?}", first),
            }
        }
    }

    /// Words in order decode to the same words; any disorder is refused.
    #[test]
    fn fuzz_words_decode_only_in_order(
        words in prop::collection::vec(
            (0u64..100, 0u64..100, 0u64..10_000, 0u64..10_000, prop::collection::vec(0u64..10_000, 0..5)),
            0..6,
        ),
    ) {
        let payload = serde_json::to_vec(&json!({"words": words})).unwrap();
        let decoded = decode(b'W', 4, payload);
        let ordered = words.iter().all(|(start, end, first, last, phonemes)| {
            start <= end
                && first <= last
                && phonemes.windows(2).all(|w| w[0] <= w[1])
                && phonemes.first().is_none_or(|p| p >= first)
                && phonemes.last().is_none_or(|p| p == last)
        });
        if ordered {
            let expected: Vec<EngineWord> = words
                .into_iter()
                .map(|(start, end, first, last, phonemes)| EngineWord {
                    text: start as usize..end as usize,
                    samples: first..last,
                    phonemes,
                })
                .collect();
            prop_assert_eq!(decoded, Ok(Frame::Words { id: 4, words: expected }));
        } else {
            prop_assert!(matches!(decoded, Err(ProtocolError::BadPayload { kind: "words", .. })), "{:?}", decoded);
        }
    }
}
