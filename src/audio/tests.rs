//! Each format is encoded from a synthetic signal pushed in uneven pieces and
//! decoded back by an independent decoder (symphonia; for Opus the Ogg pages
//! are read with the `ogg` crate and the packets decoded by libopus).

use std::io::Cursor;

use bytes::Bytes;

use super::*;

const TONE_HZ: f64 = 440.0;
const TONE_AMPLITUDE: f64 = 0.3 * 32767.0;
/// Uneven push sizes in samples, cycled: 3 s at 22.05 kHz in four pushes.
const PIECES: [usize; 4] = [7_000, 13_000, 30_000, 16_150];
/// How far a decoded duration may be from the input's.
const DURATION_TOLERANCE_S: f64 = 0.060;
/// LAME's encoder delay (576) plus the MP3 decoder's delay (529): what a
/// decoder puts before the audio when no LAME tag says to trim it.
const MP3_CODEC_DELAY: usize = 576 + 529;

/// A 440 Hz sine plus a little white noise (deterministic xorshift).
fn test_signal(rate: u32, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds).round() as usize;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            let t = i as f64 / f64::from(rate);
            let x = TONE_AMPLITUDE * (2.0 * std::f64::consts::PI * TONE_HZ * t).sin()
                + 0.02 * 32767.0 * noise;
            x.round() as i16
        })
        .collect()
}

fn to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Cuts `pcm` into pieces of the sizes in `PIECES` (cycled), with the first
/// cut one byte late so that a sample straddles two pushes.
fn cut(pcm: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut at = 0;
    for (i, size) in PIECES.iter().cycle().enumerate() {
        if at >= pcm.len() {
            break;
        }
        let mut end = (at + size * 2).min(pcm.len());
        if i == 0 && end < pcm.len() {
            end += 1;
        }
        pieces.push(&pcm[at..end]);
        at = end;
    }
    pieces
}

/// Encodes `samples` pushed in uneven pieces; returns every output piece
/// (the last one from `finish`) and the encoder's output rate.
fn encode(format: AudioFormat, rate: u32, samples: &[i16]) -> (Vec<Bytes>, u32) {
    let mut encoder = encoder(format, rate).expect("an encoder");
    let pcm = to_bytes(samples);
    let mut out: Vec<Bytes> = cut(&pcm)
        .into_iter()
        .map(|piece| encoder.push(piece).expect("push"))
        .collect();
    out.push(encoder.finish().expect("finish"));
    (out, encoder.output_sample_rate())
}

fn concat(pieces: &[Bytes]) -> Vec<u8> {
    pieces.iter().flat_map(|p| p.iter().copied()).collect()
}

/// Decodes a whole file with symphonia: (sample rate, mono samples).
fn symphonia_decode(data: Vec<u8>, extension: &str) -> (u32, Vec<i16>) {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::errors::Error;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let source = MediaSourceStream::new(Box::new(Cursor::new(data)), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(extension);
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .expect("symphonia recognizes the stream");
    let mut reader = probed.format;
    let track = reader.default_track().expect("a track").clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .expect("symphonia has the decoder");
    let mut rate = track.codec_params.sample_rate.expect("a sample rate");
    let mut samples = Vec::new();
    loop {
        let packet = match reader.next_packet() {
            Ok(packet) => packet,
            Err(Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading a packet: {e}"),
        };
        let decoded = decoder.decode(&packet).expect("a packet decodes");
        let spec = *decoded.spec();
        assert_eq!(spec.channels.count(), 1, "mono");
        rate = spec.rate;
        let mut buffer = SampleBuffer::<i16>::new(decoded.capacity() as u64, spec);
        buffer.copy_interleaved_ref(decoded);
        samples.extend_from_slice(buffer.samples());
    }
    (rate, samples)
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// The amplitude of the `TONE_HZ` component (a single-bin DFT). It is near
/// `TONE_AMPLITUDE` only if the audio survived and plays at `rate`: at a
/// wrong rate the tone lands on another frequency and this is near 0.
fn tone_amplitude(samples: &[i16], rate: u32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * TONE_HZ / f64::from(rate);
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &s) in samples.iter().enumerate() {
        let phase = w * n as f64;
        re += f64::from(s) * phase.cos();
        im -= f64::from(s) * phase.sin();
    }
    2.0 * (re * re + im * im).sqrt() / samples.len() as f64
}

fn assert_tone(samples: &[i16], rate: u32) {
    let amplitude = tone_amplitude(samples, rate);
    assert!(
        (amplitude / TONE_AMPLITUDE - 1.0).abs() < 0.15,
        "440 Hz amplitude {amplitude:.0}, expected about {TONE_AMPLITUDE:.0}"
    );
}

#[test]
fn parse_names_and_types() {
    for format in AudioFormat::ALL {
        assert_eq!(AudioFormat::parse(format.name()), Some(format));
        assert_eq!(
            AudioFormat::parse(&format.name().to_uppercase()),
            Some(format)
        );
        assert!(format.content_type().starts_with("audio/"));
    }
    assert_eq!(AudioFormat::parse("Opus"), Some(AudioFormat::Opus));
    assert_eq!(AudioFormat::parse("mP3"), Some(AudioFormat::Mp3));
    assert_eq!(AudioFormat::parse("ogg"), None);
    assert_eq!(AudioFormat::parse(""), None);
    assert_eq!(AudioFormat::parse("wav "), None);
    assert_eq!(AudioFormat::Opus.content_type(), "audio/ogg; codecs=opus");
    assert_eq!(AudioFormat::Mp3.content_type(), "audio/mpeg");
}

#[test]
fn aac_is_unsupported() {
    assert!(!AudioFormat::Aac.is_supported());
    let err = encoder(AudioFormat::Aac, 22_050)
        .err()
        .expect("no AAC encoder");
    assert_eq!(err, FormatError::Unsupported(AudioFormat::Aac));
    assert_eq!(err.to_string(), "audio format aac is not supported");
    for format in AudioFormat::ALL {
        if format != AudioFormat::Aac {
            assert!(format.is_supported());
            assert!(encoder(format, 22_050).is_ok(), "{format}");
        }
    }
}

#[test]
fn finished_encoders_refuse_more() {
    for format in AudioFormat::ALL.into_iter().filter(|f| f.is_supported()) {
        let mut encoder = encoder(format, 16_000).unwrap();
        encoder.push(&[0, 0, 1, 0]).unwrap();
        encoder.finish().unwrap();
        assert!(encoder.push(&[0, 0]).is_err(), "{format}");
        assert!(encoder.finish().is_err(), "{format}");
    }
}

#[test]
fn odd_bytes_wait_for_the_next_piece() {
    let mut reader = pcm::SampleReader::default();
    let mut out = Vec::new();
    reader.read(&[0x34], &mut out);
    assert!(out.is_empty());
    reader.read(&[0x12, 0xff], &mut out);
    reader.read(&[0xff, 0x01, 0x00], &mut out);
    assert_eq!(out, vec![0x1234, -1, 1]);
}

#[test]
fn pcm_passes_through() {
    let samples = test_signal(22_050, 1.0);
    let (pieces, rate) = encode(AudioFormat::Pcm, 22_050, &samples);
    assert_eq!(rate, 22_050);
    assert_eq!(concat(&pieces), to_bytes(&samples));
}

#[test]
fn wav_streams_header_then_samples() {
    let samples = test_signal(22_050, 3.0);
    let (pieces, rate) = encode(AudioFormat::Wav, 22_050, &samples);
    assert_eq!(rate, 22_050);
    let header = crate::audio::streaming_header(22_050);
    assert!(
        pieces[0].starts_with(&header),
        "the first push has the header"
    );
    let wav = concat(&pieces);
    assert_eq!(&wav[header.len()..], &to_bytes(&samples)[..]);
    // A WAV of nothing is the header alone.
    let mut empty = encoder(AudioFormat::Wav, 16_000).unwrap();
    assert_eq!(
        empty.finish().unwrap(),
        crate::audio::streaming_header(16_000)
    );
}

fn check_mp3(rate: u32) {
    let samples = test_signal(rate, 3.0);
    let (pieces, output_rate) = encode(AudioFormat::Mp3, rate, &samples);
    assert_eq!(output_rate, rate);
    let (decoded_rate, decoded) = symphonia_decode(concat(&pieces), "mp3");
    assert_eq!(decoded_rate, rate);
    let decoded_s = (decoded.len() - MP3_CODEC_DELAY) as f64 / f64::from(rate);
    let input_s = samples.len() as f64 / f64::from(rate);
    assert!(
        (decoded_s - input_s).abs() <= DURATION_TOLERANCE_S,
        "decoded {decoded_s:.3} s (after the {MP3_CODEC_DELAY}-sample codec delay), input {input_s:.3} s"
    );
    assert!(rms(&decoded) > 3000.0, "not silence: RMS {}", rms(&decoded));
    assert_tone(
        &decoded[MP3_CODEC_DELAY..MP3_CODEC_DELAY + samples.len()],
        rate,
    );
}

#[test]
fn mp3_decodes_at_22050() {
    check_mp3(22_050);
}

#[test]
fn mp3_decodes_at_16000() {
    check_mp3(16_000);
}

fn check_flac(rate: u32) {
    let samples = test_signal(rate, 3.0);
    let (pieces, output_rate) = encode(AudioFormat::Flac, rate, &samples);
    assert_eq!(output_rate, rate);
    assert!(pieces[0].starts_with(b"fLaC"));
    // Every push went out whole (none is shorter than a frame).
    assert!(pieces[..pieces.len() - 1].iter().all(|p| !p.is_empty()));
    let (decoded_rate, decoded) = symphonia_decode(concat(&pieces), "flac");
    assert_eq!(decoded_rate, rate);
    assert_eq!(decoded.len(), samples.len(), "duration");
    assert!(rms(&decoded) > 3000.0);
    assert!(decoded == samples, "FLAC is lossless");
}

#[test]
fn flac_is_lossless_at_22050() {
    check_flac(22_050);
}

#[test]
fn flac_is_lossless_at_16000() {
    check_flac(16_000);
}

#[test]
fn flac_keeps_a_tiny_tail_for_the_last_frame() {
    // 10 samples cannot be a frame of their own until the stream ends.
    let samples = test_signal(22_050, 0.1);
    let mut encoder = encoder(AudioFormat::Flac, 22_050).unwrap();
    let mut flac = encoder.push(&to_bytes(&samples[..10])).unwrap().to_vec();
    flac.extend_from_slice(&encoder.push(&to_bytes(&samples[10..1000])).unwrap());
    flac.extend_from_slice(&encoder.push(&to_bytes(&samples[1000..2200])).unwrap());
    flac.extend_from_slice(&encoder.push(&to_bytes(&samples[2200..])).unwrap());
    flac.extend_from_slice(&encoder.finish().unwrap());
    let (_, decoded) = symphonia_decode(flac, "flac");
    assert!(decoded == samples);
}

#[test]
fn resampling_keeps_length_and_timing() {
    // A pure 440 Hz sine resampled 22.05 -> 48 kHz must be the same sine at
    // 48 kHz, sample for sample: same length, no delay, no phase shift.
    let (from, to) = (22_050u32, 48_000u32);
    let n = 30_277;
    let sine = |rate: u32, i: usize| {
        (0.5 * (2.0 * std::f64::consts::PI * TONE_HZ * i as f64 / f64::from(rate)).sin()) as f32
    };
    let input: Vec<f32> = (0..n).map(|i| sine(from, i)).collect();
    let mut resampler = resample::Resampler::new(from, to).unwrap();
    let mut out = Vec::new();
    for piece in [
        &input[..1_000],
        &input[1_000..1_441],
        &input[1_441..20_000],
        &input[20_000..],
    ] {
        resampler.push(piece, &mut out).unwrap();
    }
    resampler.finish(&mut out).unwrap();
    let expected_len = (n as f64 * f64::from(to) / f64::from(from)).round() as usize;
    assert_eq!(out.len(), expected_len);
    // Away from the two ends, where the sine starts and stops abruptly.
    let worst = (2_000..out.len() - 2_000)
        .map(|i| (out[i] - sine(to, i)).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-4,
        "largest deviation from the ideal sine: {worst}"
    );
}

/// What the Ogg pages of an Opus stream say, checked on the way.
struct OggOpus {
    pre_skip: u64,
    final_granule: u64,
    decoded: Vec<i16>,
}

fn read_ogg_opus(data: Vec<u8>) -> OggOpus {
    let mut reader = ogg::reading::PacketReader::new(Cursor::new(data));
    let head = reader.read_packet_expected().expect("OpusHead");
    assert!(head.first_in_stream(), "beginning of stream");
    assert!(head.last_in_page(), "OpusHead is alone on its page");
    assert_eq!(head.absgp_page(), 0);
    assert_eq!(&head.data[..8], b"OpusHead");
    assert_eq!(head.data.len(), 19);
    assert_eq!(head.data[8], 1, "version");
    assert_eq!(head.data[9], 1, "mono");
    assert_eq!(head.data[18], 0, "mapping family 0");
    let pre_skip = u64::from(u16::from_le_bytes([head.data[10], head.data[11]]));
    assert!(pre_skip > 0);
    let serial = head.stream_serial();

    let tags = reader.read_packet_expected().expect("OpusTags");
    assert_eq!(&tags.data[..8], b"OpusTags");
    assert!(tags.last_in_page(), "OpusTags ends its page");
    assert_eq!(tags.absgp_page(), 0);

    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut frame = vec![0i16; 5760];
    let mut decoded = Vec::new();
    let mut last_granule = 0;
    let mut eos = false;
    while let Some(packet) = reader.read_packet().expect("pages are valid") {
        assert!(!eos, "nothing after the end of stream");
        assert_eq!(packet.stream_serial(), serial);
        let n = decoder.decode(&packet.data, &mut frame, false).unwrap();
        assert_eq!(n, 960, "20 ms packets");
        decoded.extend_from_slice(&frame[..n]);
        if packet.last_in_page() {
            let granule = packet.absgp_page();
            assert!(granule > last_granule, "granules increase");
            if packet.last_in_stream() {
                // The last page may end before its padding.
                assert!(granule <= decoded.len() as u64);
                assert!(granule + 960 > decoded.len() as u64);
            } else {
                assert_eq!(granule, decoded.len() as u64, "granule = samples so far");
            }
            last_granule = granule;
        }
        eos = packet.last_in_stream();
    }
    assert!(eos, "the last page has the end-of-stream flag");
    OggOpus {
        pre_skip,
        final_granule: last_granule,
        decoded,
    }
}

fn check_opus(rate: u32) {
    let samples = test_signal(rate, 3.0);
    let (pieces, output_rate) = encode(AudioFormat::Opus, rate, &samples);
    assert_eq!(output_rate, 48_000);
    // Each push ends a page, so every piece is whole pages.
    for piece in pieces.iter().filter(|p| !p.is_empty()) {
        assert!(piece.starts_with(b"OggS"));
    }
    let stream = read_ogg_opus(concat(&pieces));
    let length = stream.final_granule - stream.pre_skip;
    let decoded_s = length as f64 / 48_000.0;
    let input_s = samples.len() as f64 / f64::from(rate);
    assert!(
        (decoded_s - input_s).abs() <= DURATION_TOLERANCE_S,
        "decoded {decoded_s:.3} s, input {input_s:.3} s"
    );
    // In fact exact, give or take the rounding of one resampled sample.
    assert!((length as f64 - input_s * 48_000.0).abs() <= 1.0);
    let audio = &stream.decoded[stream.pre_skip as usize..stream.final_granule as usize];
    assert!(rms(audio) > 3000.0, "not silence: RMS {}", rms(audio));
    assert_tone(audio, 48_000);
}

#[test]
fn opus_in_ogg_at_22050_is_resampled() {
    check_opus(22_050);
}

#[test]
fn opus_in_ogg_at_16000() {
    check_opus(16_000);
}

#[test]
fn opus_in_ogg_at_24000() {
    check_opus(24_000);
}

#[test]
fn opus_of_nothing_is_a_valid_empty_stream() {
    let mut encoder = encoder(AudioFormat::Opus, 22_050).unwrap();
    let ogg = encoder.finish().unwrap().to_vec();
    let stream = read_ogg_opus(ogg);
    assert_eq!(stream.final_granule, stream.pre_skip, "zero samples long");
}

/// Thread CPU time in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Something closer to speech than a sine: a gliding 100-220 Hz voice with
/// 30 harmonics, syllable-rate loudness and a little noise.
fn speechlike(rate: u32, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds) as usize;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let f0 = 160.0 + 60.0 * (2.0 * std::f64::consts::PI * 0.5 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / f64::from(rate);
            let voice: f64 = (1..=30)
                .filter(|k| f64::from(*k) * f0 < f64::from(rate) / 2.0)
                .map(|k| (phase * f64::from(k)).sin() / f64::from(k))
                .sum();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            let envelope = (2.0 * std::f64::consts::PI * 2.0 * t).sin().abs();
            (6000.0 * envelope * voice + 300.0 * noise).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Encode cost per second of audio, per format: run with
/// `cargo test --release --lib formats -- --ignored --nocapture`.
#[test]
#[ignore]
fn encode_cost() {
    let seconds = 60.0;
    let cases = [
        (AudioFormat::Pcm, 22_050),
        (AudioFormat::Wav, 22_050),
        (AudioFormat::Mp3, 22_050),
        (AudioFormat::Mp3, 16_000),
        (AudioFormat::Opus, 22_050),
        (AudioFormat::Opus, 16_000),
        (AudioFormat::Opus, 24_000),
        (AudioFormat::Flac, 22_050),
        (AudioFormat::Flac, 16_000),
    ];
    println!("format  rate    CPU ms per audio s   output kbit/s");
    for (format, rate) in cases {
        let pcm = to_bytes(&speechlike(rate, seconds));
        // Sentences of about 3 s.
        let piece = rate as usize * 3 * 2;
        let mut best = f64::INFINITY;
        let mut bytes = 0;
        for _ in 0..3 {
            let start = thread_cpu_seconds();
            let mut encoder = encoder(format, rate).unwrap();
            bytes = 0;
            for chunk in pcm.chunks(piece) {
                bytes += encoder.push(chunk).unwrap().len();
            }
            bytes += encoder.finish().unwrap().len();
            best = best.min(thread_cpu_seconds() - start);
        }
        println!(
            "{:<6}  {:<6}  {:>18.2}   {:>13.1}",
            format.name(),
            rate,
            best * 1000.0 / seconds,
            bytes as f64 * 8.0 / 1000.0 / seconds
        );
    }
    // The resampler alone: its share of Opus at 22.05 kHz.
    let floats: Vec<f32> = speechlike(22_050, seconds)
        .iter()
        .map(|&s| f32::from(s) / 32768.0)
        .collect();
    let start = thread_cpu_seconds();
    let mut resampler = resample::Resampler::new(22_050, 48_000).unwrap();
    let mut out = Vec::new();
    for chunk in floats.chunks(22_050 * 3) {
        resampler.push(chunk, &mut out).unwrap();
    }
    resampler.finish(&mut out).unwrap();
    let cost = thread_cpu_seconds() - start;
    assert_eq!(out.len(), 48_000 * seconds as usize);
    println!(
        "(resampling 22050 -> 48000 alone: {:.2} CPU ms per audio s)",
        cost * 1000.0 / seconds
    );
}
