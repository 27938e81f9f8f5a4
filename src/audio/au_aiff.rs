//! Sun AU and AIFF: 16-bit PCM, big-endian, behind a header.
//!
//! What the MaryTTS server answers for `AUDIO=AU_FILE` and `AIFF_FILE`,
//! and what older tools on Unix and the Mac read without a WAV decoder.
//!
//! - AU: a 24-byte header (`.snd`, data offset, data size, encoding 3 for
//!   16-bit linear PCM, sample rate, channels), every field a big-endian
//!   32-bit word; a data size of 0xFFFFFFFF is the format's own "unknown
//!   size", so a streamed AU is a valid one.
//! - AIFF: a `FORM` container of a `COMM` chunk (channels, sample frames,
//!   sample size, and the rate as an 80-bit IEEE 754 extended number) and
//!   an `SSND` chunk holding the samples. A streamed AIFF says 0xFFFFFFFF
//!   for the sizes it cannot know yet, as a streamed WAV does; a complete
//!   one gets its exact sizes from [`aiff_size_patches`].

use bytes::{Bytes, BytesMut};

use super::pcm::SampleReader;
use super::{finished_error, Encoder, FormatError};

/// Length of the AU header written here.
pub const AU_HEADER_LEN: usize = 24;
/// Length of the AIFF header written here, up to the first sample.
pub const AIFF_HEADER_LEN: usize = 54;
/// AU's encoding number for 16-bit linear PCM.
const AU_LINEAR_16: u32 = 3;
/// Where the AU data size sits.
const AU_DATA_SIZE_AT: u64 = 8;
/// Where the AIFF sizes sit: the `FORM` size, the `COMM` frame count and
/// the `SSND` size.
const AIFF_FORM_SIZE_AT: u64 = 4;
const AIFF_FRAMES_AT: u64 = 22;
const AIFF_SSND_SIZE_AT: u64 = 42;

/// The header of an AU file of unknown length.
pub fn au_header(sample_rate: u32) -> Bytes {
    let mut h = Vec::with_capacity(AU_HEADER_LEN);
    h.extend_from_slice(b".snd");
    for word in [
        AU_HEADER_LEN as u32,
        u32::MAX,
        AU_LINEAR_16,
        sample_rate,
        1, // channels
    ] {
        h.extend_from_slice(&word.to_be_bytes());
    }
    debug_assert_eq!(h.len(), AU_HEADER_LEN);
    Bytes::from(h)
}

/// The header of an AIFF file of unknown length.
pub fn aiff_header(sample_rate: u32) -> Bytes {
    let unknown = u32::MAX.to_be_bytes();
    let mut h = Vec::with_capacity(AIFF_HEADER_LEN);
    h.extend_from_slice(b"FORM");
    h.extend_from_slice(&unknown);
    h.extend_from_slice(b"AIFF");
    h.extend_from_slice(b"COMM");
    h.extend_from_slice(&18u32.to_be_bytes());
    h.extend_from_slice(&1u16.to_be_bytes()); // channels
    h.extend_from_slice(&unknown); // sample frames
    h.extend_from_slice(&16u16.to_be_bytes()); // bits a sample
    h.extend_from_slice(&extended(sample_rate));
    h.extend_from_slice(b"SSND");
    h.extend_from_slice(&unknown);
    h.extend_from_slice(&0u32.to_be_bytes()); // offset
    h.extend_from_slice(&0u32.to_be_bytes()); // block size
    debug_assert_eq!(h.len(), AIFF_HEADER_LEN);
    Bytes::from(h)
}

/// A whole number as an 80-bit IEEE 754 extended number, big-endian: a
/// sign and 15-bit exponent (bias 16383), then a 64-bit mantissa with its
/// integer bit written out.
fn extended(value: u32) -> [u8; 10] {
    let mut out = [0u8; 10];
    if value == 0 {
        return out;
    }
    let bits = 32 - value.leading_zeros();
    let exponent = 16383 + (bits - 1) as u16;
    let mantissa = u64::from(value) << (64 - bits);
    out[..2].copy_from_slice(&exponent.to_be_bytes());
    out[2..].copy_from_slice(&mantissa.to_be_bytes());
    out
}

/// Where a complete AU of `len` bytes (header included) gets its data size.
pub fn au_size_patches(len: u64) -> [(u64, [u8; 4]); 1] {
    let data = clamp(len.saturating_sub(AU_HEADER_LEN as u64));
    [(AU_DATA_SIZE_AT, data.to_be_bytes())]
}

/// Where a complete AIFF of `len` bytes (header included) gets its `FORM`
/// size, its sample frames and its `SSND` size.
pub fn aiff_size_patches(len: u64) -> [(u64, [u8; 4]); 3] {
    let data = len.saturating_sub(AIFF_HEADER_LEN as u64);
    [
        (
            AIFF_FORM_SIZE_AT,
            clamp(len.saturating_sub(8)).to_be_bytes(),
        ),
        (AIFF_FRAMES_AT, clamp(data / 2).to_be_bytes()),
        // The chunk holds its offset and block size, then the samples.
        (AIFF_SSND_SIZE_AT, clamp(data + 8).to_be_bytes()),
    ]
}

fn clamp(n: u64) -> u32 {
    n.min(u64::from(u32::MAX)) as u32
}

/// PCM to big-endian samples after an AU or AIFF header.
pub(super) struct BigEndianEncoder {
    sample_rate: u32,
    header: Option<Bytes>,
    reader: SampleReader,
    samples: Vec<i16>,
    finished: bool,
}

impl BigEndianEncoder {
    pub(super) fn au(sample_rate: u32) -> BigEndianEncoder {
        BigEndianEncoder::new(sample_rate, au_header(sample_rate))
    }

    pub(super) fn aiff(sample_rate: u32) -> BigEndianEncoder {
        BigEndianEncoder::new(sample_rate, aiff_header(sample_rate))
    }

    fn new(sample_rate: u32, header: Bytes) -> BigEndianEncoder {
        BigEndianEncoder {
            sample_rate,
            header: Some(header),
            reader: SampleReader::default(),
            samples: Vec::new(),
            finished: false,
        }
    }
}

impl Encoder for BigEndianEncoder {
    fn push(&mut self, pcm: &[u8]) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.samples.clear();
        self.reader.read(pcm, &mut self.samples);
        let header = self.header.take().unwrap_or_default();
        let mut out = BytesMut::with_capacity(header.len() + 2 * self.samples.len());
        out.extend_from_slice(&header);
        for sample in &self.samples {
            out.extend_from_slice(&sample.to_be_bytes());
        }
        Ok(out.freeze())
    }

    fn finish(&mut self) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.finished = true;
        // A file of no audio is still a file: the header alone.
        Ok(self.header.take().unwrap_or_default())
    }

    fn output_sample_rate(&self) -> u32 {
        self.sample_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(mut encoder: BigEndianEncoder, samples: &[i16]) -> Vec<u8> {
        let pcm: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = Vec::new();
        // Pieces of odd lengths: a sample cut in two is still one sample.
        for piece in pcm.chunks(7) {
            out.extend_from_slice(&encoder.push(piece).unwrap());
        }
        out.extend_from_slice(&encoder.finish().unwrap());
        out
    }

    fn patch(bytes: &mut [u8], patches: &[(u64, [u8; 4])]) {
        for (at, value) in patches {
            bytes[*at as usize..*at as usize + 4].copy_from_slice(value);
        }
    }

    fn be32(bytes: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn the_rate_as_an_80_bit_extended_number() {
        // Values as AIFF files and Apple's reference write them.
        assert_eq!(extended(22_050), [0x40, 0x0D, 0xAC, 0x44, 0, 0, 0, 0, 0, 0]);
        assert_eq!(extended(44_100), [0x40, 0x0E, 0xAC, 0x44, 0, 0, 0, 0, 0, 0]);
        assert_eq!(extended(8_000), [0x40, 0x0B, 0xFA, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(extended(1), [0x3F, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn au_is_a_header_then_big_endian_samples() {
        let samples = [0i16, 1, -2, 0x1234, i16::MIN, i16::MAX];
        let mut au = encode(BigEndianEncoder::au(16_000), &samples);
        assert_eq!(&au[..4], b".snd");
        assert_eq!(be32(&au, 4), 24);
        assert_eq!(be32(&au, 8), u32::MAX, "unknown while streamed");
        assert_eq!(be32(&au, 12), 3);
        assert_eq!(be32(&au, 16), 16_000);
        assert_eq!(be32(&au, 20), 1);
        let patches = au_size_patches(au.len() as u64);
        patch(&mut au, &patches);
        assert_eq!(be32(&au, 8), 12);
        let read: Vec<i16> = au[24..]
            .chunks(2)
            .map(|p| i16::from_be_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(read, samples);
    }

    #[test]
    fn aiff_chunks_and_sizes() {
        let samples: Vec<i16> = (0..1001).map(|i| (i * 31 - 9000) as i16).collect();
        let mut aiff = encode(BigEndianEncoder::aiff(22_050), &samples);
        let patches = aiff_size_patches(aiff.len() as u64);
        patch(&mut aiff, &patches);
        assert_eq!(&aiff[..4], b"FORM");
        assert_eq!(be32(&aiff, 4) as usize, aiff.len() - 8);
        assert_eq!(&aiff[8..16], b"AIFFCOMM");
        assert_eq!(be32(&aiff, 16), 18);
        assert_eq!(&aiff[20..22], &[0, 1]);
        assert_eq!(be32(&aiff, 22), 1001);
        assert_eq!(&aiff[26..28], &[0, 16]);
        assert_eq!(&aiff[28..38], &extended(22_050));
        assert_eq!(&aiff[38..42], b"SSND");
        // The SSND chunk ends where the file does.
        assert_eq!(be32(&aiff, 42) as usize, aiff.len() - 46);
        let read: Vec<i16> = aiff[54..]
            .chunks(2)
            .map(|p| i16::from_be_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(read, samples);
        // No audio: the header alone, sizes of nothing.
        let mut empty = encode(BigEndianEncoder::aiff(8_000), &[]);
        let patches = aiff_size_patches(empty.len() as u64);
        patch(&mut empty, &patches);
        assert_eq!(empty.len(), AIFF_HEADER_LEN);
        assert_eq!(be32(&empty, 22), 0);
        assert_eq!(be32(&empty, 42), 8);
    }
}
