//! G.711 μ-law and A-law, raw or in WAV: what phone systems take (Asterisk,
//! FreeSWITCH, Twilio Media Streams).
//!
//! The codec is a few lines over a table of segments, so it is written here
//! rather than taken from a crate: the encoders follow Sun's reference
//! `g711.c` (the code behind sox, and Python's `audioop`) bit for bit. μ-law
//! codes the top 14 bits of a sample, A-law the top 13, each into 8 bits
//! with a logarithmic step; the tests compare every one of the 65,536
//! samples with `audioop`'s answer (tests/telephony.rs) and decode back here.
//!
//! In WAV, G.711 is format tag 7 (μ-law) or 6 (A-law), 8 bits a sample.
//! Such a non-PCM WAV carries an 18-byte `fmt ` chunk (`cbSize` 0) and a
//! `fact` chunk with the sample count, as the format's specification asks
//! and sox writes it: the header is [`WAV_HEADER_LEN`] bytes. Streamed, its
//! sizes and count are 0xFFFFFFFF, as for PCM WAV.

use bytes::{Bytes, BytesMut};

use super::pcm::SampleReader;
use super::{finished_error, Encoder, FormatError};

/// The two companding laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Ulaw,
    Alaw,
}

impl Law {
    /// The WAV format tag: `WAVE_FORMAT_MULAW` or `WAVE_FORMAT_ALAW`.
    fn format_tag(self) -> u16 {
        match self {
            Law::Ulaw => 7,
            Law::Alaw => 6,
        }
    }

    fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Ulaw => linear_to_ulaw(sample),
            Law::Alaw => linear_to_alaw(sample),
        }
    }
}

/// Upper ends of the μ-law segments, on 14-bit magnitudes (bias added).
const ULAW_SEGMENT_ENDS: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Upper ends of the A-law segments, on 13-bit magnitudes.
const ALAW_SEGMENT_ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
/// μ-law's bias and clip, on 14-bit magnitudes.
const ULAW_BIAS: i32 = 0x21;
const ULAW_CLIP: i32 = 8159;

fn segment(value: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|&end| value <= end).unwrap_or(8)
}

/// One 16-bit sample as μ-law (ITU-T G.711, Sun's `linear2ulaw`).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut value = i32::from(sample) >> 2;
    let mask = if value < 0 {
        value = -value;
        0x7F
    } else {
        0xFF
    };
    value = value.min(ULAW_CLIP) + ULAW_BIAS;
    let seg = segment(value, &ULAW_SEGMENT_ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    (((seg as i32) << 4 | ((value >> (seg + 1)) & 0x0F)) as u8) ^ mask
}

/// One 16-bit sample as A-law (ITU-T G.711, Sun's `linear2alaw`).
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut value = i32::from(sample) >> 3;
    let mask = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    let seg = segment(value, &ALAW_SEGMENT_ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let shift = if seg < 2 { 1 } else { seg };
    (((seg as i32) << 4 | ((value >> shift) & 0x0F)) as u8) ^ mask
}

/// One μ-law byte as a 16-bit sample (Sun's `ulaw2linear`).
pub fn ulaw_to_linear(code: u8) -> i16 {
    let code = !code;
    let t = ((i32::from(code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4);
    (if code & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// One A-law byte as a 16-bit sample (Sun's `alaw2linear`).
pub fn alaw_to_linear(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut t = i32::from(code & 0x0F) << 4;
    let seg = (code & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    (if code & 0x80 != 0 { t } else { -t }) as i16
}

/// Length of the G.711 WAV header written here.
pub const WAV_HEADER_LEN: usize = 58;
/// Where the `fact` chunk's sample count and the `data` size sit in it.
const FACT_AT: usize = 46;
const DATA_SIZE_AT: usize = 54;

/// The header of a streamed G.711 WAV: sizes and count 0xFFFFFFFF.
pub fn streaming_header(law: Law, sample_rate: u32) -> Bytes {
    let unknown = u32::MAX.to_le_bytes();
    let mut h = Vec::with_capacity(WAV_HEADER_LEN);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&unknown);
    h.extend_from_slice(b"WAVE");
    h.extend_from_slice(b"fmt ");
    h.extend_from_slice(&18u32.to_le_bytes());
    h.extend_from_slice(&law.format_tag().to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // channels
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&sample_rate.to_le_bytes()); // bytes a second
    h.extend_from_slice(&1u16.to_le_bytes()); // block align
    h.extend_from_slice(&8u16.to_le_bytes()); // bits a sample
    h.extend_from_slice(&0u16.to_le_bytes()); // cbSize
    h.extend_from_slice(b"fact");
    h.extend_from_slice(&4u32.to_le_bytes());
    h.extend_from_slice(&unknown);
    h.extend_from_slice(b"data");
    h.extend_from_slice(&unknown);
    debug_assert_eq!(h.len(), WAV_HEADER_LEN);
    Bytes::from(h)
}

/// Where a complete G.711 WAV of `len` bytes (header included) gets its
/// RIFF size, sample count and data size.
pub fn wav_size_patches(len: u64) -> [(u64, [u8; 4]); 3] {
    let clamp = |n: u64| n.min(u64::from(u32::MAX)) as u32;
    let riff = clamp(len.saturating_sub(8));
    let data = clamp(len.saturating_sub(WAV_HEADER_LEN as u64));
    [
        (4, riff.to_le_bytes()),
        // One byte a sample: the count is the data size.
        (FACT_AT as u64, data.to_le_bytes()),
        (DATA_SIZE_AT as u64, data.to_le_bytes()),
    ]
}

/// PCM to G.711, raw or after a WAV header.
pub(super) struct G711Encoder {
    law: Law,
    sample_rate: u32,
    header: Option<Bytes>,
    reader: SampleReader,
    samples: Vec<i16>,
    finished: bool,
}

impl G711Encoder {
    pub(super) fn raw(law: Law, sample_rate: u32) -> G711Encoder {
        G711Encoder {
            law,
            sample_rate,
            header: None,
            reader: SampleReader::default(),
            samples: Vec::new(),
            finished: false,
        }
    }

    pub(super) fn wav(law: Law, sample_rate: u32) -> G711Encoder {
        G711Encoder {
            header: Some(streaming_header(law, sample_rate)),
            ..G711Encoder::raw(law, sample_rate)
        }
    }
}

impl Encoder for G711Encoder {
    fn push(&mut self, pcm: &[u8]) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.samples.clear();
        self.reader.read(pcm, &mut self.samples);
        let header = self.header.take().unwrap_or_default();
        let mut out = BytesMut::with_capacity(header.len() + self.samples.len());
        out.extend_from_slice(&header);
        let law = self.law;
        out.extend(self.samples.iter().map(|&s| law.encode(s)));
        Ok(out.freeze())
    }

    fn finish(&mut self) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.finished = true;
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
    fn known_codes_of_the_standard() {
        // Silence, the largest and the smallest samples.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn every_code_decodes_to_a_sample_that_encodes_back_to_it() {
        for code in 0..=255u8 {
            // μ-law has two zeros (0x7F and 0xFF); both decode to 0.
            let back = linear_to_ulaw(ulaw_to_linear(code));
            assert!(back == code || (code == 0x7F && back == 0xFF), "{code:#x}");
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code, "{code:#x}");
        }
    }

    #[test]
    fn the_error_grows_with_the_sample_as_the_law_says() {
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let magnitude = i32::from(sample).abs();
            // A step is 1/16 of its segment: at most 1/32 of the magnitude
            // after rounding, plus the smallest step near zero.
            let bound = magnitude / 16 + 16;
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(sample)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(sample)));
            // The clip: μ-law's largest code stands for 32124.
            let clip = (magnitude - 32124).max(0);
            assert!(
                (u - i32::from(sample)).abs() <= bound + clip,
                "μ {sample}: {u}"
            );
            assert!((a - i32::from(sample)).abs() <= bound, "A {sample}: {a}");
        }
    }

    #[test]
    fn wav_header_and_sizes() {
        let header = streaming_header(Law::Alaw, 8000);
        assert_eq!(header.len(), WAV_HEADER_LEN);
        assert_eq!(&header[..4], b"RIFF");
        assert_eq!(&header[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([header[20], header[21]]), 6);
        assert_eq!(&header[38..42], b"fact");
        assert_eq!(&header[50..54], b"data");
        let mut encoder = G711Encoder::wav(Law::Ulaw, 8000);
        let mut wav = encoder.push(&[0, 0, 0xff, 0x7f, 0x00]).unwrap().to_vec();
        wav.extend_from_slice(&encoder.push(&[0x80]).unwrap());
        wav.extend_from_slice(&encoder.finish().unwrap());
        assert_eq!(u16::from_le_bytes([wav[20], wav[21]]), 7);
        assert_eq!(&wav[WAV_HEADER_LEN..], &[0xFF, 0x80, 0x00]);
        for (at, bytes) in wav_size_patches(wav.len() as u64) {
            wav[at as usize..at as usize + 4].copy_from_slice(&bytes);
        }
        let u32_at = |at: usize| u32::from_le_bytes(wav[at..at + 4].try_into().unwrap());
        assert_eq!(u32_at(4) as usize, wav.len() - 8);
        assert_eq!(u32_at(FACT_AT), 3);
        assert_eq!(u32_at(DATA_SIZE_AT), 3);
    }
}
