//! Turning a job's audio events into an HTTP body.
//!
//! Two shapes. A streamed answer sends a WAV header with the streaming
//! convention (RIFF and data sizes 0xFFFFFFFF) and then audio as each
//! sentence is ready. A complete answer is one WAV with exact sizes and a
//! `Content-Length`; its audio is held in memory up to a threshold and then
//! spooled to an anonymous temp file (unlinked at creation, so it cannot
//! outlive the request even if the server is killed).

use std::io::{Cursor, Seek, SeekFrom, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use super::error::ApiError;
use crate::audio::Encoder;
use crate::scheduler::{AudioEvent, SynthError};

/// Size of the pieces a spooled answer is read back in.
const READ_CHUNK: usize = 256 << 10;

fn spec(sample_rate: u32) -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// The header of a streamed WAV: hound writes the format, the two sizes are
/// then set to 0xFFFFFFFF ("unknown length"), which players accept.
pub fn streaming_header(sample_rate: u32) -> Bytes {
    let mut cursor = Cursor::new(Vec::with_capacity(64));
    hound::WavWriter::new(&mut cursor, spec(sample_rate))
        .and_then(|w| w.finalize())
        .expect("writing a header to memory cannot fail");
    let mut header = cursor.into_inner();
    let data_at = header.len() - 8;
    debug_assert_eq!(&header[data_at..data_at + 4], b"data");
    header[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    header[data_at + 4..data_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    Bytes::from(header)
}

/// Writes PCM bytes as samples through hound.
fn write_pcm<W: Write + Seek>(writer: &mut hound::WavWriter<W>, pcm: &[u8]) -> hound::Result<()> {
    let mut samples = writer.get_i16_writer((pcm.len() / 2) as u32);
    for pair in pcm.chunks_exact(2) {
        samples.write_sample(i16::from_le_bytes([pair[0], pair[1]]));
    }
    samples.flush()
}

/// A finished answer, in memory or in an anonymous file.
pub enum WavBody {
    Memory(Bytes),
    File { file: std::fs::File, len: u64 },
}

impl WavBody {
    pub fn len(&self) -> u64 {
        match self {
            WavBody::Memory(bytes) => bytes.len() as u64,
            WavBody::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> ChunkStream {
        match self {
            WavBody::Memory(bytes) => ChunkStream::Memory(Some(bytes)),
            WavBody::File { file, .. } => {
                ChunkStream::File(Some(std::io::BufReader::with_capacity(READ_CHUNK, file)))
            }
        }
    }
}

/// Collects a job's audio into one WAV, spooling past `threshold` bytes.
pub struct WavCollector {
    sample_rate: u32,
    threshold: usize,
    temp_dir: std::path::PathBuf,
    memory: Vec<u8>,
    file: Option<hound::WavWriter<std::io::BufWriter<std::fs::File>>>,
    file_handle: Option<std::fs::File>,
}

impl WavCollector {
    pub fn new(sample_rate: u32, threshold: usize, temp_dir: std::path::PathBuf) -> WavCollector {
        WavCollector {
            sample_rate,
            threshold,
            temp_dir,
            memory: Vec::new(),
            file: None,
            file_handle: None,
        }
    }

    /// Adds PCM; file writes are small sequential page-cache writes.
    pub fn push(&mut self, pcm: &[u8]) -> Result<(), ApiError> {
        if self.file.is_none() && self.memory.len() + pcm.len() <= self.threshold {
            self.memory.extend_from_slice(pcm);
            return Ok(());
        }
        let io = |e: std::io::Error| ApiError::Internal(format!("cannot spool audio: {e}"));
        if self.file.is_none() {
            let file = tempfile::tempfile_in(&self.temp_dir).map_err(io)?;
            self.file_handle = Some(file.try_clone().map_err(io)?);
            let mut writer =
                hound::WavWriter::new(std::io::BufWriter::new(file), spec(self.sample_rate))
                    .map_err(hound_err)?;
            write_pcm(&mut writer, &std::mem::take(&mut self.memory)).map_err(hound_err)?;
            self.file = Some(writer);
        }
        let writer = self.file.as_mut().expect("set above");
        write_pcm(writer, pcm).map_err(hound_err)
    }

    /// The finished WAV with exact sizes.
    pub fn finish(self) -> Result<WavBody, ApiError> {
        match (self.file, self.file_handle) {
            (Some(writer), Some(mut handle)) => {
                writer.finalize().map_err(hound_err)?;
                let io = |e: std::io::Error| {
                    ApiError::Internal(format!("cannot read spooled audio: {e}"))
                };
                let len = handle.seek(SeekFrom::End(0)).map_err(io)?;
                handle.seek(SeekFrom::Start(0)).map_err(io)?;
                Ok(WavBody::File { file: handle, len })
            }
            _ => {
                let mut cursor = Cursor::new(Vec::with_capacity(self.memory.len() + 44));
                let mut writer = hound::WavWriter::new(&mut cursor, spec(self.sample_rate))
                    .map_err(hound_err)?;
                write_pcm(&mut writer, &self.memory).map_err(hound_err)?;
                writer.finalize().map_err(hound_err)?;
                Ok(WavBody::Memory(Bytes::from(cursor.into_inner())))
            }
        }
    }
}

fn hound_err(e: hound::Error) -> ApiError {
    ApiError::Internal(format!("cannot write WAV: {e}"))
}

/// A complete body read back from memory or the spool file.
pub enum ChunkStream {
    Memory(Option<Bytes>),
    File(Option<std::io::BufReader<std::fs::File>>),
}

impl Stream for ChunkStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this {
            ChunkStream::Memory(bytes) => Poll::Ready(bytes.take().map(Ok)),
            ChunkStream::File(reader) => {
                let Some(file) = reader.as_mut() else {
                    return Poll::Ready(None);
                };
                let mut buf = vec![0u8; READ_CHUNK];
                let read = std::io::Read::read(file, &mut buf);
                match read {
                    Ok(0) => {
                        *reader = None;
                        Poll::Ready(None)
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        Poll::Ready(Some(Ok(Bytes::from(buf))))
                    }
                    Err(e) => {
                        *reader = None;
                        Poll::Ready(Some(Err(e)))
                    }
                }
            }
        }
    }
}

/// How a synthesis ended, for the stream's end callback.
#[derive(Debug)]
pub enum Outcome {
    /// All audio was sent; `pcm` holds a copy when it was small enough to cache.
    Complete { pcm: Option<Bytes> },
    /// The synthesis failed (with its error), or the client went away.
    Broken(Option<SynthError>),
}

/// Where the PCM of an answer comes from.
pub enum Source {
    /// A live job: its first audio (already received) and the rest.
    Live(Bytes, mpsc::Receiver<AudioEvent>),
    /// Audio from the cache.
    Cached(Bytes),
}

/// An answer encoded as it is produced. A failure after the first bytes
/// went out aborts the transfer (the client sees a broken response, never a
/// short one that looks complete).
pub struct EncodedStream {
    pending: Option<Bytes>,
    events: Option<mpsc::Receiver<AudioEvent>>,
    encoder: Box<dyn Encoder>,
    finished: bool,
    /// A copy of the PCM, kept while it stays under the limit.
    tee: Option<(Vec<u8>, usize)>,
    on_end: Option<Box<dyn FnOnce(Outcome) + Send + Sync>>,
}

impl EncodedStream {
    /// `tee_limit` > 0 keeps a copy of up to that many PCM bytes for the cache.
    pub fn new(
        source: Source,
        encoder: Box<dyn Encoder>,
        tee_limit: usize,
        on_end: impl FnOnce(Outcome) + Send + Sync + 'static,
    ) -> EncodedStream {
        let (pending, events) = match source {
            Source::Live(first, events) => (Some(first), Some(events)),
            Source::Cached(pcm) => (Some(pcm), None),
        };
        EncodedStream {
            pending,
            events,
            encoder,
            finished: false,
            tee: (tee_limit > 0).then(|| (Vec::new(), tee_limit)),
            on_end: Some(Box::new(on_end)),
        }
    }

    fn end(&mut self, outcome: Outcome) {
        self.finished = true;
        if let Some(on_end) = self.on_end.take() {
            on_end(outcome);
        }
    }

    fn encode(&mut self, pcm: &[u8]) -> Result<Bytes, std::io::Error> {
        if let Some((copy, limit)) = &mut self.tee {
            if copy.len() + pcm.len() <= *limit {
                copy.extend_from_slice(pcm);
            } else {
                self.tee = None;
            }
        }
        // Inline: a few milliseconds per second of audio at most (see the
        // README's formats table).
        self.encoder.push(pcm).map_err(std::io::Error::other)
    }

    fn fail(
        &mut self,
        why: String,
        err: Option<SynthError>,
    ) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        tracing::warn!("audio stream aborted: {why}");
        self.end(Outcome::Broken(err));
        Poll::Ready(Some(Err(std::io::Error::other(why))))
    }
}

impl Stream for EncodedStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            let pcm = match this.pending.take() {
                Some(pcm) => pcm,
                None => match this.events.as_mut().map(|e| e.poll_recv(cx)) {
                    Some(Poll::Pending) => return Poll::Pending,
                    Some(Poll::Ready(Some(AudioEvent::Audio { pcm, .. }))) => pcm,
                    Some(Poll::Ready(Some(AudioEvent::Failed(err)))) => {
                        return this.fail(err.to_string(), Some(err))
                    }
                    Some(Poll::Ready(None)) => {
                        return this.fail("synthesis ended without finishing".into(), None)
                    }
                    // Done, or a cached answer with nothing more to come.
                    Some(Poll::Ready(Some(AudioEvent::Done(_)))) | None => {
                        let tail = match this.encoder.finish() {
                            Ok(tail) => tail,
                            Err(err) => return this.fail(err.to_string(), None),
                        };
                        let pcm = this.tee.take().map(|(copy, _)| Bytes::from(copy));
                        this.end(Outcome::Complete { pcm });
                        return Poll::Ready((!tail.is_empty()).then_some(Ok(tail)));
                    }
                },
            };
            match this.encode(&pcm) {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Poll::Ready(Some(Ok(bytes))),
                Err(err) => return this.fail(err.to_string(), None),
            }
        }
    }
}

impl Drop for EncodedStream {
    fn drop(&mut self) {
        // Dropped before the end: the client went away.
        self.end(Outcome::Broken(None));
    }
}

/// Collects encoded bytes into memory, spooling past a threshold, so that a
/// complete answer can be sent with its `Content-Length`.
pub struct Spool {
    threshold: usize,
    temp_dir: std::path::PathBuf,
    memory: Vec<u8>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    len: u64,
}

impl Spool {
    pub fn new(threshold: usize, temp_dir: std::path::PathBuf) -> Spool {
        Spool {
            threshold,
            temp_dir,
            memory: Vec::new(),
            file: None,
            len: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ApiError> {
        let io = |e: std::io::Error| ApiError::Internal(format!("cannot spool audio: {e}"));
        self.len += bytes.len() as u64;
        if self.file.is_none() && self.memory.len() + bytes.len() <= self.threshold {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        }
        if self.file.is_none() {
            let file = tempfile::tempfile_in(&self.temp_dir).map_err(io)?;
            let mut writer = std::io::BufWriter::new(file);
            writer
                .write_all(&std::mem::take(&mut self.memory))
                .map_err(io)?;
            self.file = Some(writer);
        }
        let writer = self.file.as_mut().expect("set above");
        writer.write_all(bytes).map_err(io)
    }

    pub fn finish(self) -> Result<WavBody, ApiError> {
        let io = |e: std::io::Error| ApiError::Internal(format!("cannot read spooled audio: {e}"));
        match self.file {
            None => Ok(WavBody::Memory(Bytes::from(self.memory))),
            Some(writer) => {
                let mut file = writer.into_inner().map_err(|e| io(e.into_error()))?;
                file.seek(SeekFrom::Start(0)).map_err(io)?;
                Ok(WavBody::File {
                    file,
                    len: self.len,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_header_is_a_wav_header_with_unknown_sizes() {
        let header = streaming_header(22050);
        assert_eq!(header.len(), 44);
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

    fn pcm(samples: usize) -> Vec<u8> {
        (0..samples)
            .flat_map(|i| ((i % 1000) as i16).to_le_bytes())
            .collect()
    }

    fn read_back(body: WavBody) -> (hound::WavSpec, Vec<i16>) {
        let bytes: Vec<u8> = match body {
            WavBody::Memory(b) => b.to_vec(),
            WavBody::File { mut file, .. } => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut out).unwrap();
                out
            }
        };
        let reader = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        let spec = reader.spec();
        (
            spec,
            reader.into_samples::<i16>().map(|s| s.unwrap()).collect(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn small_audio_stays_in_memory_with_exact_sizes() {
        let mut collector = WavCollector::new(16000, 1 << 20, std::env::temp_dir());
        collector.push(&pcm(100)).unwrap();
        collector.push(&pcm(50)).unwrap();
        let body = collector.finish().unwrap();
        assert!(matches!(body, WavBody::Memory(_)));
        assert_eq!(body.len(), 44 + 300);
        let (spec, samples) = read_back(body);
        assert_eq!(spec.sample_rate, 16000);
        assert_eq!(samples.len(), 150);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn large_audio_is_spooled_to_an_unlinked_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut collector = WavCollector::new(22050, 1000, dir.path().to_path_buf());
        for _ in 0..10 {
            collector.push(&pcm(400)).unwrap();
        }
        // The spool file has no name: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let body = collector.finish().unwrap();
        assert!(matches!(body, WavBody::File { .. }));
        assert_eq!(body.len(), 44 + 8000);
        let (_, samples) = read_back(body);
        assert_eq!(
            samples,
            (0..10)
                .flat_map(|_| (0..400).map(|i| i as i16))
                .collect::<Vec<_>>()
        );
    }
}
