//! FLAC, frame by frame.
//!
//! `flacenc` encodes a whole source into a `Stream`, or one block into a
//! `Frame` ([`flacenc::encode_fixed_size_frame`]). We use the second and
//! write the stream ourselves:
//!
//! - First the `fLaC` marker and a STREAMINFO block whose total sample count
//!   and MD5 are 0, which the format defines as "unknown" and which is what a
//!   live FLAC stream carries, since both are known only at the end. Frame
//!   sizes are 0 ("unknown") too.
//! - Then frames in *variable* block-size mode: each header carries the
//!   number of its first sample rather than a frame number. That lets every
//!   push go out whole, in frames of at most [`MAX_BLOCK`] samples split
//!   evenly, instead of holding back up to a block (186 ms at 22.05 kHz) of
//!   the end of each sentence until the next one is synthesized. Only fewer
//!   than [`MIN_BLOCK`] samples ever wait for the next push, because no frame
//!   but the last may be that short.
//!
//! The result is lossless: a decoder gives back exactly the input samples.

use bytes::Bytes;
use flacenc::bitsink::ByteSink;
use flacenc::component::{BitRepr, Frame, FrameOffset, Stream, StreamInfo};
use flacenc::config;
use flacenc::error::{Verified, Verify};
use flacenc::source::{Fill, FrameBuf};

use super::pcm::SampleReader;
use super::{finished_error, Encoder, FormatError};

/// The largest frame we write (flacenc's default block size).
const MAX_BLOCK: usize = 4096;
/// The smallest frame but the last (flacenc's minimum block size).
const MIN_BLOCK: usize = flacenc::constant::MIN_BLOCK_SIZE;

pub(super) struct FlacEncoder {
    config: Verified<config::Encoder>,
    stream_info: StreamInfo,
    framebuf: FrameBuf,
    reader: SampleReader,
    /// Samples not yet in a frame (fewer than `MIN_BLOCK` between pushes).
    pending: Vec<i16>,
    /// Widened copy of one block, as flacenc takes it.
    block: Vec<i32>,
    /// The number of the next frame's first sample.
    next_sample: u64,
    /// The stream header, until it is sent with the first output.
    header: Option<Bytes>,
    finished: bool,
}

fn flac_error(what: &str, e: impl std::fmt::Debug) -> FormatError {
    FormatError::Encode(format!("FLAC {what}: {e:?}"))
}

impl FlacEncoder {
    pub(super) fn new(sample_rate: u32) -> Result<FlacEncoder, FormatError> {
        let config = config::Encoder::default()
            .into_verified()
            .map_err(|(_, e)| flac_error("configuration", e))?;
        let mut stream_info = StreamInfo::new(sample_rate as usize, 1, 16)
            .map_err(|e| flac_error("stream parameters", e))?;
        stream_info
            .set_block_sizes(MIN_BLOCK, MAX_BLOCK)
            .map_err(|e| flac_error("block sizes", e))?;
        // 0 means unknown for both; total samples and MD5 are already 0.
        stream_info
            .set_frame_sizes(0, 0)
            .map_err(|e| flac_error("frame sizes", e))?;
        let header = write_bits(&Stream::with_stream_info(stream_info.clone()))?;
        Ok(FlacEncoder {
            config,
            stream_info,
            framebuf: FrameBuf::with_size(1, MAX_BLOCK).map_err(|e| flac_error("buffer", e))?,
            reader: SampleReader::default(),
            pending: Vec::new(),
            block: Vec::with_capacity(MAX_BLOCK),
            next_sample: 0,
            header: Some(header),
            finished: false,
        })
    }

    /// Encodes the first `count` pending samples as evenly sized frames.
    fn encode_pending(&mut self, count: usize, out: &mut ByteSink) -> Result<(), FormatError> {
        let frames = count.div_ceil(MAX_BLOCK);
        let mut start = 0;
        for i in 0..frames {
            // Even split: frame sizes differ by at most one sample.
            let end = count * (i + 1) / frames;
            self.encode_block(start, end, out)?;
            start = end;
        }
        self.pending.drain(..count);
        Ok(())
    }

    fn encode_block(
        &mut self,
        start: usize,
        end: usize,
        out: &mut ByteSink,
    ) -> Result<(), FormatError> {
        self.block.clear();
        self.block
            .extend(self.pending[start..end].iter().map(|&s| i32::from(s)));
        // The frame's block size is the buffer's size.
        self.framebuf.resize(self.block.len());
        self.framebuf
            .fill_interleaved(&self.block)
            .map_err(|e| flac_error("samples", e))?;
        let frame =
            flacenc::encode_fixed_size_frame(&self.config, &self.framebuf, 0, &self.stream_info)
                .map_err(|e| flac_error("encoding", e))?;
        // Switch the header from "frame 0" to "starts at sample n".
        let (mut header, subframes) = frame.into_parts();
        header.set_frame_offset(FrameOffset::StartSample(self.next_sample));
        let frame =
            Frame::new(header, subframes.into_iter()).map_err(|e| flac_error("frame", e))?;
        frame
            .write(out)
            .map_err(|e| flac_error("writing a frame", e))?;
        self.next_sample += self.block.len() as u64;
        Ok(())
    }

    /// The stream header (once), then `frames`.
    fn output(&mut self, frames: ByteSink) -> Bytes {
        let frames = frames.into_inner();
        match self.header.take() {
            Some(header) => {
                let mut out = Vec::with_capacity(header.len() + frames.len());
                out.extend_from_slice(&header);
                out.extend_from_slice(&frames);
                Bytes::from(out)
            }
            None => Bytes::from(frames),
        }
    }
}

/// A flacenc component as bytes (frames and the header are byte-aligned).
fn write_bits<T: BitRepr>(component: &T) -> Result<Bytes, FormatError> {
    let mut sink = ByteSink::with_capacity(component.count_bits());
    component
        .write(&mut sink)
        .map_err(|e| flac_error("writing", e))?;
    Ok(Bytes::from(sink.into_inner()))
}

impl Encoder for FlacEncoder {
    fn push(&mut self, pcm: &[u8]) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.reader.read(pcm, &mut self.pending);
        let mut frames = ByteSink::new();
        if self.pending.len() >= MIN_BLOCK {
            self.encode_pending(self.pending.len(), &mut frames)?;
        }
        Ok(self.output(frames))
    }

    fn finish(&mut self) -> Result<Bytes, FormatError> {
        if self.finished {
            return Err(finished_error());
        }
        self.finished = true;
        let mut frames = ByteSink::new();
        // The last frame may be shorter than `MIN_BLOCK`.
        self.encode_pending(self.pending.len(), &mut frames)?;
        Ok(self.output(frames))
    }

    fn output_sample_rate(&self) -> u32 {
        self.stream_info.sample_rate() as u32
    }
}
