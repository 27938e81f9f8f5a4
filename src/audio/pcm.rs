//! Raw PCM and streamed WAV, and turning PCM bytes into samples.

use std::io::Cursor;

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

/// Length of the WAV header written here (16-bit mono PCM).
pub const WAV_HEADER_LEN: usize = 44;

/// The header of a streamed WAV: hound writes the format, the two sizes are
/// then set to 0xFFFFFFFF ("unknown length"), which players accept.
pub fn streaming_header(sample_rate: u32) -> Bytes {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = Cursor::new(Vec::with_capacity(WAV_HEADER_LEN));
    hound::WavWriter::new(&mut cursor, spec)
        .and_then(|w| w.finalize())
        .expect("writing a header to memory cannot fail");
    let mut header = cursor.into_inner();
    debug_assert_eq!(header.len(), WAV_HEADER_LEN);
    let data_at = header.len() - 8;
    debug_assert_eq!(&header[data_at..data_at + 4], b"data");
    header[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    header[data_at + 4..data_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    Bytes::from(header)
}

/// Where a complete WAV of `len` bytes (header included) gets its two sizes,
/// the RIFF size and the data size, in place of the streaming header's.
pub fn wav_size_patches(len: u64) -> [(u64, [u8; 4]); 2] {
    let riff = len.saturating_sub(8).min(u32::MAX as u64) as u32;
    let data = len
        .saturating_sub(WAV_HEADER_LEN as u64)
        .min(u32::MAX as u64) as u32;
    [
        (4, riff.to_le_bytes()),
        (WAV_HEADER_LEN as u64 - 4, data.to_le_bytes()),
    ]
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
            header: Some(streaming_header(sample_rate)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_header_is_a_wav_header_with_unknown_sizes() {
        let header = streaming_header(22050);
        assert_eq!(header.len(), WAV_HEADER_LEN);
        assert_eq!(&header[0..4], b"RIFF");
        assert_eq!(&header[4..8], &[0xff; 4]);
        assert_eq!(&header[8..12], b"WAVE");
        assert_eq!(
            u32::from_le_bytes(header[24..28].try_into().unwrap()),
            22050
        );
        assert_eq!(&header[36..40], b"data");
        assert_eq!(&header[40..44], &[0xff; 4]);
    }

    #[test]
    fn patched_sizes_make_a_complete_wav_hound_reads() {
        let mut wav = streaming_header(16000).to_vec();
        let samples: Vec<i16> = (0..1000).map(|i| (i * 7) as i16).collect();
        wav.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        for (at, bytes) in wav_size_patches(wav.len() as u64) {
            wav[at as usize..at as usize + 4].copy_from_slice(&bytes);
        }
        let reader = hound::WavReader::new(Cursor::new(wav)).unwrap();
        assert_eq!(reader.len(), 1000);
        let read: Vec<i16> = reader.into_samples().map(|s| s.unwrap()).collect();
        assert_eq!(read, samples);
    }
}
