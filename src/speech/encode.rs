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

/// The encoder for a session's audio in `format`, and the sample rate a
/// decoder of its output will report.
pub fn encoder_for(format: AudioFormat, sample_rate: u32) -> Result<Box<dyn Encoder>, SpeechError> {
    audio::encoder(format, sample_rate).map_err(|e| SpeechError::Internal(e.to_string()))
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

/// The session's whole answer in `format`, in memory or spooled past
/// `threshold` bytes, with exact sizes in a WAV header.
pub async fn encode_complete(
    session: Session,
    format: AudioFormat,
    threshold: usize,
    temp_dir: std::path::PathBuf,
) -> Result<(AudioFile, Summary), SpeechError> {
    let encoder = encoder_for(format, session.sample_rate())?;
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
    let patches = if format == AudioFormat::Wav {
        audio::wav_size_patches(spool.len()).to_vec()
    } else {
        Vec::new()
    };
    let file = spool.finish(&patches).await.map_err(io)?;
    Ok((file, summary))
}
