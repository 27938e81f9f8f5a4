//! `piperd say` end to end: the real binary and engine, no server.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `piperd say ARGS` on a voices folder, fed `stdin`.
fn say(voices: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = command(voices, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("piperd say starts");
    // The command may refuse its arguments before it reads any input.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let output = child.wait_with_output().unwrap();
    assert!(
        engines_for(voices).is_empty(),
        "an engine outlived piperd say"
    );
    output
}

fn command(voices: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_piperd"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIPER_VOICES_DIR", voices)
        .env("PIPER_PYTHON", python())
        .current_dir(root())
        .arg("say")
        .args(args);
    cmd
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn stdin_to_stdout_and_files_to_a_file() {
    let voices = voices(&[VOICE]);
    // Piped: a streamed WAV on standard output, nothing drawn on stderr.
    let output = say(
        voices.path(),
        &[],
        "Chapter one. It was a dark and stormy night.",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    let wav = parse_streamed_wav(&output.stdout);
    assert_eq!(wav.spec.sample_rate, 22_050);
    assert!(wav.seconds() > 1.5, "{} s", wav.seconds());
    assert!(rms(&wav.samples) > 300.0);

    // Two files, in order, into a complete WAV at 16 kHz.
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.txt");
    let two = dir.path().join("two.txt");
    std::fs::write(&one, "The first file.").unwrap();
    std::fs::write(&two, "And the second file, which is longer than the first.").unwrap();
    let out = dir.path().join("book.wav");
    let output = say(
        voices.path(),
        &[
            "--voice",
            VOICE,
            "--sample-rate",
            "16000",
            "-o",
            out.to_str().unwrap(),
            one.to_str().unwrap(),
            two.to_str().unwrap(),
        ],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    let book = parse_wav(&std::fs::read(&out).unwrap());
    assert_eq!(book.spec.sample_rate, 16_000);
    let only_two = dir.path().join("two.wav");
    let output = say(
        voices.path(),
        &["-o", only_two.to_str().unwrap(), two.to_str().unwrap()],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let only_two = parse_wav(&std::fs::read(&only_two).unwrap());
    assert!(
        book.seconds() > only_two.seconds() + 0.5,
        "both files were spoken: {} s against {} s",
        book.seconds(),
        only_two.seconds()
    );
    // Only the two outputs are left in the folder: no temporary file.
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["book.wav", "one.txt", "two.txt", "two.wav"]);

    // G.711 for a phone system, raw on standard output: 8 kHz, a byte each.
    let output = say(voices.path(), &["--format", "ulaw"], "Press one for sales.");
    assert!(output.status.success(), "{}", stderr(&output));
    let seconds = output.stdout.len() as f64 / 8000.0;
    assert!(seconds > 0.8 && seconds < 10.0, "{seconds} s");
}

#[test]
fn clear_errors_and_a_non_zero_exit() {
    let voices = voices(&[VOICE]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.wav");
    let output = say(
        voices.path(),
        &["--voice", "nobody", "-o", out.to_str().unwrap()],
        "Hello.",
    );
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("\"nobody\" not found"), "{message}");
    assert!(message.contains(VOICE), "the installed voices: {message}");
    assert!(!out.exists());

    let output = say(voices.path(), &[], "  \n\n ");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("the input is empty"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty());

    let missing = dir.path().join("missing.txt");
    let output = say(voices.path(), &[missing.to_str().unwrap()], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("missing.txt"),
        "{}",
        stderr(&output)
    );

    for args in [
        &["--captions", "out.txt"][..],
        &["--format", "ogg"],
        &["--sample-rate", "11025"],
    ] {
        let output = say(voices.path(), args, "Hello.");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(args[0]),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn ctrl_c_leaves_no_engine_and_no_partial_file_or_captions() {
    let voices = voices(&[VOICE]);
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.txt");
    std::fs::write(&book, prose(20_000)).unwrap();
    let out = dir.path().join("book.mp3");
    let captions = dir.path().join("book.srt");
    let mut child = command(
        voices.path(),
        &[
            "--format",
            "mp3",
            "-o",
            out.to_str().unwrap(),
            "--captions",
            captions.to_str().unwrap(),
            book.to_str().unwrap(),
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Interrupted once its engine speaks and audio is being written.
    let started = Instant::now();
    let temp_written = || {
        std::fs::read_dir(dir.path()).unwrap().any(|e| {
            let e = e.unwrap();
            e.file_name().to_string_lossy().starts_with(".piperd-say-")
                && e.metadata().unwrap().len() > 0
        })
    };
    let temps = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(".piperd-say-")
            })
            .count()
    };
    while engines_for(voices.path()).is_empty() || !temp_written() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no audio was written"
        );
        assert!(child.try_wait().unwrap().is_none(), "ended before Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The audio's and the captions' temporary files.
    assert_eq!(temps(), 2);
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("interrupted"),
        "{}",
        stderr(&output)
    );
    assert!(engines_for(voices.path()).is_empty(), "an engine was left");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["book.txt"], "a partial file was left");
}

/// The cues of a captions file as a reference parser reads them (webvtt-py
/// for WebVTT, srt for SRT): start and end in seconds, and the text.
fn read_captions(path: &Path) -> Vec<(f64, f64, String)> {
    let script = "import sys\n\
        def secs(t):\n    h, m, s = t.replace(',', '.').split(':')\n    \
        return int(h) * 3600 + int(m) * 60 + float(s)\n\
        text = open(sys.argv[1], encoding='utf-8').read()\n\
        if sys.argv[1].endswith('.vtt'):\n    import webvtt\n    \
        cues = [(secs(c.start), secs(c.end), c.text) for c in webvtt.from_string(text, strict=True)]\n\
        else:\n    import srt\n    \
        cues = [(c.start.total_seconds(), c.end.total_seconds(), c.content) \
        for c in srt.parse(text, ignore_errors=False)]\n\
        for start, end, words in cues:\n    print(start, end, words.replace(chr(10), ' '), sep='|')\n";
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{} does not parse: {}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, '|');
            let mut number = || fields.next().unwrap().parse::<f64>().unwrap();
            let (start, end) = (number(), number());
            (start, end, fields.next().unwrap().to_string())
        })
        .collect()
}

/// Cues in order, each word of `text` once, the last ending within the
/// audio's `seconds` (times are rounded to the millisecond).
fn assert_captions_match(cues: &[(f64, f64, String)], text: &str, seconds: f64) {
    assert!(!cues.is_empty());
    for (start, end, words) in cues {
        assert!(start <= end, "{start} > {end}: {words}");
    }
    for pair in cues.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "cues out of order: {pair:?}");
    }
    let spoken: Vec<&str> = cues.iter().map(|c| c.2.as_str()).collect();
    assert_eq!(
        spoken.join(" "),
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    let last = cues.last().unwrap().1;
    assert!(
        last <= seconds + 0.001,
        "the last cue ends at {last} s, the audio at {seconds} s"
    );
    assert!(
        last > seconds * 0.7,
        "the last cue ends at {last} s, long before the audio ({seconds} s)"
    );
}

#[test]
fn captions_of_the_whole_input_beside_the_audio() {
    let voices = voices(&[VOICE]);
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.txt");
    let two = dir.path().join("two.txt");
    let first = "Chapter one. The first file has two sentences.";
    let second = "The second file goes on, with a sentence long enough that one cue of \
                  two lines cannot hold it, so it is cut at a word.";
    std::fs::write(&one, first).unwrap();
    std::fs::write(&two, second).unwrap();
    let out = dir.path().join("book.wav");
    let vtt = dir.path().join("book.vtt");
    let output = say(
        voices.path(),
        &[
            "-o",
            out.to_str().unwrap(),
            "--captions",
            vtt.to_str().unwrap(),
            one.to_str().unwrap(),
            two.to_str().unwrap(),
        ],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let book = parse_wav(&std::fs::read(&out).unwrap());
    let cues = read_captions(&vtt);
    assert_captions_match(&cues, &format!("{first} {second}"), book.seconds());
    assert_eq!(cues[0].2, "Chapter one.");
    // The second file's cues come after the first file's audio: its first
    // cue starts later than the first file alone lasts.
    let alone = say(voices.path(), &[one.to_str().unwrap()], "");
    assert!(alone.status.success(), "{}", stderr(&alone));
    let alone = parse_streamed_wav(&alone.stdout).seconds();
    let second_starts = cues
        .iter()
        .find(|c| c.2.starts_with("The second file"))
        .expect("a cue for the second file")
        .0;
    assert!(
        second_starts >= alone - 0.5,
        "the second file's first cue starts at {second_starts} s, the first file lasts {alone} s"
    );
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["book.vtt", "book.wav", "one.txt", "two.txt"]);

    // SRT, with the audio on standard output (at another rate: the times
    // are the speech's, whatever the output's rate).
    let srt = dir.path().join("piped.srt");
    let text = "Captions work with a pipe too. The audio goes to standard output.";
    let output = say(
        voices.path(),
        &["--captions", srt.to_str().unwrap(), "-r", "16000"],
        text,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let piped = parse_streamed_wav(&output.stdout);
    assert_eq!(piped.spec.sample_rate, 16_000);
    assert_captions_match(&read_captions(&srt), text, piped.seconds());
}
