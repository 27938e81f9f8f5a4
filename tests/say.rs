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
        &["--captions", "out.vtt"][..],
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
fn ctrl_c_leaves_no_engine_and_no_partial_file() {
    let voices = voices(&[VOICE]);
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.txt");
    std::fs::write(&book, prose(20_000)).unwrap();
    let out = dir.path().join("book.mp3");
    let mut child = command(
        voices.path(),
        &[
            "--format",
            "mp3",
            "-o",
            out.to_str().unwrap(),
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
    while engines_for(voices.path()).is_empty() || !temp_written() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no audio was written"
        );
        assert!(child.try_wait().unwrap().is_none(), "ended before Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
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
