//! A session's audio in a client's format: streamed as it is made, or
//! complete with its exact length.
//!
//! Encoding costs a few milliseconds per second of audio (see
//! `audio/mod.rs`); pieces above [`INLINE_BYTES`] are encoded on the
//! blocking pool, so that no runtime thread spends long on one piece.

use bytes::Bytes;
use futures::Stream;

use super::error::SpeechError;
use super::session::{Session, SpeechEvent, Summary};
use crate::audio::spool::{AudioFile, Spool};
use crate::audio::{self, AudioFormat, Encoder};

/// PCM pieces up to this size (about 1.5 s at 22.05 kHz) are encoded in line.
const INLINE_BYTES: usize = 64 << 10;

/// How an encoded stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Done(Summary),
    Failed(SpeechError),
}

/// The sample rates a client may ask for.
pub const SAMPLE_RATES: [u32; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];
/// G.711's own rate: what phone systems expect when no rate is named.
pub const TELEPHONY_RATE: u32 = 8_000;

/// What a client asked its audio to be: a format, and maybe a sample rate.
///
/// Every front-end makes one of these, from its own fields
/// ([`Output::new`]) or from one name such as ElevenLabs' `output_format`
/// ([`Output::named`]), and gets its encoder from [`encoder_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub format: AudioFormat,
    /// `None`: the voice's own rate, or 8 kHz for G.711.
    pub sample_rate: Option<u32>,
}

impl Output {
    /// A supported format at one of [`SAMPLE_RATES`], or the parameter
    /// that is wrong. The format's name is checked by the front-end, which
    /// names its own field.
    pub fn new(format: AudioFormat, sample_rate: Option<u32>) -> Result<Output, SpeechError> {
        if !format.is_supported() {
            return Err(SpeechError::InvalidParameter {
                param: "format",
                message: format!("audio format {format} is not supported"),
            });
        }
        if let Some(rate) = sample_rate.filter(|rate| !SAMPLE_RATES.contains(rate)) {
            return Err(SpeechError::InvalidParameter {
                param: "sample_rate",
                message: format!("{rate} is not one of {SAMPLE_RATES:?}"),
            });
        }
        Ok(Output {
            format,
            sample_rate,
        })
    }

    /// A format with its rate in one name, `FORMAT` or `FORMAT_RATE`:
    /// ElevenLabs' `pcm_16000`, `ulaw_8000`, `alaw_8000`, or piperd's
    /// `wav_ulaw`, `mp3_44100`. Errors name `param`.
    pub fn named(param: &'static str, name: &str) -> Result<Output, SpeechError> {
        let invalid = |message: String| SpeechError::InvalidParameter { param, message };
        let (format_name, rate) = match name.rsplit_once('_') {
            Some((format, rate))
                if !rate.is_empty() && rate.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let rate = rate
                    .parse::<u32>()
                    .map_err(|_| invalid(format!("{rate} is not a sample rate")))?;
                (format, Some(rate))
            }
            _ => (name, None),
        };
        let format = AudioFormat::parse(format_name)
            .filter(|format| format.is_supported())
            .ok_or_else(|| invalid(format!("unknown audio format {name:?}")))?;
        Output::new(format, rate).map_err(|err| match err {
            SpeechError::InvalidParameter { message, .. } => invalid(message),
            other => other,
        })
    }

    /// The rate the audio is encoded at, for a voice speaking at `voice_rate`.
    pub fn rate(self, voice_rate: u32) -> u32 {
        match self.sample_rate {
            Some(rate) => rate,
            None if self.format.is_telephony() => TELEPHONY_RATE,
            None => voice_rate,
        }
    }
}

impl From<AudioFormat> for Output {
    /// The format at its default rate.
    fn from(format: AudioFormat) -> Output {
        Output {
            format,
            sample_rate: None,
        }
    }
}

/// The encoder for a voice's audio (PCM at `voice_rate`) in `output`:
/// resampled with `rubato` when the output's rate differs. Its
/// `output_sample_rate` is what a decoder of the output will report.
pub fn encoder_for(output: Output, voice_rate: u32) -> Result<Box<dyn Encoder>, SpeechError> {
    audio::encoder_at(output.format, voice_rate, output.rate(voice_rate))
        .map_err(|e| SpeechError::Internal(e.to_string()))
}

/// Encodes one piece of PCM, on the blocking pool when it is large; the
/// encoder comes back with the result.
pub async fn encode(
    encoder: Box<dyn Encoder>,
    pcm: Bytes,
) -> (Box<dyn Encoder>, Result<Bytes, SpeechError>) {
    let inline = pcm.len() <= INLINE_BYTES;
    let run = move |mut encoder: Box<dyn Encoder>| {
        let out = encoder
            .push(&pcm)
            .map_err(|e| SpeechError::Internal(e.to_string()));
        (encoder, out)
    };
    if inline {
        return run(encoder);
    }
    match tokio::task::spawn_blocking(move || run(encoder)).await {
        Ok(done) => done,
        // The encoder is lost with the task: nothing more can be encoded.
        Err(err) => (
            Box::new(Spent),
            Err(SpeechError::Internal(format!("the encoder failed: {err}"))),
        ),
    }
}

/// An encoder lost to a panic: every call fails.
struct Spent;

impl Encoder for Spent {
    fn push(&mut self, _: &[u8]) -> Result<Bytes, audio::FormatError> {
        Err(audio::FormatError::Encode("the encoder was lost".into()))
    }
    fn finish(&mut self) -> Result<Bytes, audio::FormatError> {
        self.push(&[])
    }
    fn output_sample_rate(&self) -> u32 {
        0
    }
}

/// The session's audio encoded as it comes: `Ok` pieces, then the stream
/// ends after the encoder's tail; a failure is the last item, as `Err`.
/// `on_end` hears how it ended, or nothing if the stream is dropped first
/// (the client left).
pub fn encoded_stream<F>(
    session: Session,
    encoder: Box<dyn Encoder>,
    on_end: F,
) -> impl Stream<Item = Result<Bytes, SpeechError>> + Send
where
    F: FnOnce(Ending) + Send + Sync + 'static,
{
    struct State<F> {
        session: Session,
        encoder: Option<Box<dyn Encoder>>,
        on_end: Option<F>,
    }
    let state = State {
        session,
        encoder: Some(encoder),
        on_end: Some(on_end),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            let mut encoder = state.encoder.take()?;
            let event = state.session.next().await;
            let end = |state: &mut State<F>, ending: Ending| {
                if let Some(on_end) = state.on_end.take() {
                    on_end(ending);
                }
            };
            match event {
                Some(SpeechEvent::Audio(pcm)) => {
                    let (back, out) = encode(encoder, pcm).await;
                    match out {
                        Ok(bytes) => {
                            state.encoder = Some(back);
                            if bytes.is_empty() {
                                continue;
                            }
                            return Some((Ok(bytes), state));
                        }
                        Err(err) => {
                            end(&mut state, Ending::Failed(err.clone()));
                            return Some((Err(err), state));
                        }
                    }
                }
                Some(SpeechEvent::SentenceEnd { .. }) => {
                    state.encoder = Some(encoder);
                    continue;
                }
                Some(SpeechEvent::Done(summary)) => {
                    let tail = encoder
                        .finish()
                        .map_err(|e| SpeechError::Internal(e.to_string()));
                    match &tail {
                        Ok(_) => end(&mut state, Ending::Done(summary)),
                        Err(err) => end(&mut state, Ending::Failed(err.clone())),
                    }
                    return match tail {
                        Ok(bytes) if bytes.is_empty() => None,
                        other => Some((other, state)),
                    };
                }
                Some(SpeechEvent::Failed(err)) => {
                    end(&mut state, Ending::Failed(err.clone()));
                    return Some((Err(err), state));
                }
                None => return None,
            }
        }
    })
}

/// The session's whole answer in `output`, in memory or spooled past
/// `threshold` bytes, with exact sizes in a WAV header.
pub async fn encode_complete(
    session: Session,
    output: Output,
    threshold: usize,
    temp_dir: std::path::PathBuf,
) -> Result<(AudioFile, Summary), SpeechError> {
    let encoder = encoder_for(output, session.sample_rate())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let stream = encoded_stream(session, encoder, move |ending| {
        let _ = tx.send(ending);
    });
    let mut stream = std::pin::pin!(stream);
    let mut spool = Spool::new(threshold, temp_dir);
    let io = |e: std::io::Error| SpeechError::Internal(format!("cannot spool audio: {e}"));
    while let Some(piece) = futures::StreamExt::next(&mut stream).await {
        spool.push(&piece?).await.map_err(io)?;
    }
    let summary = match rx.try_recv() {
        Ok(Ending::Done(summary)) => summary,
        Ok(Ending::Failed(err)) => return Err(err),
        Err(_) => {
            return Err(SpeechError::Internal(
                "the synthesis ended unfinished".into(),
            ))
        }
    };
    let patches = audio::size_patches(output.format, spool.len());
    let file = spool.finish(&patches).await.map_err(io)?;
    Ok((file, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_with_and_without_a_rate() {
        let named = |name| Output::named("output_format", name);
        assert_eq!(
            named("pcm_16000"),
            Ok(Output {
                format: AudioFormat::Pcm,
                sample_rate: Some(16_000)
            })
        );
        assert_eq!(named("ulaw_8000").unwrap().format, AudioFormat::Ulaw);
        assert_eq!(named("alaw_8000").unwrap().rate(22_050), 8_000);
        assert_eq!(named("wav_ulaw"), Ok(AudioFormat::WavUlaw.into()));
        assert_eq!(named("wav_alaw_16000").unwrap().rate(22_050), 16_000);
        assert_eq!(named("mp3").unwrap().rate(22_050), 22_050);
        // G.711 is 8 kHz unless asked otherwise; other formats keep the voice's.
        assert_eq!(named("ulaw").unwrap().rate(22_050), 8_000);
        for bad in [
            "pcm_12345",
            "pcm_",
            "aac",
            "ulaw_8000_1",
            "pcm_99999999999",
            "",
        ] {
            match named(bad) {
                Err(SpeechError::InvalidParameter { param, .. }) => {
                    assert_eq!(param, "output_format", "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        match Output::new(AudioFormat::Wav, Some(11_025)) {
            Err(SpeechError::InvalidParameter { param, .. }) => assert_eq!(param, "sample_rate"),
            other => panic!("{other:?}"),
        }
    }

    /// A second of a 440 Hz tone at the voice's rate, encoded at every rate.
    #[test]
    fn every_rate_keeps_the_duration() {
        let voice_rate = 22_050;
        let samples: Vec<u8> = (0..voice_rate)
            .flat_map(|i| {
                let t = f64::from(i) / f64::from(voice_rate);
                ((0.3 * 32767.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16)
                    .to_le_bytes()
            })
            .collect();
        for rate in SAMPLE_RATES {
            let output = Output::new(AudioFormat::Pcm, Some(rate)).unwrap();
            let mut encoder = encoder_for(output, voice_rate).unwrap();
            assert_eq!(encoder.output_sample_rate(), rate);
            let mut out = Vec::new();
            for piece in samples.chunks(4_097) {
                out.extend_from_slice(&encoder.push(piece).unwrap());
            }
            out.extend_from_slice(&encoder.finish().unwrap());
            assert_eq!(out.len() / 2, rate as usize, "at {rate}");
        }
    }
}
