//! Sample rates per request and G.711 for phone systems, on the real engine,
//! with Python's `audioop` (Sun's reference G.711) as the reference codec.

mod common;

use std::process::Command;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const TEXT: &str = "Your call is important to us. Please stay on the line.";
const RATES: [u32; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];

async fn tts(server: &Server, body: Value) -> (reqwest::header::HeaderMap, bytes::Bytes) {
    let (status, headers, bytes) = post(server, "/api/tts", body).await;
    assert_eq!(
        status,
        200,
        "{}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
    );
    (headers, bytes)
}

async fn streamed(server: &Server, path: &str, body: Value) -> Vec<u8> {
    let mut stream = post_stream(server, path, body).await;
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.unwrap());
    }
    out
}

/// Runs Python with `audioop` on files; returns what the script prints.
fn audioop(script: &str, args: &[&std::path::Path]) -> String {
    let out = Command::new(python())
        .arg("-W")
        .arg("ignore::DeprecationWarning")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A G.711 WAV: its format tag, rate and the coded bytes after the header,
/// checking that every size in the header agrees with the bytes.
fn parse_g711_wav(bytes: &[u8], complete: bool) -> (u16, u32, Vec<u8>) {
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    assert_eq!(u32_at(16), 18, "fmt chunk of a non-PCM WAV");
    let tag = u16_at(20);
    assert_eq!(u16_at(22), 1, "mono");
    let rate = u32_at(24);
    assert_eq!(u32_at(28), rate, "bytes a second");
    assert_eq!(u16_at(32), 1, "block align");
    assert_eq!(u16_at(34), 8, "bits a sample");
    assert_eq!(&bytes[38..42], b"fact");
    assert_eq!(&bytes[50..54], b"data");
    let data = bytes[58..].to_vec();
    if complete {
        assert_eq!(u32_at(4) as usize, bytes.len() - 8);
        assert_eq!(u32_at(46) as usize, data.len(), "fact sample count");
        assert_eq!(u32_at(54) as usize, data.len(), "data size");
    } else {
        assert_eq!(u32_at(4), u32::MAX);
        assert_eq!(u32_at(54), u32::MAX);
    }
    (tag, rate, data)
}

#[test]
fn g711_codes_every_sample_as_audioop_does() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<u8> = (i16::MIN..=i16::MAX).flat_map(i16::to_le_bytes).collect();
    let pcm = dir.path().join("all.pcm");
    std::fs::write(&pcm, &all).unwrap();
    let script = "import audioop, sys\n\
        pcm = open(sys.argv[1], 'rb').read()\n\
        open(sys.argv[2], 'wb').write(audioop.lin2ulaw(pcm, 2))\n\
        open(sys.argv[3], 'wb').write(audioop.lin2alaw(pcm, 2))\n\
        codes = bytes(range(256))\n\
        open(sys.argv[4], 'wb').write(audioop.ulaw2lin(codes, 2) + audioop.alaw2lin(codes, 2))\n";
    let files: Vec<_> = ["u", "a", "decoded"]
        .iter()
        .map(|n| dir.path().join(n))
        .collect();
    audioop(script, &[&pcm, &files[0], &files[1], &files[2]]);
    let ulaw = std::fs::read(&files[0]).unwrap();
    let alaw = std::fs::read(&files[1]).unwrap();
    use piperd::audio::g711;
    for (i, sample) in (i16::MIN..=i16::MAX).enumerate() {
        assert_eq!(g711::linear_to_ulaw(sample), ulaw[i], "μ-law of {sample}");
        assert_eq!(g711::linear_to_alaw(sample), alaw[i], "A-law of {sample}");
    }
    let decoded = std::fs::read(&files[2]).unwrap();
    for code in 0..=255u8 {
        let at = usize::from(code) * 2;
        let u = i16::from_le_bytes([decoded[at], decoded[at + 1]]);
        let a = i16::from_le_bytes([decoded[512 + at], decoded[512 + at + 1]]);
        assert_eq!(g711::ulaw_to_linear(code), u, "μ-law code {code}");
        assert_eq!(g711::alaw_to_linear(code), a, "A-law code {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g711_is_the_same_requests_8khz_pcm_as_a_reference_decoder_reads_it() {
    let voices = voices(&[VOICE]);
    let server = Server::start(voices.path(), &[]);
    // The first answer fills the audio cache: every later one encodes the
    // very same PCM, so the formats can be compared sample for sample.
    let (headers, pcm) = tts(
        &server,
        json!({"text": TEXT, "response_format": "pcm", "sample_rate": 8000}),
    )
    .await;
    assert_eq!(headers["x-sample-rate"], "8000");
    assert!(pcm.len() > 8_000, "{} bytes", pcm.len());

    // Raw, 8 kHz by default, on both APIs.
    let (headers, ulaw) = tts(&server, json!({"text": TEXT, "response_format": "ulaw"})).await;
    assert_eq!(headers["content-type"], "audio/PCMU");
    assert_eq!(headers["x-sample-rate"], "8000");
    assert_eq!(headers["x-audio-cache"], "hit");
    let alaw = streamed(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "alaw"}),
    )
    .await;
    assert_eq!(ulaw.len() * 2, pcm.len());
    assert_eq!(alaw.len() * 2, pcm.len());

    // In WAV, complete and streamed.
    let (headers, wav_u) = tts(
        &server,
        json!({"text": TEXT, "response_format": "wav_ulaw"}),
    )
    .await;
    assert_eq!(headers["content-type"], "audio/wav");
    let (tag, rate, data) = parse_g711_wav(&wav_u, true);
    assert_eq!((tag, rate), (7, 8000));
    assert_eq!(data, ulaw.to_vec());
    let wav_a = streamed(
        &server,
        "/api/tts",
        json!({"text": TEXT, "response_format": "wav_alaw", "stream": true}),
    )
    .await;
    let (tag, rate, data) = parse_g711_wav(&wav_a, false);
    assert_eq!((tag, rate), (6, 8000));
    assert_eq!(data, alaw);

    // The reference: audioop decodes ours, and encodes the PCM as we did.
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = ["pcm", "ulaw", "alaw"]
        .iter()
        .map(|n| dir.path().join(n))
        .collect();
    std::fs::write(&paths[0], &pcm).unwrap();
    std::fs::write(&paths[1], &ulaw).unwrap();
    std::fs::write(&paths[2], &alaw).unwrap();
    let script = "import audioop, json, sys\n\
        pcm, u, a = (open(p, 'rb').read() for p in sys.argv[1:4])\n\
        def worst(x, y):\n\
        \x20   xs = memoryview(x).cast('h'); ys = memoryview(y).cast('h')\n\
        \x20   return max(abs(p - q) - abs(p) // 16 for p, q in zip(xs, ys))\n\
        du, da = audioop.ulaw2lin(u, 2), audioop.alaw2lin(a, 2)\n\
        print(json.dumps({'len': [len(pcm), len(du), len(da)],\n\
        \x20   'worst': [worst(pcm, du), worst(pcm, da)],\n\
        \x20   'same_as_encoded': [audioop.lin2ulaw(pcm, 2) == u, audioop.lin2alaw(pcm, 2) == a],\n\
        \x20   'rms': [audioop.rms(pcm, 2), audioop.rms(du, 2), audioop.rms(da, 2)]}))\n";
    let report: Value =
        serde_json::from_str(&audioop(script, &[&paths[0], &paths[1], &paths[2]])).unwrap();
    assert_eq!(report["len"], json!([pcm.len(), pcm.len(), pcm.len()]));
    assert_eq!(report["same_as_encoded"], json!([true, true]), "{report}");
    // Each decoded sample is within G.711's step of the PCM's: a 16th of
    // its size, plus the smallest step.
    for worst in report["worst"].as_array().unwrap() {
        assert!(worst.as_i64().unwrap() <= 16, "{report}");
    }
    let rms: Vec<f64> = serde_json::from_value(report["rms"].clone()).unwrap();
    assert!(rms[0] > 300.0, "the PCM is speech, not silence: {report}");
    for decoded in &rms[1..] {
        assert!((decoded / rms[0] - 1.0).abs() < 0.05, "{report}");
    }
    assert!(server.engines().len() <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_rate_keeps_the_native_duration() {
    let voices = voices(&[VOICE]);
    let server = Server::start(voices.path(), &[]);
    let (_, native) = tts(&server, json!({"text": TEXT})).await;
    let native = parse_wav(&native);
    assert_eq!(native.spec.sample_rate, 22_050);
    let native_s = native.seconds();
    assert!(native_s > 1.0, "{native_s} s");
    for rate in RATES {
        // Complete WAV on piperd's API.
        let (headers, wav) = tts(&server, json!({"text": TEXT, "sample_rate": rate})).await;
        assert_eq!(headers["x-sample-rate"], rate.to_string().as_str());
        let wav = parse_wav(&wav);
        assert_eq!(wav.spec.sample_rate, rate);
        let ratio = wav.seconds() / native_s;
        assert!((ratio - 1.0).abs() <= 0.01, "{rate} Hz: {ratio}");
        assert!(rms(&wav.samples) > 0.5 * rms(&native.samples), "{rate} Hz");
        // Streamed raw PCM on OpenAI's.
        let pcm = streamed(
            &server,
            "/v1/audio/speech",
            json!({"model": "tts-1", "voice": "alloy", "input": TEXT,
                   "response_format": "pcm", "sample_rate": rate}),
        )
        .await;
        let seconds = pcm.len() as f64 / 2.0 / f64::from(rate);
        assert!((seconds / native_s - 1.0).abs() <= 0.01, "{rate} Hz pcm");
        // Streamed G.711 at the asked rate.
        let ulaw = streamed(
            &server,
            "/api/tts",
            json!({"text": TEXT, "response_format": "ulaw", "sample_rate": rate, "stream": true}),
        )
        .await;
        let seconds = ulaw.len() as f64 / f64::from(rate);
        assert!((seconds / native_s - 1.0).abs() <= 0.01, "{rate} Hz ulaw");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sample_rate_is_a_clear_error_on_both_apis() {
    let voices = voices(&[VOICE]);
    let server = Server::start(voices.path(), &[]);
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": TEXT, "sample_rate": 11025}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "invalid_parameter");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["param"], "sample_rate");
    let (status, _, body) = post(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "voice": "alloy", "input": TEXT, "sample_rate": -5}),
    )
    .await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, _, body) = post(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "voice": "alloy", "input": TEXT, "sample_rate": 7}),
    )
    .await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["param"], "sample_rate", "{body}");
    // No engine was needed to refuse them.
    assert!(server.engines().is_empty());
}
