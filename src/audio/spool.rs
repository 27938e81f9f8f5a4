//! Finished answers: held in memory up to a threshold, spooled past it.
//!
//! A complete answer needs its length before its first byte (a
//! `Content-Length`, a WAV header with exact sizes), so its encoded bytes
//! are collected first. Small answers stay in memory; larger ones go to an
//! anonymous temp file (unlinked at creation, so it cannot outlive the
//! request even if the server is killed). File writes and reads are async
//! (tokio runs them on its blocking pool), never on a runtime thread.

use std::io::SeekFrom;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

/// Size of the pieces a spooled answer is read back in.
const READ_CHUNK: usize = 256 << 10;

/// Collects encoded bytes.
pub struct Spool {
    threshold: usize,
    temp_dir: PathBuf,
    memory: Vec<u8>,
    file: Option<BufWriter<tokio::fs::File>>,
    len: u64,
}

/// A finished answer, in memory or in an anonymous file.
pub enum AudioFile {
    Memory(Bytes),
    File { file: tokio::fs::File, len: u64 },
}

impl Spool {
    pub fn new(threshold: usize, temp_dir: PathBuf) -> Spool {
        Spool {
            threshold,
            temp_dir,
            memory: Vec::new(),
            file: None,
            len: 0,
        }
    }

    pub async fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.len += bytes.len() as u64;
        if self.file.is_none() && self.memory.len() + bytes.len() <= self.threshold {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        }
        if self.file.is_none() {
            let dir = self.temp_dir.clone();
            let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                .await
                .map_err(std::io::Error::other)??;
            let mut writer = BufWriter::with_capacity(READ_CHUNK, tokio::fs::File::from_std(file));
            writer.write_all(&std::mem::take(&mut self.memory)).await?;
            self.file = Some(writer);
        }
        let writer = self.file.as_mut().expect("set above");
        writer.write_all(bytes).await
    }

    /// Bytes pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The answer, with `patches` (offset, bytes) written over what was
    /// pushed: the sizes of a WAV header, known only now.
    pub async fn finish(self, patches: &[(u64, [u8; 4])]) -> std::io::Result<AudioFile> {
        match self.file {
            None => {
                let mut memory = self.memory;
                for (at, bytes) in patches {
                    let at = *at as usize;
                    if let Some(slot) = memory.get_mut(at..at + 4) {
                        slot.copy_from_slice(bytes);
                    }
                }
                Ok(AudioFile::Memory(Bytes::from(memory)))
            }
            Some(mut writer) => {
                writer.flush().await?;
                let mut file = writer.into_inner();
                for (at, bytes) in patches {
                    file.seek(SeekFrom::Start(*at)).await?;
                    file.write_all(bytes).await?;
                }
                file.flush().await?;
                file.seek(SeekFrom::Start(0)).await?;
                Ok(AudioFile::File {
                    file,
                    len: self.len,
                })
            }
        }
    }
}

impl AudioFile {
    pub fn len(&self) -> u64 {
        match self {
            AudioFile::Memory(bytes) => bytes.len() as u64,
            AudioFile::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole answer in memory (for callers that need it so, and tests).
    pub async fn into_bytes(self) -> std::io::Result<Bytes> {
        match self {
            AudioFile::Memory(bytes) => Ok(bytes),
            AudioFile::File { mut file, len } => {
                let mut out = Vec::with_capacity(len as usize);
                file.read_to_end(&mut out).await?;
                Ok(Bytes::from(out))
            }
        }
    }

    /// The answer as a stream of pieces, read as they are sent.
    pub fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            match state? {
                AudioFile::Memory(bytes) if bytes.is_empty() => None,
                AudioFile::Memory(bytes) => Some((Ok(bytes), None)),
                AudioFile::File { mut file, len } => {
                    let mut buf = BytesMut::zeroed(READ_CHUNK);
                    match file.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok(buf.freeze()), Some(AudioFile::File { file, len })))
                        }
                        Err(err) => Some((Err(err), None)),
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn read_back(file: AudioFile) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stream = std::pin::pin!(file.into_stream());
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn small_answers_stay_in_memory_and_large_ones_spool() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        for threshold in [usize::MAX, 1000] {
            let mut spool = Spool::new(threshold, dir.path().to_path_buf());
            for piece in data.chunks(9_999) {
                spool.push(piece).await.unwrap();
            }
            let file = spool.finish(&[(4, *b"SIZE")]).await.unwrap();
            assert_eq!(matches!(file, AudioFile::File { .. }), threshold == 1000);
            assert_eq!(file.len(), data.len() as u64);
            let mut expected = data.clone();
            expected[4..8].copy_from_slice(b"SIZE");
            assert_eq!(read_back(file).await, expected);
        }
        // The spool file was unlinked at creation: nothing is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
