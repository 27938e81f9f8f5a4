//! Raw PCM and streamed WAV, and turning PCM bytes into samples.

use bytes::{Bytes, BytesMut};

use super::{finished_error, Encoder, FormatError};

/// Turns little-endian 16-bit PCM bytes into samples.
///
/// Pieces are cut by the engine's framing, not by us, so a piece may end in
/// the middle of a sample; its first byte waits here for the next piece
/// rather than being dropped or read as a whole sample.
#[derive(Debug, Default)]
pub(super) struct SampleReader {
    odd_byte: Option<u8>,
}

impl SampleReader {
    /// Appends the whole samples in `pcm` (with a byte left over from the
    /// last piece) to `out`.
    pub(super) fn read(&mut self, mut pcm: &[u8], out: &mut Vec<i16>) {
        out.reserve(pcm.len() / 2 + 1);
        if let (Some(low), Some((&high, rest))) = (self.odd_byte, pcm.split_first()) {
            out.push(i16::from_le_bytes([low, high]));
            self.odd_byte = None;
            pcm = rest;
        }
        let pairs = pcm.chunks_exact(2);
        if let [last] = pairs.remainder() {
            self.odd_byte = Some(*last);
        }
        out.extend(pairs.map(|pair| i16::from_le_bytes([pair[0], pair[1]])));
    }
}

/// PCM passed through unchanged, with the streaming WAV header first for WAV.
///
/// Having WAV and raw PCM behind [`Encoder`] too lets every format take the
/// same path through the HTTP layer.
pub(super) struct Passthrough {
    sample_rate: u32,
    /// What goes before the first sample: the WAV header, or nothing.
    header: Option<Bytes>,
    finished: bool,
}

impl Passthrough {
    pub(super) fn wav(sample_rate: u32) -> Passthrough {
        Passthrough {
            sample_rate,
            header: Some(crate::http::audio::streaming_header(sample_rate)),
            finished: false,
        }
    }

    pub(super) fn raw(sample_rate: u32) -> Passthrough {
        Passthrough {
            sample_rate,
            header: None,
            finished: false,
        }
    }
}

impl Encoder for Passthrough {
    fn push(&mut self, pcm: &[u8]) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        Ok(match self.header.take() {
            Some(header) => {
                let mut out = BytesMut::with_capacity(header.len() + pcm.len());
                out.extend_from_slice(&header);
                out.extend_from_slice(pcm);
                out.freeze()
            }
            None => Bytes::copy_from_slice(pcm),
        })
    }

    fn finish(&mut self) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.finished = true;
        // A WAV with no audio at all is still a WAV: the header alone.
        Ok(self.header.take().unwrap_or_default())
    }

    fn output_sample_rate(&self) -> u32 {
        self.sample_rate
    }
}
