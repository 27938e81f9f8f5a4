//! The MaryTTS API on the real engine: with speak2mary (the client of Home
//! Assistant's `marytts` platform, from PyPI) and with raw requests.

mod common;

use std::process::Command;

use common::*;

const TEXT: &str = "The garage door is open. Shall I close it?";

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// speak2mary speaking `TEXT` with `effects` (a Python dict literal) through
/// piperd on `port`; returns the WAV it got.
fn speak2mary(port: u16, effects: &str, out: &std::path::Path) -> Wav {
    let script = format!(
        "import sys\n\
         from speak2mary import MaryTTS\n\
         tts = MaryTTS('127.0.0.1', {port}, 'WAVE_FILE', 'en_US', 'cmu-slt-hsmm')\n\
         open(sys.argv[1], 'wb').write(tts.speak(sys.argv[2], {effects}))\n"
    );
    let status = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(out)
        .arg(TEXT)
        .status()
        .expect("python runs");
    assert!(status.success(), "speak2mary failed");
    parse_wav(&std::fs::read(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speak2mary_on_a_port_of_its_own_with_effects() {
    let voices = voices(&[VOICE]);
    let port = free_port();
    let server = Server::start(voices.path(), &[("PIPER_MARYTTS_PORT", &port.to_string())]);
    let dir = tempfile::tempdir().unwrap();
    // speak2mary's default voice is MaryTTS's own: the locale picks ours.
    let plain = speak2mary(port, "None", &dir.path().join("plain.wav"));
    assert_eq!(plain.spec.sample_rate, 22_050);
    assert!(plain.seconds() > 1.0, "{} s", plain.seconds());
    assert!(rms(&plain.samples) > 300.0);
    let slow = speak2mary(
        port,
        "{'Rate': 'durScale:1.5;'}",
        &dir.path().join("slow.wav"),
    );
    // Piper's durations do not scale in proportion to the length scale
    // (1.5 gives about 1.36x with the noise off), and the duration noise
    // moves each answer by a few percent.
    let ratio = slow.seconds() / plain.seconds();
    assert!(
        (1.2..1.7).contains(&ratio),
        "durScale 1.5 gave {ratio}: {} samples against {}",
        slow.samples.len(),
        plain.samples.len()
    );
    let loud = speak2mary(
        port,
        "{'Volume': 'amount:2.0;', 'Robot': 'amount:100.0;'}",
        &dir.path().join("loud.wav"),
    );
    let gain = rms(&loud.samples) / rms(&plain.samples);
    assert!(
        (1.5..2.5).contains(&gain),
        "amount 2.0 gave a gain of {gain}"
    );

    // Only MaryTTS's routes on that port.
    let other = client()
        .get(format!("http://127.0.0.1:{port}/api/voices"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let version = client()
        .get(format!("http://127.0.0.1:{port}/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(version.status(), 200);
    assert!(version.text().await.unwrap().contains("Mary TTS server"));
    // The main port serves them too.
    let version = client().get(server.url("/version")).send().await.unwrap();
    assert!(version.text().await.unwrap().contains("Mary TTS server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_on_the_main_port() {
    let voices = voices(&[VOICE, "de_DE-test-medium"]);
    // A second voice, of another language.
    let config = voices.path().join("de_DE-test-medium.onnx.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    json["language"]["code"] = "de_DE".into();
    std::fs::write(&config, json.to_string()).unwrap();
    let server = Server::start(voices.path(), &[]);
    let http = client();

    let voices_list = http.get(server.url("/voices")).send().await.unwrap();
    assert_eq!(voices_list.status(), 200);
    assert!(voices_list.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let lines = voices_list.text().await.unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(
        lines,
        [
            "de_DE-test-medium de_DE unknown piper",
            "en_US-joe-medium en_US unknown piper"
        ]
    );
    let locales = http.get(server.url("/locales")).send().await.unwrap();
    assert_eq!(locales.text().await.unwrap(), "de_DE\nen_US\n");

    // GET with a query.
    let wav = http
        .get(server.url("/process"))
        .query(&[
            ("INPUT_TEXT", TEXT),
            ("INPUT_TYPE", "TEXT"),
            ("OUTPUT_TYPE", "AUDIO"),
            ("AUDIO", "WAVE"),
            ("LOCALE", "en_US"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wav.status(), 200);
    assert_eq!(wav.headers()["content-type"], "audio/x-wav");
    let wav = parse_wav(&wav.bytes().await.unwrap());
    assert!(wav.seconds() > 1.0);

    // POST of a form with no Content-Type at all, as speak2mary sends it.
    let body = format!(
        "INPUT_TEXT={}&INPUT_TYPE=TEXT&OUTPUT_TYPE=AUDIO&AUDIO=WAVE_FILE&VOICE=de_DE-test-medium",
        TEXT.replace(' ', "+").replace('?', "%3F")
    );
    let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST /process HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("an answer")
    .unwrap();
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        !head.contains("content-type: application/x-www-form"),
        "{head}"
    );
    let wav = parse_wav(&answer[head_end..]);
    assert!(wav.seconds() > 1.0);
    // The log, without its colours.
    let mut said = String::new();
    let mut escape = false;
    for c in server.log().chars() {
        match (escape, c) {
            (_, '\u{1b}') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, c) => said.push(c),
        }
    }
    assert!(
        said.contains("engine starting voice=de_DE-test-medium"),
        "the VOICE field picked the voice: {said}"
    );

    // Clear errors, as text.
    for (form, status, words) in [
        ("LOCALE=en_US", 400, "INPUT_TEXT is missing"),
        ("INPUT_TEXT=+++", 400, "text is empty"),
        ("INPUT_TEXT=hi&AUDIO=MP3_FILE", 400, "MP3_FILE"),
        ("INPUT_TEXT=hi&INPUT_TYPE=SSML", 400, "SSML"),
        (
            "INPUT_TEXT=hi&effect_Rate_selected=on&effect_Rate_parameters=durScale:99",
            400,
            "length_scale",
        ),
    ] {
        let response = http
            .post(server.url("/process"))
            .body(form.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{form}");
        let text = response.text().await.unwrap();
        assert!(text.contains(words), "{form}: {text}");
    }
    // The rest of the main port is as before.
    let (status, _) = get_json(&server, "/nothing-here").await;
    assert_eq!(status, 404);
    let (status, _) = get_json(&server, "/api/voices").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_cover_the_marytts_routes() {
    let voices = voices(&[VOICE]);
    let server = Server::start(voices.path(), &[("PIPER_API_KEYS", "sesame")]);
    let http = client();
    let refused = http
        .get(server.url("/process?INPUT_TEXT=hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let voices_list = http.get(server.url("/voices")).send().await.unwrap();
    assert_eq!(voices_list.status(), 401);
    let allowed = http
        .get(server.url("/process?INPUT_TEXT=hello"))
        .bearer_auth("sesame")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert!(parse_wav(&allowed.bytes().await.unwrap()).seconds() > 0.2);
}

/// speak2mary asking for `codec` (`AU_FILE`, `AIFF_FILE`) through piperd
/// on `port`; the answer is read by Python's own reader of that format
/// (`sunau`, `aifc`), which must find 16-bit mono. Returns the rate and the
/// samples it read.
fn speak2mary_read_by_python(port: u16, codec: &str, dir: &std::path::Path) -> (u32, Vec<i16>) {
    let out = dir.join(format!("{codec}.pcm"));
    let script = format!(
        "import array, io, sys, warnings\n\
         warnings.simplefilter('ignore')\n\
         import aifc, sunau\n\
         from speak2mary import MaryTTS\n\
         codec, out, text = sys.argv[1:4]\n\
         data = MaryTTS('127.0.0.1', {port}, codec, 'en_US', 'cmu-slt-hsmm').speak(text)\n\
         reader = (sunau if codec == 'AU_FILE' else aifc).open(io.BytesIO(data), 'rb')\n\
         assert reader.getnchannels() == 1, reader.getnchannels()\n\
         assert reader.getsampwidth() == 2, reader.getsampwidth()\n\
         frames = reader.readframes(reader.getnframes())\n\
         assert len(frames) == 2 * reader.getnframes(), (len(frames), reader.getnframes())\n\
         samples = array.array('h', frames)\n\
         samples.byteswap()\n\
         open(out, 'wb').write(samples.tobytes())\n\
         print(reader.getframerate())\n"
    );
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(codec)
        .arg(&out)
        .arg(TEXT)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{codec}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rate = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    let samples = std::fs::read(&out)
        .unwrap()
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    (rate, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn au_and_aiff_as_marytts_sends_them() {
    let voices = voices(&[VOICE]);
    let server = Server::start(voices.path(), &[]);
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The same text as a WAV first: the AU and the AIFF come from the same
    // speech (the audio cache), so their samples must be the WAV's.
    let wav = speak2mary(port, "None", &dir.path().join("plain.wav"));
    assert!(wav.seconds() > 1.0);
    for codec in ["AU_FILE", "AIFF_FILE"] {
        let (rate, samples) = speak2mary_read_by_python(port, codec, dir.path());
        assert_eq!(rate, 22_050, "{codec}");
        assert_eq!(samples.len(), wav.samples.len(), "{codec}");
        assert!(
            samples == wav.samples,
            "{codec}: other samples than the WAV's"
        );
    }
    // MaryTTS's Content-Types, and exact sizes in the headers.
    let http = client();
    for (audio, content_type, magic) in [
        ("AU_FILE", "audio/basic", &b".snd"[..]),
        ("AU", "audio/basic", b".snd"),
        ("AIFF_FILE", "audio/x-aiff", b"FORM"),
    ] {
        let response = http
            .get(server.url("/process"))
            .query(&[
                ("INPUT_TEXT", TEXT),
                ("INPUT_TYPE", "TEXT"),
                ("OUTPUT_TYPE", "AUDIO"),
                ("AUDIO", audio),
                ("LOCALE", "en_US"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{audio}");
        assert_eq!(response.headers()["content-type"], content_type, "{audio}");
        let bytes = response.bytes().await.unwrap();
        assert!(bytes.starts_with(magic), "{audio}");
        let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if magic == b".snd" {
            assert_eq!(be32(8), bytes.len() - 24, "AU data size");
        } else {
            assert_eq!(be32(4), bytes.len() - 8, "FORM size");
            assert_eq!(be32(22), wav.samples.len(), "AIFF sample frames");
        }
    }
}
