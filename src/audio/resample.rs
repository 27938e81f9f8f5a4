//! Streaming sample-rate conversion with `rubato`.
//!
//! The ratio is fixed for a stream, so the synchronous FFT resampler fits:
//! it filters in the frequency domain with a windowed-sinc anti-aliasing
//! filter as long as its input chunk (588 taps at 22.05 kHz, see
//! [`chunk_size`]), which is both faster and cleaner than a time-domain sinc of the
//! same length, and nothing like linear interpolation. Input is cut into the
//! resampler's fixed chunks, and what does not fill a chunk waits for the
//! next push. The resampler's delay is dropped from the front and the output
//! is cut to the exact length at the end, so `n` input samples become
//! `round(n * out / in)` output samples, aligned with the input.

use bytes::{Bytes, BytesMut};
use rubato::{FftFixedInOut, Resampler as _};

use super::pcm::SampleReader;
use super::{Encoder, FormatError};

/// The shortest input chunk, in milliseconds. Longer means a longer
/// (sharper) filter and fewer FFTs, and also more of the end of a sentence
/// held back until the next push or the end of the stream.
const CHUNK_MS: u64 = 20;

/// The input chunk for `FftFixedInOut`: at least `CHUNK_MS`, and an *even*
/// multiple of the smallest chunk the ratio allows (147 samples for
/// 22.05 -> 48 kHz), so that both the input and the output chunk are even.
/// The filter is centred on input sample `chunk / 2`; only when both are even
/// is its delay exactly the whole number of output samples that
/// `output_delay` reports (`chunk_out / 2`). With an odd chunk (441 for
/// 20 ms) the output would come out about one sample early at 48 kHz.
fn chunk_size(input_rate: u32, output_rate: u32) -> usize {
    let (input_rate, output_rate) = (u64::from(input_rate), u64::from(output_rate));
    let (mut a, mut b) = (input_rate, output_rate);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let unit = input_rate / a;
    let wanted = (input_rate * CHUNK_MS).div_ceil(1000);
    let units = wanted.div_ceil(unit).max(1);
    (units + units % 2) as usize * unit as usize
}

pub(super) struct Resampler {
    inner: FftFixedInOut<f32>,
    input_rate: u64,
    output_rate: u64,
    /// Input not yet resampled (less than a chunk between pushes).
    pending: Vec<f32>,
    /// Output samples still to drop: the resampler's delay.
    delay_left: usize,
    /// Input samples received, and output samples given out.
    input_count: u64,
    output_count: u64,
    chunk_out: Vec<Vec<f32>>,
}

impl Resampler {
    pub(super) fn new(input_rate: u32, output_rate: u32) -> Result<Resampler, FormatError> {
        let chunk = chunk_size(input_rate, output_rate);
        let inner = FftFixedInOut::<f32>::new(input_rate as usize, output_rate as usize, chunk, 1)
            .map_err(|e| FormatError::Encode(format!("cannot make a resampler: {e}")))?;
        let chunk_out = inner.output_buffer_allocate(true);
        Ok(Resampler {
            delay_left: inner.output_delay(),
            inner,
            input_rate: u64::from(input_rate),
            output_rate: u64::from(output_rate),
            pending: Vec::new(),
            input_count: 0,
            output_count: 0,
            chunk_out,
        })
    }

    /// Resamples `input`, appending every output sample that is ready.
    pub(super) fn push(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), FormatError> {
        self.input_count += input.len() as u64;
        self.pending.extend_from_slice(input);
        let chunk = self.inner.input_frames_next();
        let mut used = 0;
        while self.pending.len() - used >= chunk {
            let (consumed, _) = self.process(used, out)?;
            used += consumed;
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Resamples what is left (padded with silence) and flushes the delay
    /// line, ending the output at exactly the input's duration.
    pub(super) fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), FormatError> {
        let total = (self.input_count * self.output_rate + self.input_rate / 2) / self.input_rate;
        let chunk = self.inner.input_frames_next();
        while self.output_count < total {
            self.pending.resize(chunk, 0.0);
            let before = out.len();
            self.process(0, out)?;
            self.pending.clear();
            // Only the zeros' own output past the end is cut.
            let over = (self.output_count.saturating_sub(total)) as usize;
            out.truncate(out.len() - over.min(out.len() - before));
            self.output_count = self.output_count.min(total);
        }
        Ok(())
    }

    /// Runs one chunk of `pending` from `at`; returns (consumed, produced).
    fn process(&mut self, at: usize, out: &mut Vec<f32>) -> Result<(usize, usize), FormatError> {
        let chunk = self.inner.input_frames_next();
        let input = [&self.pending[at..at + chunk]];
        let (consumed, produced) = self
            .inner
            .process_into_buffer(&input, &mut self.chunk_out, None)
            .map_err(|e| FormatError::Encode(format!("resampling failed: {e}")))?;
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        out.extend_from_slice(&self.chunk_out[0][skip..produced]);
        self.output_count += (produced - skip) as u64;
        Ok((consumed, produced - skip))
    }
}

/// Any encoder fed at another rate: PCM is resampled, then encoded.
pub(super) struct Resampled {
    resampler: Resampler,
    reader: SampleReader,
    samples: Vec<i16>,
    input: Vec<f32>,
    output: Vec<f32>,
    inner: Box<dyn Encoder>,
}

impl Resampled {
    pub(super) fn new(
        input_rate: u32,
        output_rate: u32,
        inner: Box<dyn Encoder>,
    ) -> Result<Resampled, FormatError> {
        Ok(Resampled {
            resampler: Resampler::new(input_rate, output_rate)?,
            reader: SampleReader::default(),
            samples: Vec::new(),
            input: Vec::new(),
            output: Vec::new(),
            inner,
        })
    }

    /// The resampled output so far as PCM bytes, clipped and rounded.
    fn take_pcm(&mut self) -> Vec<u8> {
        let pcm = self
            .output
            .iter()
            .flat_map(|&x| ((x * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes())
            .collect();
        self.output.clear();
        pcm
    }
}

impl Encoder for Resampled {
    fn push(&mut self, pcm: &[u8]) -> Result<Bytes, FormatError> {
        self.samples.clear();
        self.reader.read(pcm, &mut self.samples);
        self.input.clear();
        self.input
            .extend(self.samples.iter().map(|&s| f32::from(s) / 32768.0));
        self.resampler.push(&self.input, &mut self.output)?;
        let pcm = self.take_pcm();
        self.inner.push(&pcm)
    }

    fn finish(&mut self) -> Result<Bytes, FormatError> {
        self.resampler.finish(&mut self.output)?;
        let pcm = self.take_pcm();
        let last = self.inner.push(&pcm)?;
        let tail = self.inner.finish()?;
        let mut out = BytesMut::with_capacity(last.len() + tail.len());
        out.extend_from_slice(&last);
        out.extend_from_slice(&tail);
        Ok(out.freeze())
    }

    fn output_sample_rate(&self) -> u32 {
        self.inner.output_sample_rate()
    }
}
