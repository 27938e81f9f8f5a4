//! MP3 through LAME.
//!
//! Mono, CBR 64 kbps: ample for speech at the voices' rates (MPEG-2 Layer III
//! at 16-24 kHz tops out at 160 kbps), and a constant bitrate lets a player
//! that gets no length estimate the duration from the byte count.
//!
//! The stream has no Xing/LAME "Info" tag. LAME would reserve the first frame
//! for it and expects the caller to seek back and fill it in at the end,
//! which a stream cannot do; an empty tag frame would tell players the file
//! has zero frames. Without the tag a decoder cannot trim the codec delay, so
//! decoded audio starts with LAME's 576-sample encoder delay plus the
//! decoder's 529 samples of latency (about 50 ms at 22.05 kHz) and ends
//! padded to a whole frame: the same as any MP3 radio stream.

use std::num::NonZeroU32;

use bytes::Bytes;
use mp3lame_encoder::{Bitrate, Builder, FlushGap, Mode, MonoPcm, Quality, VbrMode};

use super::pcm::SampleReader;
use super::{finished_error, Encoder, FormatError};

/// Sample rates an MP3 frame can carry (MPEG-1, MPEG-2, MPEG-2.5).
const MP3_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];

/// LAME's quality/speed trade-off (0 best, 9 fastest). 2 is LAME's "-h",
/// its recommended high-quality setting; at speech rates it costs little
/// (see the `encode_cost` measurement in the tests).
const QUALITY: Quality = Quality::NearBest;

/// Room LAME asks for when flushing ("at least 7200 bytes").
const FLUSH_BUFFER: usize = 7200;

pub(super) struct Mp3Encoder {
    lame: mp3lame_encoder::Encoder,
    output_rate: u32,
    reader: SampleReader,
    samples: Vec<i16>,
    finished: bool,
}

impl Mp3Encoder {
    pub(super) fn new(sample_rate: u32) -> Result<Mp3Encoder, FormatError> {
        // The voices' rates are MP3 rates and go through untouched. Any other
        // rate is resampled by LAME's own filter to the next MP3 rate up, so
        // that no band the voice has is cut.
        let output_rate = MP3_RATES
            .into_iter()
            .find(|&rate| rate >= sample_rate)
            .unwrap_or(48_000);
        let err = |what: &str, e: mp3lame_encoder::BuildError| {
            FormatError::Encode(format!("cannot set up the MP3 encoder ({what}): {e:?}"))
        };
        let mut builder = Builder::new()
            .ok_or_else(|| FormatError::Encode("LAME could not allocate an encoder".into()))?;
        builder
            .set_num_channels(1)
            .map_err(|e| err("channels", e))?;
        builder
            .set_sample_rate(sample_rate)
            .map_err(|e| err("input rate", e))?;
        builder
            .set_output_sample_rate(NonZeroU32::new(output_rate))
            .map_err(|e| err("output rate", e))?;
        builder.set_mode(Mode::Mono).map_err(|e| err("mode", e))?;
        builder
            .set_vbr_mode(VbrMode::Off)
            .map_err(|e| err("CBR", e))?;
        builder
            .set_brate(Bitrate::Kbps64)
            .map_err(|e| err("bitrate", e))?;
        builder
            .set_quality(QUALITY)
            .map_err(|e| err("quality", e))?;
        builder
            .set_to_write_vbr_tag(false)
            .map_err(|e| err("no Info tag", e))?;
        let lame = builder.build().map_err(|e| err("parameters", e))?;
        Ok(Mp3Encoder {
            lame,
            output_rate,
            reader: SampleReader::default(),
            samples: Vec::new(),
            finished: false,
        })
    }
}

fn encode_error(e: mp3lame_encoder::EncodeError) -> FormatError {
    FormatError::Encode(format!("LAME failed: {e:?}"))
}

impl Encoder for Mp3Encoder {
    fn push(&mut self, pcm: &[u8]) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.samples.clear();
        self.reader.read(pcm, &mut self.samples);
        if self.samples.is_empty() {
            return Ok(Bytes::new());
        }
        // LAME writes whole frames as they complete and keeps the rest of the
        // samples (and its look-ahead) for the next call.
        let mut out = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(
            self.samples.len(),
        ));
        self.lame
            .encode_to_vec(MonoPcm(&self.samples), &mut out)
            .map_err(encode_error)?;
        Ok(Bytes::from(out))
    }

    fn finish(&mut self) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.finished = true;
        // `FlushGap` is lame_encode_flush: pads the last frame with silence
        // and emits everything LAME still holds.
        let mut out = Vec::with_capacity(FLUSH_BUFFER);
        self.lame
            .flush_to_vec::<FlushGap>(&mut out)
            .map_err(encode_error)?;
        Ok(Bytes::from(out))
    }

    fn output_sample_rate(&self) -> u32 {
        self.output_rate
    }
}
