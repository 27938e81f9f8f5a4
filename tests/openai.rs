//! The OpenAI-compatible API, the audio formats on both APIs, and API keys,
//! on the real engine.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

/// Sample rate and duration of an encoded answer, read back by a decoder.
fn decoded(format: &str, bytes: &[u8]) -> (u32, f64) {
    match format {
        "wav" => {
            let wav = parse_wav(bytes);
            (wav.spec.sample_rate, wav.seconds())
        }
        "pcm" => (22050, bytes.len() as f64 / 2.0 / 22050.0),
        // Ogg/Opus: the last page's granule position, less the pre-skip,
        // counts 48 kHz samples (RFC 7845).
        "opus" => {
            let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes.to_vec()));
            let head = reader.read_packet_expected().unwrap();
            assert_eq!(&head.data[..8], b"OpusHead");
            let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]) as u64;
            let mut last = 0;
            let mut eos = false;
            while let Some(packet) = reader.read_packet().unwrap() {
                last = packet.absgp_page();
                eos |= packet.last_in_stream();
            }
            assert!(eos, "no end-of-stream page");
            (48_000, (last - pre_skip) as f64 / 48_000.0)
        }
        "mp3" | "flac" => symphonia_duration(format, bytes),
        other => panic!("no decoder for {other}"),
    }
}

fn symphonia_duration(extension: &str, bytes: &[u8]) -> (u32, f64) {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::io::MediaSourceStream;

    let stream = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        Default::default(),
    );
    let mut hint = symphonia::core::probe::Hint::new();
    hint.with_extension(extension);
    let mut format = symphonia::default::get_probe()
        .format(&hint, stream, &Default::default(), &Default::default())
        .unwrap()
        .format;
    let track = format.default_track().unwrap().clone();
    let rate = track.codec_params.sample_rate.unwrap();
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .unwrap();
    let mut frames = 0usize;
    let mut loud = 0f64;
    while let Ok(packet) = format.next_packet() {
        let audio = decoder.decode(&packet).unwrap();
        let mut buffer = SampleBuffer::<i16>::new(audio.capacity() as u64, *audio.spec());
        buffer.copy_interleaved_ref(audio);
        frames += buffer.samples().len();
        loud += buffer
            .samples()
            .iter()
            .map(|&s| (s as f64).abs())
            .sum::<f64>();
    }
    assert!(
        loud / frames.max(1) as f64 > 100.0,
        "{extension} decodes to silence"
    );
    (rate, frames as f64 / rate as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_on_both_apis_decodes_to_the_same_audio_length() {
    let dir = voices(&[VOICE]);
    // Spool every complete answer, to exercise the temp-file path too.
    let server = Server::start(dir.path(), &[("PIPER_SPOOL_THRESHOLD_MB", "0")]);
    let text = "Every format should carry the same speech. This is the second sentence.";
    // The first request synthesizes and fills the audio cache, so every
    // format below encodes the very same samples: lengths compare exactly.
    let (status, headers, body) = post(&server, "/api/tts", json!({"text": text})).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-audio-cache"], "miss");
    let reference = parse_wav(&body).seconds();

    for format in ["wav", "pcm", "mp3", "opus", "flac"] {
        let answers = [
            post(&server, "/api/tts", json!({"text": text, "response_format": format})).await,
            post(&server, "/api/tts", json!({"text": text, "response_format": format, "stream": true})).await,
            post(
                &server,
                "/v1/audio/speech",
                json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": format}),
            )
            .await,
        ];
        for (i, (status, headers, body)) in answers.into_iter().enumerate() {
            assert_eq!(
                status,
                200,
                "{format} #{i}: {}",
                String::from_utf8_lossy(&body)
            );
            let content_type = headers["content-type"].to_str().unwrap();
            let expected_type = match format {
                "wav" => "audio/wav",
                "pcm" => "audio/pcm",
                "mp3" => "audio/mpeg",
                "opus" => "audio/ogg; codecs=opus",
                _ => "audio/flac",
            };
            assert_eq!(content_type, expected_type);
            let bytes = if format == "wav" && i > 0 {
                // Streamed WAV: sizes are 0xFFFFFFFF; fix them up to parse.
                let mut fixed = body.to_vec();
                let riff = (fixed.len() - 8) as u32;
                let data = (fixed.len() - 44) as u32;
                fixed[4..8].copy_from_slice(&riff.to_le_bytes());
                fixed[40..44].copy_from_slice(&data.to_le_bytes());
                fixed
            } else {
                body.to_vec()
            };
            let (rate, seconds) = decoded(format, &bytes);
            let want_rate = if format == "opus" { 48_000 } else { 22_050 };
            assert_eq!(rate, want_rate, "{format} #{i}");
            assert_eq!(
                headers["x-sample-rate"].to_str().unwrap(),
                want_rate.to_string()
            );
            // Codecs pad to whole frames: MP3 adds up to about 50 ms.
            assert!(
                (seconds - reference).abs() < 0.08,
                "{format} #{i}: {seconds} s against {reference} s"
            );
        }
    }
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": text, "response_format": "aac"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "unsupported_format"
    );
    // Encoding and spooling ran on the server's threads; no engine may
    // have died with a thread meanwhile (the blocking pool retires idle
    // threads after 10 s, so wait that out too).
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let metrics = metrics_text(&server).await;
    assert_eq!(metric(&metrics, "piperd_process_restarts_total{"), 0.0);
    assert_eq!(server.engines().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_streams_before_a_long_input_is_synthesized() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let response = client()
        .post(server.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "input": prose(3000), "voice": VOICE, "response_format": "mp3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert_still_synthesizing(&server).await;
    let mut total = first.len();
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert!(total > 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_errors_have_openai_shape() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let cases = [
        (
            json!({"model": "tts-9", "input": "hi", "voice": "alloy"}),
            400,
            "model",
        ),
        (
            json!({"model": "tts-1", "input": "", "voice": "alloy"}),
            400,
            "input",
        ),
        (
            json!({"model": "tts-1", "input": "hi", "voice": "nobody"}),
            404,
            "voice",
        ),
        (
            json!({"model": "tts-1", "input": "hi", "voice": "alloy", "speed": 9}),
            400,
            "speed",
        ),
        (
            json!({"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "aac"}),
            400,
            "response_format",
        ),
    ];
    for (body, status, param) in cases {
        let (got, _, answer) = post(&server, "/v1/audio/speech", body.clone()).await;
        assert_eq!(got, status, "{body}");
        let value: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(value["error"]["param"], param, "{value}");
        assert!(value["error"]["message"].is_string());
        assert_eq!(value["error"]["type"], "invalid_request_error");
    }
    let (status, models) = get_json(&server, "/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<_> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert!(ids.contains(&json!("tts-1")) && ids.contains(&json!(VOICE)));
    let (status, voices) = get_json(&server, "/v1/audio/voices").await;
    assert_eq!(status, 200);
    assert_eq!(voices["openai_aliases"].as_array().unwrap().len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_works_for_every_format_and_speed() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_API_KEYS", "sdk-key")]);
    let script = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="sdk-key")
out = {}
text = "The software development kit talks to the speech server. It works."
for fmt in ["mp3", "opus", "aac", "flac", "wav", "pcm"]:
    try:
        audio = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format=fmt)
        out[fmt] = len(audio.content)
    except Exception as e:
        out[fmt] = type(e).__name__
for speed in [1.0, 2.0]:
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm", speed=speed)
    out[f"speed_{speed}"] = len(audio.content) / 2 / 22050
try:
    OpenAI(base_url=sys.argv[1] + "/v1", api_key="wrong").audio.speech.create(model="tts-1", voice="alloy", input="x")
except Exception as e:
    out["wrong_key"] = type(e).__name__
print(json.dumps(out))
"#;
    let output = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&server.base)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    for format in ["mp3", "opus", "flac", "wav", "pcm"] {
        assert!(
            result[format].as_u64().unwrap_or(0) > 1000,
            "{format}: {result}"
        );
    }
    assert_eq!(result["aac"], "BadRequestError", "{result}");
    assert_eq!(result["wrong_key"], "AuthenticationError", "{result}");
    let (normal, fast) = (
        result["speed_1.0"].as_f64().unwrap(),
        result["speed_2.0"].as_f64().unwrap(),
    );
    assert!(
        fast < normal * 0.7,
        "speed 2.0 gave {fast} s against {normal} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_route_but_health_and_metrics() {
    let dir = voices(&[VOICE]);
    let secret = "k3y-that-must-never-leak";
    let server = Server::start(
        dir.path(),
        &[("PIPER_API_KEYS", &format!("other-key, {secret}"))],
    );
    let routes: [(&str, &str, Option<Value>); 6] = [
        ("POST", "/api/tts", Some(json!({"text": "Keyed."}))),
        ("POST", "/api/warmup", Some(json!({}))),
        ("GET", "/api/voices", None),
        (
            "POST",
            "/v1/audio/speech",
            Some(json!({"model": "tts-1", "input": "Keyed.", "voice": "alloy"})),
        ),
        ("GET", "/v1/models", None),
        ("GET", "/v1/audio/voices", None),
    ];
    for (method, path, body) in &routes {
        for (key, want) in [(None, 401), (Some("wrong"), 401), (Some(secret), 200)] {
            let mut request = client().request(method.parse().unwrap(), server.url(path));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status().as_u16(),
                want,
                "{method} {path} with {key:?}"
            );
            if want == 401 {
                let value: Value = response.json().await.unwrap();
                let code = if path.starts_with("/v1") {
                    &value["error"]["code"]
                } else {
                    &value["code"]
                };
                assert_eq!(code, "unauthorized", "{path}: {value}");
            }
        }
    }
    for path in ["/health", "/metrics"] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} must stay open for probes");
    }
    let metrics = metrics_text(&server).await;
    assert!(!metrics.contains(secret));
    assert!(
        !server.log().contains(secret),
        "the key appeared in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_lets_the_configured_origin_in() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_CORS_ORIGINS", "https://app.example")]);
    let preflight = client()
        .request(reqwest::Method::OPTIONS, server.url("/v1/audio/speech"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let (_, headers, _) = post(&server, "/api/tts", json!({"text": "Cross origin."})).await;
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "no Origin header sent"
    );
    let response = client()
        .get(server.url("/api/voices"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let refused = client()
        .request(reqwest::Method::OPTIONS, server.url("/api/tts"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_format_sse_sends_audio_deltas_then_done_to_the_official_sdk() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let output = std::process::Command::new(python())
        .arg(root().join("tests/elevenlabs_client.py"))
        .args([port.as_str(), "sse"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let heard: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(heard["content_type"], "text/event-stream", "{heard}");
    let events = heard["events"].as_array().unwrap();
    assert!(events.len() >= 2, "{heard}");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e == "speech.audio.delta"),
        "{heard}"
    );
    assert_eq!(events.last().unwrap(), "speech.audio.done");
    let seconds = heard["bytes"].as_f64().unwrap() / 2.0 / 22050.0;
    assert!((1.0..10.0).contains(&seconds), "{heard}");
    let usage = &heard["done"]["usage"];
    assert_eq!(usage["total_tokens"], 0, "{heard}");
    assert!(
        (usage["output_audio_seconds"].as_f64().unwrap() - seconds).abs() < 0.01,
        "{heard}"
    );

    // Anything but "sse" or "audio" is refused in OpenAI's shape.
    let (status, _, body) = post(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "voice": "alloy", "input": "Hi.", "stream_format": "ndjson"}),
    )
    .await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["param"], "stream_format", "{body}");
}
