//! ElevenLabs' text-to-speech WebSockets (stream-input, multi-stream-input)
//! on the real engine, driven by a Rust WebSocket client for the protocol's
//! edge cases; the official SDK and Pipecat's sequence run in
//! tests/elevenlabs_client.py.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long any one message may take to come (an engine start included).
const WAIT: Duration = Duration::from_secs(60);

fn ws_url(server: &Server, path: &str) -> String {
    server.url(path).replacen("http://", "ws://", 1)
}

async fn connect(server: &Server, path: &str) -> Socket {
    connect_with(server, path, &[]).await
}

async fn connect_with(server: &Server, path: &str, headers: &[(&'static str, &str)]) -> Socket {
    let mut request = ws_url(server, path).into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 101);
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// What the server sent: JSON messages in order, and how it closed.
#[derive(Debug, Default)]
struct Heard {
    messages: Vec<Value>,
    close: Option<(u16, String)>,
}

impl Heard {
    /// The PCM of every audio message (of one context, when given).
    fn audio(&self, context: Option<&str>) -> Vec<u8> {
        let mut pcm = Vec::new();
        for message in &self.messages {
            if context.is_some_and(|c| message["contextId"] != c) {
                continue;
            }
            if let Some(audio) = message["audio"].as_str() {
                pcm.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(audio)
                        .unwrap(),
                );
            }
        }
        pcm
    }

    /// The audio messages (of one context, when given) as the alignment
    /// checks read them: their audio's size and their alignments.
    fn aligned(&self, context: Option<&str>) -> Vec<Value> {
        self.messages
            .iter()
            .filter(|m| context.is_none_or(|c| m["contextId"] == c))
            .filter_map(|m| {
                let audio = m["audio"].as_str()?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(audio)
                    .unwrap()
                    .len();
                Some(json!({
                    "bytes": bytes,
                    "alignment": m["alignment"],
                    "normalizedAlignment": m["normalizedAlignment"],
                }))
            })
            .collect()
    }

    fn finals(&self) -> Vec<Value> {
        self.messages
            .iter()
            .filter(|m| m["isFinal"] == true)
            .cloned()
            .collect()
    }

    fn error(&self) -> &Value {
        self.messages
            .iter()
            .find(|m| m.get("error").is_some())
            .unwrap_or_else(|| panic!("no error message in {:?}", self.messages))
    }
}

/// Reads until the server closes the socket (or `until` holds).
async fn hear(socket: &mut Socket, heard: &mut Heard, until: impl Fn(&Heard) -> bool) {
    while !until(heard) {
        let next = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap_or_else(|_| panic!("nothing within {WAIT:?}; heard {heard:?}"));
        match next {
            Some(Ok(Message::Text(text))) => {
                heard.messages.push(serde_json::from_str(&text).unwrap())
            }
            Some(Ok(Message::Close(frame))) => {
                heard.close = Some(
                    frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new())),
                );
                // Answer the close and read to the end.
                while let Some(Ok(_)) = socket.next().await {}
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("socket failed: {err}; heard {heard:?}"),
            None => return,
        }
    }
}

async fn hear_all(socket: &mut Socket) -> Heard {
    let mut heard = Heard::default();
    hear(socket, &mut heard, |_| false).await;
    heard
}

fn samples(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// One message's alignment (`alignment` or `normalizedAlignment`), checked:
/// characters with times from the message's own start, never going back,
/// the last one starting within the message's audio (`length_ms`, when the
/// format tells it).
fn alignment_of(message: &Value, key: &str, length_ms: Option<f64>) -> Vec<(String, u64, u64)> {
    let alignment = &message[key];
    assert!(alignment.is_object(), "no {key} in {message}");
    let list = |name: &str| {
        alignment[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {message}"))
            .clone()
    };
    let (chars, starts, durations) = (
        list("chars"),
        list("charStartTimesMs"),
        list("charDurationsMs"),
    );
    assert!(!chars.is_empty(), "{message}");
    assert_eq!(chars.len(), starts.len(), "{message}");
    assert_eq!(chars.len(), durations.len(), "{message}");
    let got: Vec<(String, u64, u64)> = chars
        .iter()
        .zip(&starts)
        .zip(&durations)
        .map(|((c, s), d)| {
            let c = c.as_str().unwrap().to_string();
            assert_eq!(c.chars().count(), 1, "{message}");
            // Durations are whole milliseconds, never negative.
            (c, s.as_u64().unwrap(), d.as_u64().unwrap())
        })
        .collect();
    assert!(
        got.windows(2).all(|w| w[0].1 <= w[1].1),
        "{key} goes back: {got:?}"
    );
    if let Some(length) = length_ms {
        let (_, start, duration) = got.last().unwrap();
        assert!(
            (*start as f64) < length,
            "{key} starts past the audio ({length} ms): {got:?}"
        );
        assert!(
            ((start + duration) as f64) <= length + 1.0,
            "{key} ends past the audio ({length} ms): {got:?}"
        );
    }
    got
}

/// Checks a context's audio messages (as [`Heard::aligned`] or
/// tests/elevenlabs_client.py give them; PCM at `rate`, or another format
/// when `None`) against the text sent: every one aligned, as sent and as
/// spoken, except an encoder's tail at the end; the characters joined are
/// the text sent (to its last sentence's end: spaces after it have no
/// audio). Returns each word (between spaces) with its start in ms over the
/// context's audio, as Pipecat reads them.
fn check_alignment(messages: &[Value], sent: &str, rate: Option<f64>) -> Vec<(String, f64)> {
    check_alignments(messages, sent, rate).0
}

/// [`check_alignment`], and the text as spoken (`normalizedAlignment`'s
/// characters joined).
fn check_alignments(
    messages: &[Value],
    sent: &str,
    rate: Option<f64>,
) -> (Vec<(String, f64)>, String) {
    assert!(!messages.is_empty());
    let (mut joined, mut spoken) = (String::new(), String::new());
    let mut words: Vec<(String, f64)> = Vec::new();
    let mut in_word = false;
    let mut offset = 0.0;
    for (n, message) in messages.iter().enumerate() {
        if rate.is_none() && n == messages.len() - 1 && message["alignment"].is_null() {
            break; // the encoder's last frames
        }
        let length_ms = rate.map(|rate| message["bytes"].as_f64().unwrap() / 2.0 / rate * 1000.0);
        for (c, start, _) in alignment_of(message, "alignment", length_ms) {
            joined.push_str(&c);
            if c == " " {
                in_word = false;
            } else if !in_word {
                in_word = true;
                words.push((String::new(), offset + start as f64));
            }
            if in_word {
                words.last_mut().unwrap().0.push_str(&c);
            }
        }
        for (c, _, _) in alignment_of(message, "normalizedAlignment", length_ms) {
            spoken.push_str(&c);
        }
        offset += length_ms.unwrap_or(0.0);
    }
    assert_eq!(
        joined.trim_end(),
        sent.trim_end(),
        "the characters are the text sent"
    );
    assert!(
        spoken.ends_with(' ') && !spoken.trim().is_empty(),
        "{spoken:?}"
    );
    (words, spoken)
}

/// A path (or a query to add to one), headers, and a first message.
type Way<'a> = (&'a str, Vec<(&'static str, &'a str)>, Value);

const SINGLE: &str = "/v1/text-to-speech/en_US-joe-medium/stream-input";
const MULTI: &str = "/v1/text-to-speech/en_US-joe-medium/multi-stream-input";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_input_speaks_text_as_it_arrives_and_ends_with_is_final() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let mut socket = connect(
        &server,
        &format!("{SINGLE}?output_format=pcm_22050&model_id=eleven_flash_v2_5&unknown=1"),
    )
    .await;
    send(&mut socket, json!({"text": " ", "voice_settings": {"stability": 0.5}, "generation_config": {"chunk_length_schedule": [50]}})).await;
    // A sentence cut mid-word; it is complete once the next one starts.
    send(
        &mut socket,
        json!({"text": "Hello there, this is a te", "try_trigger_generation": true}),
    )
    .await;
    send(&mut socket, json!({"text": "st. And a second one"})).await;
    // The first sentence's audio comes before the input ends.
    let mut heard = Heard::default();
    hear(&mut socket, &mut heard, |h| !h.audio(None).is_empty()).await;
    assert!(heard.finals().is_empty());
    send(&mut socket, json!({"text": ""})).await;
    hear(&mut socket, &mut heard, |_| false).await;

    assert_eq!(heard.close.as_ref().map(|c| c.0), Some(1000), "{heard:?}");
    let last = heard.messages.last().unwrap();
    assert_eq!(last["isFinal"], true);
    assert!(last["audio"].is_null());
    for message in &heard.messages[..heard.messages.len() - 1] {
        assert!(message["isFinal"].is_null(), "{message}");
        assert!(message.get("contextId").is_none(), "{message}");
    }
    // Every audio message aligned, the init " " and the text as sent.
    let sent = " Hello there, this is a test. And a second one";
    let words = check_alignment(&heard.aligned(None), sent, Some(22050.0));
    let names: Vec<&str> = words.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(names, sent.split_whitespace().collect::<Vec<_>>());
    assert!(words.windows(2).all(|w| w[0].1 < w[1].1), "{words:?}");
    let pcm = samples(&heard.audio(None));
    let seconds = pcm.len() as f64 / 22050.0;
    assert!((2.0..15.0).contains(&seconds), "{seconds} s of audio");
    assert!(rms(&pcm) > 300.0, "silent audio");
}

/// The times sent are the engine's: with the voice's noise off (so that it
/// makes the same durations every time), each word starts where
/// `/api/tts` with timestamps says it does, to the rounding of a
/// millisecond; and the text as spoken is the normalizer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alignment_is_the_engines_word_times() {
    let dir = voices(&[VOICE]);
    let config = dir.path().join(format!("{VOICE}.onnx.json"));
    let mut voice: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    voice["inference"]["noise_scale"] = json!(0.0);
    voice["inference"]["noise_w"] = json!(0.0);
    std::fs::write(&config, voice.to_string()).unwrap();
    let server = Server::start(dir.path(), &[("PIPER_AUDIO_CACHE_MB", "0")]);
    let text = "Hello there, this is a test. Dr. Smith paid $500 for it.";
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": text, "timestamps": true}),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let timed: Value = serde_json::from_slice(&body).unwrap();
    let expected: Vec<(String, f64)> = timed["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["word"].as_str().unwrap().to_string(),
                w["start"].as_f64().unwrap() * 1000.0,
            )
        })
        .collect();

    let mut socket = connect(&server, &format!("{SINGLE}?output_format=pcm_22050")).await;
    send(&mut socket, json!({"text": " "})).await;
    // As an LLM's tokens: cut anywhere.
    for token in [
        "Hello there, th",
        "is is a test. Dr",
        ". Smith paid $5",
        "00 for it.",
    ] {
        send(&mut socket, json!({"text": token})).await;
    }
    send(&mut socket, json!({"text": ""})).await;
    let heard = hear_all(&mut socket).await;
    let (words, spoken) =
        check_alignments(&heard.aligned(None), &format!(" {text}"), Some(22050.0));
    assert_eq!(
        words.len(),
        expected.len(),
        "{words:?} against {expected:?}"
    );
    for ((word, at), (written, start)) in words.iter().zip(&expected) {
        assert!(word.contains(written.as_str()), "{word} against {written}");
        assert!(
            (at - start).abs() <= 1.0,
            "{word} at {at} ms, /api/tts {start} ms"
        );
    }
    // The spoken line, as the engine was given it.
    assert!(spoken.contains("five hundred dollars"), "{spoken:?}");
    assert!(!spoken.contains('$'), "{spoken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_stream_contexts_are_apart_and_close_context_interrupts() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let mut socket = connect(&server, &format!("{MULTI}?output_format=pcm_22050")).await;
    send(&mut socket, json!({"text": " ", "context_id": "a"})).await;
    send(&mut socket, json!({"text": " ", "context_id": "b"})).await;
    // A long text on b, a short one on a.
    let long = prose(3000);
    send(&mut socket, json!({"text": long, "context_id": "b"})).await;
    send(
        &mut socket,
        json!({"text": "Short answer here.", "contextId": "a", "flush": true}),
    )
    .await;
    // Keepalives, with and without a context, end nothing.
    send(&mut socket, json!({"text": ""})).await;
    send(&mut socket, json!({"text": "", "context_id": "a"})).await;
    let mut heard = Heard::default();
    hear(&mut socket, &mut heard, |h| {
        !h.audio(Some("a")).is_empty() && !h.audio(Some("b")).is_empty()
    })
    .await;
    for message in &heard.messages {
        assert_eq!(message["contextId"], message["context_id"], "{message}");
    }
    // Interrupt b: its final comes at once, and its audio stops.
    let asked = Instant::now();
    send(
        &mut socket,
        json!({"context_id": "b", "close_context": true}),
    )
    .await;
    hear(&mut socket, &mut heard, |h| {
        h.finals().iter().any(|f| f["contextId"] == "b")
    })
    .await;
    let interrupted_in = asked.elapsed();
    assert!(
        interrupted_in < Duration::from_secs(5),
        "{interrupted_in:?}"
    );
    let b_audio = heard.audio(Some("b")).len();
    // a goes on: more text, then its own close.
    send(
        &mut socket,
        json!({"text": "And one more. ", "context_id": "a"}),
    )
    .await;
    send(&mut socket, json!({"context_id": "a", "flush": true})).await;
    let before = heard.audio(Some("a")).len();
    hear(&mut socket, &mut heard, |h| {
        h.audio(Some("a")).len() > before
    })
    .await;
    send(&mut socket, json!({"close_socket": true})).await;
    hear(&mut socket, &mut heard, |_| false).await;
    assert_eq!(heard.close.as_ref().map(|c| c.0), Some(1000), "{heard:?}");
    assert_eq!(
        heard.audio(Some("b")).len(),
        b_audio,
        "b spoke after its close"
    );
    // 3,000 characters are minutes of speech: b was cut well short of it.
    assert!((b_audio as f64) / 2.0 / 22050.0 < 60.0);
    let finals: Vec<_> = heard
        .finals()
        .iter()
        .map(|f| f["contextId"].clone())
        .collect();
    assert_eq!(finals, [json!("b"), json!("a")]);
    // The log tells each context's end.
    let logged = || {
        server
            .log()
            .lines()
            .filter(|l| l.contains("speech streamed") && l.contains("\"elevenlabs\""))
            .count()
    };
    // a's end is logged by its task; b was closed (its task aborted).
    assert!(
        eventually(Duration::from_secs(5), || logged() >= 1).await,
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_and_a_close_code_and_disturbs_nothing() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let pcm = "?output_format=pcm_22050";

    // A context speaking on its own socket, through all the errors below.
    let mut bystander = connect(&server, &format!("{MULTI}{pcm}")).await;
    send(&mut bystander, json!({"text": " ", "context_id": "x"})).await;

    let check = |heard: &Heard, code: &str, close: u16| {
        assert_eq!(heard.error()["error"], code, "{heard:?}");
        assert_eq!(heard.error()["code"], close, "{heard:?}");
        assert!(heard.error()["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(heard.close.as_ref().map(|c| c.0), Some(close), "{heard:?}");
    };

    let mut socket = connect(&server, &format!("{SINGLE}{pcm}")).await;
    socket.send(Message::text("not json")).await.unwrap();
    check(&hear_all(&mut socket).await, "invalid_message", 1008);

    let mut socket = connect(&server, &format!("{MULTI}{pcm}")).await;
    send(&mut socket, json!({"text": 5, "context_id": "a"})).await;
    check(&hear_all(&mut socket).await, "invalid_message", 1008);

    let mut socket = connect(&server, &format!("{SINGLE}{pcm}")).await;
    socket.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    check(&hear_all(&mut socket).await, "binary_message", 1003);

    let mut socket = connect(&server, "/v1/text-to-speech/nobody/stream-input").await;
    check(&hear_all(&mut socket).await, "voice_not_found", 1008);

    let mut socket = connect(&server, &format!("{SINGLE}?output_format=wav_1")).await;
    check(&hear_all(&mut socket).await, "unsupported_format", 1008);

    let mut socket = connect(&server, &format!("{SINGLE}?inactivity_timeout=500")).await;
    check(&hear_all(&mut socket).await, "invalid_parameter", 1008);

    // 17 contexts on one socket.
    let mut socket = connect(&server, &format!("{MULTI}{pcm}")).await;
    for i in 0..17 {
        send(
            &mut socket,
            json!({"text": " ", "context_id": format!("c{i}")}),
        )
        .await;
    }
    check(&hear_all(&mut socket).await, "too_many_contexts", 1008);

    // A context over 100,000 characters in all.
    let mut socket = connect(&server, &format!("{MULTI}{pcm}")).await;
    send(
        &mut socket,
        json!({"text": "a".repeat(60_000), "context_id": "big"}),
    )
    .await;
    send(
        &mut socket,
        json!({"text": "a".repeat(40_001), "context_id": "big"}),
    )
    .await;
    check(&hear_all(&mut socket).await, "text_too_long", 1008);

    // A message over 1 MiB.
    let mut socket = connect(&server, &format!("{SINGLE}{pcm}")).await;
    let huge = json!({"text": "b".repeat((1 << 20) + 10)}).to_string();
    socket.send(Message::text(huge)).await.unwrap();
    check(&hear_all(&mut socket).await, "message_too_large", 1008);

    // Silence past inactivity_timeout.
    let mut socket = connect(&server, &format!("{SINGLE}{pcm}&inactivity_timeout=1")).await;
    send(&mut socket, json!({"text": " "})).await;
    let started = Instant::now();
    let heard = hear_all(&mut socket).await;
    check(&heard, "input_timeout_exceeded", 1008);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // The bystander was not disturbed: it speaks and ends as it should.
    send(
        &mut bystander,
        json!({"text": "Still here.", "context_id": "x", "flush": true}),
    )
    .await;
    send(
        &mut bystander,
        json!({"context_id": "x", "close_context": true, "text": null}),
    )
    .await;
    let mut heard = Heard::default();
    hear(&mut bystander, &mut heard, |h| !h.finals().is_empty()).await;
    // Closed right after its flush: it may have been interrupted, but it
    // ends with its final and no error.
    assert!(
        heard.messages.iter().all(|m| m.get("error").is_none()),
        "{heard:?}"
    );
    send(&mut bystander, json!({"text": " ", "context_id": "y"})).await;
    send(
        &mut bystander,
        json!({"text": "Still here.", "context_id": "y", "flush": true}),
    )
    .await;
    let mut heard = Heard::default();
    hear(&mut bystander, &mut heard, |h| {
        !h.audio(Some("y")).is_empty()
    })
    .await;
    send(&mut bystander, json!({"close_socket": true})).await;
    hear(&mut bystander, &mut heard, |_| false).await;
    assert_eq!(heard.close.as_ref().map(|c| c.0), Some(1000), "{heard:?}");

    // Every refusal is counted.
    let metrics = metrics_text(&server).await;
    assert!(
        metric(
            &metrics,
            "piperd_errors_total{code=\"input_timeout_exceeded\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "piperd_errors_total{code=\"too_many_contexts\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_come_in_a_header_the_query_or_the_first_message() {
    let dir = voices(&[VOICE]);
    let server = Server::start(
        dir.path(),
        &[
            ("PIPER_API_KEYS", "sekret"),
            (
                "PIPER_ELEVENLABS_VOICES",
                "21m00Tcm4TlvDq8ikWAM=en_US-joe-medium",
            ),
        ],
    );
    // Through the mapped id, as an agent built for ElevenLabs names it.
    let path = "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream-input?output_format=pcm_22050";

    let mut socket = connect(&server, path).await;
    send(&mut socket, json!({"text": " "})).await;
    let heard = hear_all(&mut socket).await;
    assert_eq!(heard.error()["error"], "unauthorized");
    assert_eq!(heard.close.as_ref().map(|c| c.0), Some(1008));

    let mut socket = connect(&server, path).await;
    send(&mut socket, json!({"text": " ", "xi_api_key": "wrong"})).await;
    assert_eq!(hear_all(&mut socket).await.error()["error"], "unauthorized");

    let ways: [Way; 3] = [
        (path, vec![("xi-api-key", "sekret")], json!({"text": " "})),
        (
            "&authorization=Bearer%20sekret",
            vec![],
            json!({"text": " "}),
        ),
        (path, vec![], json!({"text": " ", "xi_api_key": "sekret"})),
    ];
    for (target, headers, init) in ways {
        let target = if target.starts_with('&') {
            format!("{path}{target}")
        } else {
            target.to_string()
        };
        let mut socket = connect_with(&server, &target, &headers).await;
        send(&mut socket, init).await;
        send(&mut socket, json!({"text": "Hi."})).await;
        send(&mut socket, json!({"text": ""})).await;
        let heard = hear_all(&mut socket).await;
        assert_eq!(
            heard.close.as_ref().map(|c| c.0),
            Some(1000),
            "{target}: {heard:?}"
        );
        assert!(!heard.audio(None).is_empty(), "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp3_output_decodes_and_a_draining_server_refuses_new_sockets() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_DRAIN_DELAY", "0")]);
    let mut socket = connect(&server, SINGLE).await; // mp3_44100_128 by default
    send(&mut socket, json!({"text": "An mp3 answer. "})).await;
    send(&mut socket, json!({"text": ""})).await;
    let heard = hear_all(&mut socket).await;
    let mp3 = heard.audio(None);
    assert!(mp3.len() > 1000);
    // MPEG audio frames: a sync word first.
    assert_eq!(mp3[0], 0xFF);
    assert_eq!(mp3[1] & 0xE0, 0xE0);

    // A socket open during the drain ends once its speech is done: its
    // first sentence is heard before the signal (so the server has its
    // text: a message still in flight at the signal may find the socket
    // closed with 1001), the rest of its text is still to be said.
    let mut open = connect(&server, &format!("{SINGLE}?output_format=pcm_22050")).await;
    send(
        &mut open,
        json!({"text": "Speaking while the server stops. And after that."}),
    )
    .await;
    let mut heard = Heard::default();
    hear(&mut open, &mut heard, |h| !h.audio(None).is_empty()).await;
    let before = heard.audio(None).len();
    server.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut open, json!({"text": ""})).await;
    hear(&mut open, &mut heard, |_| false).await;
    assert!(heard.audio(None).len() > before, "{heard:?}");
    assert_eq!(heard.finals().len(), 1, "{heard:?}");
    assert_eq!(heard.close.as_ref().map(|c| c.0), Some(1000), "{heard:?}");
}

/// Runs tests/elevenlabs_client.py and returns what it printed.
fn client_py(server: &Server, args: &[&str]) -> Value {
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let output = std::process::Command::new(python())
        .arg(root().join("tests/elevenlabs_client.py"))
        .arg(port)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_convert_realtime_streams_text_in_and_audio_out() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let pcm = client_py(&server, &["sdk", "pcm_22050"]);
    let seconds = pcm["bytes"].as_f64().unwrap() / 2.0 / 22050.0;
    assert!((1.5..15.0).contains(&seconds), "{pcm}");
    // What the SDK received with the audio: the alignment of the text it
    // sent (its init " " and its text_chunker's pieces).
    let messages = pcm["messages"].as_array().unwrap();
    let sent = pcm["sent"].as_str().unwrap();
    let words = check_alignment(messages, sent, Some(22050.0));
    assert_eq!(words.len(), 8, "{words:?}");
    assert!(words.windows(2).all(|w| w[0].1 < w[1].1), "{words:?}");
    // The SDK's default format: MP3 frames, aligned the same way.
    let mp3 = client_py(&server, &["sdk", "mp3_44100_128"]);
    assert!(mp3["bytes"].as_u64().unwrap() > 1000, "{mp3}");
    assert!(mp3["head"].as_str().unwrap().starts_with("ff"), "{mp3}");
    let messages = mp3["messages"].as_array().unwrap();
    check_alignment(messages, mp3["sent"].as_str().unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipecats_multi_stream_sequence_is_served_as_pipecat_expects() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let heard = client_py(&server, &["pipecat"]);
    let turn = heard["turn"].as_str().unwrap();
    // Both sentences spoken (at least 2 s of 22.05 kHz PCM), under the
    // context's id as Pipecat reads it, then its final, then a clean close.
    let bytes = heard["audio"][turn].as_u64().unwrap_or(0);
    assert!(bytes >= 22050 * 2 * 2, "{heard}");
    assert_eq!(heard["audio"].as_object().unwrap().len(), 1, "{heard}");
    assert_eq!(heard["finals"], json!([turn]), "{heard}");
    assert_eq!(heard["other"], json!([]), "{heard}");
    assert_eq!(heard["close_code"], 1000, "{heard}");
    // Each message aligned as Pipecat reads it: its words, in order, each
    // after the one before over the context's audio.
    let messages = heard["messages"].as_array().unwrap();
    let words = check_alignment(messages, heard["sent"].as_str().unwrap(), Some(22050.0));
    assert_eq!(
        words.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(),
        "Hello, I am a voice agent. How can I help you today?"
            .split(' ')
            .collect::<Vec<_>>()
    );
    assert!(words.windows(2).all(|w| w[0].1 < w[1].1), "{words:?}");
}

/// First audio of one sentence streamed over stream-input against the same
/// sentence on `/api/tts` (streamed), alternating, on a warm engine. Prints
/// medians; asserts nothing about time (the machine is shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --release --test elevenlabs -- --ignored --nocapture"]
async fn measure_first_audio_against_api_tts() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_AUDIO_CACHE_MB", "0")]);
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank.";
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "Warm up."})).await;
    assert_eq!(status, 200);
    let (mut http, mut ws) = (Vec::new(), Vec::new());
    for round in 0..10 {
        let started = Instant::now();
        let mut body = post_stream(
            &server,
            "/api/tts",
            json!({"text": sentence, "stream": true}),
        )
        .await;
        // The streamed WAV's header goes out with the first audio.
        let mut got = 0;
        while got <= 44 {
            got += body.next().await.unwrap().unwrap().len();
        }
        http.push(started.elapsed().as_secs_f64() * 1000.0);
        while body.next().await.is_some() {}

        let mut socket = connect(&server, &format!("{SINGLE}?output_format=pcm_22050")).await;
        send(&mut socket, json!({"text": " "})).await;
        let started = Instant::now();
        send(
            &mut socket,
            json!({"text": format!("{sentence} "), "flush": true}),
        )
        .await;
        let mut heard = Heard::default();
        hear(&mut socket, &mut heard, |h| !h.audio(None).is_empty()).await;
        ws.push(started.elapsed().as_secs_f64() * 1000.0);
        send(&mut socket, json!({"text": ""})).await;
        hear(&mut socket, &mut heard, |_| false).await;
        eprintln!(
            "round {round}: api/tts {:.0} ms, stream-input {:.0} ms",
            http[round], ws[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (h, w) = (median(&mut http), median(&mut ws));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("median first audio: /api/tts {h:.0} ms, stream-input {w:.0} ms, ratio {:.2}; loadavg {load}", w / h);
}

/// Found by the soak: a client waiting for speech it asked for, while the
/// engine starts or is busy, is not idle. With `inactivity_timeout=1` and a
/// voice whose process is not started yet (loading it takes longer than a
/// second), the flushed text is spoken whole; only the silence after it,
/// with nothing owed, closes the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_owed_speech_is_not_inactivity() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let mut socket = connect(
        &server,
        &format!("{SINGLE}?output_format=pcm_22050&inactivity_timeout=1"),
    )
    .await;
    send(&mut socket, json!({"text": " "})).await;
    let text = "The engine takes its time to load the voice before this sentence. \
                Then a second sentence follows it, and a third one after that.";
    send(&mut socket, json!({"text": text, "flush": true})).await;
    let heard = hear_all(&mut socket).await;
    let pcm = samples(&heard.audio(None));
    let seconds = pcm.len() as f64 / 22050.0;
    // All three sentences, then the timeout once nothing was owed.
    assert!(seconds > 5.0, "{seconds} s of audio: {heard:?}");
    assert_eq!(heard.error()["error"], "input_timeout_exceeded");
    assert_eq!(heard.close.as_ref().map(|c| c.0), Some(1008), "{heard:?}");
}
