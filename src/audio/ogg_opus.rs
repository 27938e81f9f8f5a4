//! Opus in Ogg (RFC 7845), as browsers play it.
//!
//! The stream is laid out as the RFC asks:
//!
//! - page 0: the `OpusHead` packet alone (beginning-of-stream flag), with the
//!   pre-skip: libopus's look-ahead, in 48 kHz samples;
//! - page 1: the `OpusTags` packet alone (vendor string, one `ENCODER` tag);
//! - audio pages: one 20 ms Opus packet per 960 granule units. A page's
//!   granule position is the number of 48 kHz samples decoded up to the end
//!   of its last packet, pre-skip included; a page ends after each push (so
//!   a sentence goes out as soon as it is encoded) and at least every second
//!   (so a player can seek and a page never waits for long);
//! - the last page has the end-of-stream flag, and its granule position is
//!   pre-skip plus the input's length at 48 kHz. That is less than the
//!   samples its packets decode to: the silence padding the last frame (and
//!   the look-ahead) is trimmed by players, so the decoded duration is the
//!   input's exactly.
//!
//! libopus takes 8, 12, 16, 24 or 48 kHz; a voice at another rate (the
//! bundled one is 22.05 kHz) is resampled to 48 kHz first. Mono, VBR around
//! 32 kbps, application "audio" with the signal hint "voice": TTS output is
//! listened to, not a call, so fidelity wins over the VoIP mode's
//! intelligibility processing. The bandwidth is capped at the input's
//! Nyquist band, since there is nothing above it to spend bits on.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use bytes::Bytes;
use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use opus::{Application, Bandwidth, Bitrate, Channels, Signal};

use super::pcm::SampleReader;
use super::resample::Resampler;
use super::{finished_error, Encoder, FormatError};

/// Ogg Opus granule positions always count 48 kHz samples.
const GRANULE_RATE: u32 = 48_000;
/// Samples per packet at 48 kHz: 20 ms, the usual Opus frame.
const FRAME_48K: u64 = 960;
/// End a page after this many packets at the latest: one second.
const PACKETS_PER_PAGE: usize = 50;
/// Target bitrate: transparent-sounding speech for mono at this rate.
const BITRATE: i32 = 32_000;
/// Room for one packet; libopus's recommended maximum.
const MAX_PACKET: usize = 4000;
/// Rates libopus encodes directly.
const OPUS_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

pub(super) struct OggOpusEncoder {
    /// The libopus state is `Send` but not `Sync`; the mutex makes the
    /// encoder `Sync` at no cost, since `&mut self` reaches it with `get_mut`.
    opus: Mutex<opus::Encoder>,
    /// Present when the input rate is not one libopus takes.
    resampler: Option<Resampler>,
    /// The rate libopus is fed at, and one frame at that rate.
    codec_rate: u32,
    frame_len: usize,
    pre_skip: u64,
    reader: SampleReader,
    samples: Vec<i16>,
    /// Samples at the codec rate not yet encoded (less than a frame between
    /// pushes).
    pending: Vec<f32>,
    /// Samples appended to `pending` so far, at the codec rate.
    codec_count: u64,
    ogg: PacketWriter<'static, Vec<u8>>,
    serial: u32,
    packets: u64,
    packets_in_page: usize,
    packet_buf: Vec<u8>,
    finished: bool,
}

fn opus_error(what: &str, e: opus::Error) -> FormatError {
    FormatError::Encode(format!("Opus {what}: {e}"))
}

fn ogg_error(e: std::io::Error) -> FormatError {
    FormatError::Encode(format!("cannot write an Ogg page: {e}"))
}

impl OggOpusEncoder {
    pub(super) fn new(input_rate: u32) -> Result<OggOpusEncoder, FormatError> {
        let (codec_rate, resampler) = if OPUS_RATES.contains(&input_rate) {
            (input_rate, None)
        } else {
            (
                GRANULE_RATE,
                Some(Resampler::new(input_rate, GRANULE_RATE)?),
            )
        };
        let mut opus = opus::Encoder::new(codec_rate, Channels::Mono, Application::Audio)
            .map_err(|e| opus_error("encoder", e))?;
        opus.set_bitrate(Bitrate::Bits(BITRATE))
            .map_err(|e| opus_error("bitrate", e))?;
        opus.set_signal(Signal::Voice)
            .map_err(|e| opus_error("signal", e))?;
        opus.set_max_bandwidth(bandwidth_for(input_rate))
            .map_err(|e| opus_error("bandwidth", e))?;
        let lookahead = opus
            .get_lookahead()
            .map_err(|e| opus_error("look-ahead", e))?;
        let pre_skip = u64::from(lookahead.max(0) as u32) * u64::from(GRANULE_RATE / codec_rate);

        let serial = random_serial();
        let mut ogg = PacketWriter::new(Vec::new());
        let head = opus_head(pre_skip as u16, input_rate);
        ogg.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)
            .map_err(ogg_error)?;
        let tags = opus_tags(opus::version());
        ogg.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)
            .map_err(ogg_error)?;

        Ok(OggOpusEncoder {
            opus: Mutex::new(opus),
            resampler,
            codec_rate,
            frame_len: (codec_rate / 50) as usize,
            pre_skip,
            reader: SampleReader::default(),
            samples: Vec::new(),
            pending: Vec::new(),
            codec_count: 0,
            ogg,
            serial,
            packets: 0,
            packets_in_page: 0,
            packet_buf: vec![0; MAX_PACKET],
            finished: false,
        })
    }

    /// Encodes the whole frames in `pending`. The last of them ends the page
    /// (`last` = `EndPage`) or the stream (`EndStream`, with `final_granule`).
    fn encode_frames(
        &mut self,
        last: PacketWriteEndInfo,
        final_granule: Option<u64>,
    ) -> Result<(), FormatError> {
        let frames = self.pending.len() / self.frame_len;
        let opus = self
            .opus
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for i in 0..frames {
            let frame = &self.pending[i * self.frame_len..(i + 1) * self.frame_len];
            let len = opus
                .encode_float(frame, &mut self.packet_buf)
                .map_err(|e| opus_error("encoding", e))?;
            self.packets += 1;
            self.packets_in_page += 1;
            let is_last = i + 1 == frames;
            let mut granule = self.packets * FRAME_48K;
            let end = if is_last {
                if let Some(end) = final_granule {
                    granule = end;
                }
                last
            } else if self.packets_in_page >= PACKETS_PER_PAGE {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            if end != PacketWriteEndInfo::NormalPacket {
                self.packets_in_page = 0;
            }
            self.ogg
                .write_packet(self.packet_buf[..len].to_vec(), self.serial, end, granule)
                .map_err(ogg_error)?;
        }
        self.pending.drain(..frames * self.frame_len);
        Ok(())
    }

    /// Appends samples at the input rate to `pending`, at the codec rate.
    fn take_input(&mut self, pcm: &[u8]) -> Result<(), FormatError> {
        self.samples.clear();
        self.reader.read(pcm, &mut self.samples);
        let floats = self.samples.iter().map(|&s| f32::from(s) / 32768.0);
        let before = self.pending.len();
        match &mut self.resampler {
            Some(resampler) => {
                let input: Vec<f32> = floats.collect();
                resampler.push(&input, &mut self.pending)?;
            }
            None => self.pending.extend(floats),
        }
        self.codec_count += (self.pending.len() - before) as u64;
        Ok(())
    }

    /// The pages written so far.
    fn output(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.ogg.inner_mut()))
    }
}

impl Encoder for OggOpusEncoder {
    fn push(&mut self, pcm: &[u8]) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.take_input(pcm)?;
        self.encode_frames(PacketWriteEndInfo::EndPage, None)?;
        Ok(self.output())
    }

    fn finish(&mut self) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.finished = true;
        if let Some(resampler) = &mut self.resampler {
            let before = self.pending.len();
            resampler.finish(&mut self.pending)?;
            self.codec_count += (self.pending.len() - before) as u64;
        }
        // libopus delays its output by the look-ahead, so the input's last
        // sample comes out only after `pre_skip` more samples of input: pad
        // with silence to cover that, rounded up to whole frames. There is
        // always at least one packet here, since pre-skip is not zero.
        let length_48k = self.codec_count * u64::from(GRANULE_RATE / self.codec_rate);
        let needed_48k = length_48k + self.pre_skip;
        let encoded_48k = self.packets * FRAME_48K;
        let frames_left = needed_48k
            .saturating_sub(encoded_48k)
            .div_ceil(FRAME_48K)
            .max(1);
        self.pending
            .resize(frames_left as usize * self.frame_len, 0.0);
        self.encode_frames(PacketWriteEndInfo::EndStream, Some(needed_48k))?;
        Ok(self.output())
    }

    fn output_sample_rate(&self) -> u32 {
        GRANULE_RATE
    }
}

/// The widest Opus band that the input has anything in.
fn bandwidth_for(input_rate: u32) -> Bandwidth {
    match input_rate / 2 {
        0..=4_000 => Bandwidth::Narrowband,
        4_001..=6_000 => Bandwidth::Mediumband,
        6_001..=8_000 => Bandwidth::Wideband,
        8_001..=12_000 => Bandwidth::Superwideband,
        _ => Bandwidth::Fullband,
    }
}

/// The identification header (RFC 7845 section 5.1): mono, mapping family 0.
fn opus_head(pre_skip: u16, input_rate: u32) -> Vec<u8> {
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1); // version
    head.push(1); // channels
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&input_rate.to_le_bytes()); // informational only
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family: mono/stereo, no table
    head
}

/// The comment header (RFC 7845 section 5.2).
fn opus_tags(vendor: &str) -> Vec<u8> {
    let comment = format!("ENCODER=piperd {}", env!("CARGO_PKG_VERSION"));
    let mut tags = Vec::with_capacity(24 + vendor.len() + comment.len());
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor.as_bytes());
    tags.extend_from_slice(&1u32.to_le_bytes());
    tags.extend_from_slice(&(comment.len() as u32).to_le_bytes());
    tags.extend_from_slice(comment.as_bytes());
    tags
}

/// A stream serial number. Ogg wants it unique among the streams a file
/// chains together; a random one lets clients concatenate answers safely.
fn random_serial() -> u32 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    hasher.finish() as u32
}
