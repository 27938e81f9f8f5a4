//! The soak's decoder: reads answers on stdin and says what they decode to,
//! with decoders independent of piperd's encoders (symphonia for WAV and
//! MP3, libopus for Ogg Opus packets read by the `ogg` crate, the bytes
//! themselves for raw PCM), so the Python driver (tests/soak/driver.py) can
//! check every answer without ffmpeg.
//!
//! Protocol, one answer after another: a line `FORMAT RATE LENGTH` (`RATE`
//! only matters for `pcm`), then `LENGTH` bytes. The reply is one JSON line:
//! `{"ok": true, "rate", "seconds", "rms"}` or `{"ok": false, "error"}`.
//! Formats: `wav` (complete, exact sizes), `wav-stream` (sizes 0xFFFFFFFF),
//! `pcm`, `mp3`, `opus`.

use std::io::{BufRead, Read, Write};

fn main() {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [format, rate, length] = fields[..] else {
            eprintln!("soak-decode: bad request line {line:?}");
            std::process::exit(2);
        };
        let rate: u32 = rate.parse().unwrap_or(0);
        let length: usize = length.parse().unwrap_or(0);
        let mut bytes = vec![0u8; length];
        if input.read_exact(&mut bytes).is_err() {
            return;
        }
        let reply = match decode(format, rate, &bytes) {
            Ok((rate, samples)) => serde_json::json!({
                "ok": true,
                "rate": rate,
                "seconds": samples.len() as f64 / f64::from(rate.max(1)),
                "rms": rms(&samples),
            }),
            Err(error) => serde_json::json!({"ok": false, "error": error}),
        };
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}

/// (sample rate, mono samples) of an answer, or why it does not decode.
fn decode(format: &str, rate: u32, bytes: &[u8]) -> Result<(u32, Vec<i16>), String> {
    match format {
        "pcm" => {
            if bytes.len() % 2 != 0 {
                return Err(format!("odd PCM length {}", bytes.len()));
            }
            Ok((rate, pcm(bytes)))
        }
        "wav" => {
            if bytes.len() < 44 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
                return Err("no RIFF/WAVE header".into());
            }
            let riff = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
            if riff != bytes.len() - 8 {
                return Err(format!("RIFF size {riff} for {} bytes", bytes.len()));
            }
            symphonia(bytes, "wav")
        }
        "wav-stream" => {
            if bytes.len() < 44 || &bytes[0..4] != b"RIFF" || bytes[4..8] != [0xff; 4] {
                return Err("no streamed RIFF header".into());
            }
            // Give it its real sizes, as a client does once the transfer is
            // complete, then read it like any WAV.
            let mut fixed = bytes.to_vec();
            let riff = (fixed.len() - 8) as u32;
            let data = (fixed.len() - 44) as u32;
            fixed[4..8].copy_from_slice(&riff.to_le_bytes());
            fixed[40..44].copy_from_slice(&data.to_le_bytes());
            symphonia(&fixed, "wav")
        }
        "mp3" => symphonia(bytes, "mp3"),
        "opus" => opus(bytes),
        other => Err(format!("no decoder for {other}")),
    }
}

fn pcm(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect()
}

fn symphonia(bytes: &[u8], extension: &str) -> Result<(u32, Vec<i16>), String> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::errors::Error;
    use symphonia::core::io::MediaSourceStream;

    let stream = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        Default::default(),
    );
    let mut hint = symphonia::core::probe::Hint::new();
    hint.with_extension(extension);
    let mut format = symphonia::default::get_probe()
        .format(&hint, stream, &Default::default(), &Default::default())
        .map_err(|e| format!("{extension}: not recognized: {e}"))?
        .format;
    let track = format
        .default_track()
        .ok_or_else(|| format!("{extension}: no track"))?
        .clone();
    let rate = track
        .codec_params
        .sample_rate
        .ok_or_else(|| format!("{extension}: no sample rate"))?;
    let channels = track.codec_params.channels.map_or(1, |c| c.count());
    if channels != 1 {
        return Err(format!("{extension}: {channels} channels, not mono"));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| format!("{extension}: no decoder: {e}"))?;
    let mut samples = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("{extension}: {e}")),
        };
        let audio = decoder
            .decode(&packet)
            .map_err(|e| format!("{extension}: packet does not decode: {e}"))?;
        let mut buffer = SampleBuffer::<i16>::new(audio.capacity() as u64, *audio.spec());
        buffer.copy_interleaved_ref(audio);
        samples.extend_from_slice(buffer.samples());
    }
    Ok((rate, samples))
}

/// Ogg Opus (RFC 7845): the head, the tags, then every packet decoded by
/// libopus; the length is the last granule position less the pre-skip.
fn opus(bytes: &[u8]) -> Result<(u32, Vec<i16>), String> {
    let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes.to_vec()));
    let head = reader
        .read_packet()
        .map_err(|e| format!("opus: {e}"))?
        .ok_or("opus: empty")?;
    if head.data.len() < 19 || &head.data[..8] != b"OpusHead" {
        return Err("opus: no OpusHead".into());
    }
    let pre_skip = usize::from(u16::from_le_bytes([head.data[10], head.data[11]]));
    let tags = reader
        .read_packet()
        .map_err(|e| format!("opus: {e}"))?
        .ok_or("opus: no OpusTags")?;
    if !tags.data.starts_with(b"OpusTags") {
        return Err("opus: no OpusTags".into());
    }
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono)
        .map_err(|e| format!("opus decoder: {e}"))?;
    let mut frame = vec![0i16; 5760];
    let mut samples = Vec::new();
    let mut granule = 0u64;
    let mut eos = false;
    while let Some(packet) = reader.read_packet().map_err(|e| format!("opus: {e}"))? {
        let n = decoder
            .decode(&packet.data, &mut frame, false)
            .map_err(|e| format!("opus: packet does not decode: {e}"))?;
        samples.extend_from_slice(&frame[..n]);
        if packet.last_in_page() {
            granule = packet.absgp_page();
        }
        eos |= packet.last_in_stream();
    }
    if !eos {
        return Err("opus: no end-of-stream page".into());
    }
    let end = (granule as usize).min(samples.len());
    Ok((48_000, samples[pre_skip.min(end)..end].to_vec()))
}

fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}
