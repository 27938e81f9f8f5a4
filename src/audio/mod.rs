//! Compressed and uncompressed audio formats, encoded as the audio arrives.
//!
//! The engine hands us 16-bit signed little-endian mono PCM at the voice's
//! sample rate, one sentence at a time. Every format here is a streaming
//! [`Encoder`]: [`Encoder::push`] takes a piece of PCM and returns the bytes
//! that can be sent to the client now, [`Encoder::finish`] returns the tail.
//! Concatenating every returned piece gives one valid file, so the same code
//! serves a streamed answer (send each piece as it comes) and a complete one
//! (collect them).
//!
//! Why each format is built the way it is:
//!
//! - [`AudioFormat::Wav`] and [`AudioFormat::Pcm`] pass the samples through;
//!   WAV puts the streaming header of [`streaming_header`]
//!   first (sizes 0xFFFFFFFF, since the length is not known yet).
//! - [`AudioFormat::Mp3`]: LAME (the `mp3lame-encoder` crate, which builds its
//!   bundled copy of LAME with the C compiler), mono CBR 64 kbps at the input
//!   rate: 16, 22.05 and 24 kHz are MPEG-2 rates, so nothing is resampled. No
//!   Xing/LAME tag is written, because that tag is the first frame of the file
//!   and is only correct once the stream has ended; plain CBR frames are what
//!   a stream can honestly send.
//! - [`AudioFormat::Opus`]: libopus (the `opus` crate, which builds its
//!   bundled libopus with CMake) in a real Ogg container (the `ogg` crate),
//!   see `ogg_opus.rs` for pages and granule positions. libopus takes 8, 12,
//!   16, 24 or 48 kHz directly; any other rate (22.05 kHz, the bundled voice)
//!   is resampled to 48 kHz with `rubato`'s FFT resampler (`resample.rs`).
//! - [`AudioFormat::Flac`]: `flacenc` (pure Rust) encodes frames, we write the
//!   stream header and the frames ourselves so that each push can go out at
//!   once (`flac.rs`).
//! - [`AudioFormat::Ulaw`] and [`AudioFormat::Alaw`]: G.711 for phone
//!   systems, raw (8 bits a sample) or in WAV ([`AudioFormat::WavUlaw`],
//!   [`AudioFormat::WavAlaw`], format tags 7 and 6), see `g711.rs`.
//! - [`AudioFormat::Au`] and [`AudioFormat::Aiff`]: the same samples,
//!   big-endian, behind a Sun AU or an AIFF header (`au_aiff.rs`); what the
//!   MaryTTS server answers for `AU_FILE` and `AIFF_FILE`.
//! - Any format at another sample rate than the voice's: the PCM is
//!   resampled first with `rubato` ([`encoder_at`], `resample.rs`).
//! - [`AudioFormat::Aac`] is not supported, so asking for it is a client
//!   error (`unsupported_format`): there is no well-kept AAC *encoder* crate.
//!   `fdk-aac` binds Fraunhofer's FDK, whose licence is not a free-software
//!   one and grants no patent rights; the libxaac bindings and the pure-Rust
//!   encoders are young single-maintainer crates.
//!
//! Encoding costs CPU: per second of audio at 22.05 kHz on one core, about
//! 4 ms for MP3, 8 ms for Opus (0.3 ms of it resampling), 1 ms for FLAC
//! (the ignored test `encode_cost` measures it). A caller on an async
//! runtime should push from a blocking context for long pieces.

use bytes::Bytes;

pub mod au_aiff;
mod flac;
pub mod g711;
mod mp3;
mod ogg_opus;
mod pcm;
mod resample;
pub mod spool;

pub use pcm::{streaming_header, wav_size_patches, WAV_HEADER_LEN};

#[cfg(test)]
mod tests;

/// An audio format a client can ask for (`response_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    Wav,
    Pcm,
    Mp3,
    Opus,
    Flac,
    Aac,
    /// G.711 μ-law, raw.
    Ulaw,
    /// G.711 A-law, raw.
    Alaw,
    /// G.711 μ-law in WAV (format tag 7).
    WavUlaw,
    /// G.711 A-law in WAV (format tag 6).
    WavAlaw,
    /// Sun AU, 16-bit big-endian PCM.
    Au,
    /// AIFF, 16-bit big-endian PCM.
    Aiff,
}

impl AudioFormat {
    /// Every format, supported or not, in the order they are documented.
    pub const ALL: [AudioFormat; 12] = [
        AudioFormat::Wav,
        AudioFormat::Pcm,
        AudioFormat::Mp3,
        AudioFormat::Opus,
        AudioFormat::Flac,
        AudioFormat::Aac,
        AudioFormat::Ulaw,
        AudioFormat::Alaw,
        AudioFormat::WavUlaw,
        AudioFormat::WavAlaw,
        AudioFormat::Au,
        AudioFormat::Aiff,
    ];

    /// The format named `name` ("wav", "pcm", "mp3", "opus", "flac", "aac",
    /// "ulaw", "alaw", "wav_ulaw", "wav_alaw", "au", "aiff"),
    /// ignoring case; `None` for any other name.
    pub fn parse(name: &str) -> Option<AudioFormat> {
        AudioFormat::ALL
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(name))
    }

    /// The name clients use, as accepted by [`AudioFormat::parse`].
    pub fn name(self) -> &'static str {
        match self {
            AudioFormat::Wav => "wav",
            AudioFormat::Pcm => "pcm",
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Opus => "opus",
            AudioFormat::Flac => "flac",
            AudioFormat::Aac => "aac",
            AudioFormat::Ulaw => "ulaw",
            AudioFormat::Alaw => "alaw",
            AudioFormat::WavUlaw => "wav_ulaw",
            AudioFormat::WavAlaw => "wav_alaw",
            AudioFormat::Au => "au",
            AudioFormat::Aiff => "aiff",
        }
    }

    /// The `Content-Type` of an answer in this format.
    ///
    /// Raw PCM is `audio/pcm`, not `audio/L16`: L16 (RFC 2586, RFC 3551) is
    /// big-endian by definition, and our samples are little-endian, so that
    /// label would make a conforming client play noise. The sample rate is
    /// not in the type (it is a `&'static str`); tell it in a header.
    /// Opus is `audio/ogg; codecs=opus` (RFC 7845): the container is Ogg.
    /// Raw G.711 is `audio/PCMU` or `audio/PCMA` (RFC 4856), whatever the
    /// rate (`audio/basic` would promise 8 kHz). AU and AIFF are what
    /// MaryTTS and the usual `mime.types` call them: `audio/basic` (the AU
    /// file's header tells its encoding and rate) and `audio/x-aiff`.
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Pcm => "audio/pcm",
            AudioFormat::Mp3 => "audio/mpeg",
            AudioFormat::Opus => "audio/ogg; codecs=opus",
            AudioFormat::Flac => "audio/flac",
            AudioFormat::Aac => "audio/aac",
            AudioFormat::Ulaw => "audio/PCMU",
            AudioFormat::Alaw => "audio/PCMA",
            AudioFormat::WavUlaw | AudioFormat::WavAlaw => "audio/wav",
            AudioFormat::Au => "audio/basic",
            AudioFormat::Aiff => "audio/x-aiff",
        }
    }

    /// Whether [`encoder`] can make an encoder for this format.
    pub fn is_supported(self) -> bool {
        !matches!(self, AudioFormat::Aac)
    }

    /// G.711 (raw or in WAV): what phone systems take, at 8 kHz unless a
    /// rate is asked for.
    pub fn is_telephony(self) -> bool {
        matches!(
            self,
            AudioFormat::Ulaw | AudioFormat::Alaw | AudioFormat::WavUlaw | AudioFormat::WavAlaw
        )
    }
}

impl std::fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why audio could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The format has no encoder here; a client error, not a server fault.
    #[error("audio format {0} is not supported")]
    Unsupported(AudioFormat),
    /// The encoder failed (bad parameters, a codec error, use after finish).
    #[error("cannot encode audio: {0}")]
    Encode(String),
}

/// A streaming encoder: push PCM as it arrives, get encoded bytes ready to
/// send now.
///
/// Input is 16-bit signed little-endian mono PCM at the rate the encoder was
/// made for, in pieces of any length (an odd byte is kept for the next piece).
/// After [`Encoder::finish`] the encoder is spent: further calls fail.
pub trait Encoder: Send + Sync {
    /// Takes a piece of PCM; returns the bytes that are ready, maybe none.
    fn push(&mut self, pcm: &[u8]) -> Result<Bytes, FormatError>;
    /// Ends the stream: encodes what is buffered (padding the last frame),
    /// and writes whatever closes the format (Ogg end-of-stream page, ...).
    fn finish(&mut self) -> Result<Bytes, FormatError>;
    /// The sample rate a decoder of the output will report: the input rate,
    /// except for Opus, which always decodes at 48 kHz.
    fn output_sample_rate(&self) -> u32;
}

/// An encoder from PCM at `sample_rate` to `format`.
pub fn encoder(format: AudioFormat, sample_rate: u32) -> Result<Box<dyn Encoder>, FormatError> {
    if sample_rate == 0 {
        return Err(FormatError::Encode("the sample rate is 0".into()));
    }
    Ok(match format {
        AudioFormat::Wav => Box::new(pcm::Passthrough::wav(sample_rate)),
        AudioFormat::Pcm => Box::new(pcm::Passthrough::raw(sample_rate)),
        AudioFormat::Mp3 => Box::new(mp3::Mp3Encoder::new(sample_rate)?),
        AudioFormat::Opus => Box::new(ogg_opus::OggOpusEncoder::new(sample_rate)?),
        AudioFormat::Flac => Box::new(flac::FlacEncoder::new(sample_rate)?),
        AudioFormat::Aac => return Err(FormatError::Unsupported(format)),
        AudioFormat::Ulaw => Box::new(g711::G711Encoder::raw(g711::Law::Ulaw, sample_rate)),
        AudioFormat::Alaw => Box::new(g711::G711Encoder::raw(g711::Law::Alaw, sample_rate)),
        AudioFormat::WavUlaw => Box::new(g711::G711Encoder::wav(g711::Law::Ulaw, sample_rate)),
        AudioFormat::WavAlaw => Box::new(g711::G711Encoder::wav(g711::Law::Alaw, sample_rate)),
        AudioFormat::Au => Box::new(au_aiff::BigEndianEncoder::au(sample_rate)),
        AudioFormat::Aiff => Box::new(au_aiff::BigEndianEncoder::aiff(sample_rate)),
    })
}

/// An encoder from PCM at `input_rate` to `format` at `output_rate`: the
/// PCM is resampled first when the two differ.
pub fn encoder_at(
    format: AudioFormat,
    input_rate: u32,
    output_rate: u32,
) -> Result<Box<dyn Encoder>, FormatError> {
    let inner = encoder(format, output_rate)?;
    if input_rate == output_rate {
        return Ok(inner);
    }
    if input_rate == 0 {
        return Err(FormatError::Encode("the sample rate is 0".into()));
    }
    Ok(Box::new(resample::Resampled::new(
        input_rate,
        output_rate,
        inner,
    )?))
}

/// Where a complete file of `len` bytes in `format`, written by a streaming
/// encoder, gets its exact sizes: nothing for formats without sizes.
pub fn size_patches(format: AudioFormat, len: u64) -> Vec<(u64, [u8; 4])> {
    match format {
        AudioFormat::Wav => wav_size_patches(len).to_vec(),
        AudioFormat::WavUlaw | AudioFormat::WavAlaw => g711::wav_size_patches(len).to_vec(),
        AudioFormat::Au => au_aiff::au_size_patches(len).to_vec(),
        AudioFormat::Aiff => au_aiff::aiff_size_patches(len).to_vec(),
        _ => Vec::new(),
    }
}

/// The error for a call after [`Encoder::finish`].
fn finished_error() -> FormatError {
    FormatError::Encode("the encoder was already finished".into())
}
