//! `piperd say`: text in, audio out, without a server.
//!
//! For audiobooks and pipelines: text from standard input or files, audio
//! to standard output or a file, spoken by the same scheduler, engines and
//! text splitting as the server, with no port opened. Texts longer than a
//! request's limit are cut at paragraphs (else lines, else spaces) and
//! spoken one part after the other into one encoder, so the output is one
//! file of any length.
//!
//! A file is written under a temporary name beside it and renamed when
//! complete: a failure or Ctrl-C (SIGINT, SIGTERM) leaves no partial file,
//! and every engine is stopped and reaped before the command exits. A
//! progress bar (characters spoken) is drawn on standard error when it is
//! a terminal, and nothing when it is not.
//!
//! `--captions` writes WebVTT or SRT beside the audio, from the same word
//! times the server's captions use, over the whole input: times run on
//! across the parts and files. The captions file is written the same way,
//! under a temporary name until the audio is complete.

use std::io::{IsTerminal, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::Actor;

use crate::audio::{self, AudioFormat, Encoder};
use crate::config::Config;
use crate::engine::reaper::Reaper;
use crate::scheduler::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::speech::captions::{self, CaptionFormat};
use crate::speech::catalog::{CacheArgs, ConfigCache};
use crate::speech::encode::{encoder_for, Output};
use crate::speech::{Speech, SpeechError, SpeechEvent, Utterance, WordTime, MAX_TEXT_CHARS};

/// How long engines still stopping at the end get before SIGKILL.
const REAP_GRACE: Duration = Duration::from_secs(3);

pub const USAGE: &str = "\
Usage: piperd say [OPTIONS] [FILE...]

Speaks text from the FILEs (one after the other), or from standard input
when there is none or FILE is -, with the voices and engine settings of the
server's environment variables (PIPER_VOICES_DIR, PIPER_PYTHON, ...).

Options:
  -v, --voice NAME        voice to speak with (default: the first installed)
  -f, --format FORMAT     wav (default), pcm, mp3, opus, flac, ulaw, alaw,
                          wav_ulaw, wav_alaw, au, aiff
  -r, --sample-rate HZ    8000, 16000, 22050, 24000, 44100 or 48000
                          (default: the voice's own; 8000 for G.711)
  -o, --output FILE       write the audio to FILE (default: standard output)
      --length-scale X    above 1 is slower (0.1-10)
      --captions FILE     also write captions of the whole input to FILE:
                          WebVTT (FILE ends in .vtt) or SRT (.srt)
  -h, --help              this text
";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub voice: Option<String>,
    pub format: AudioFormat,
    pub sample_rate: Option<u32>,
    pub output: Option<PathBuf>,
    pub inputs: Vec<PathBuf>,
    pub length_scale: Option<f32>,
    /// Where captions go, and in which format (from the file's extension).
    pub captions: Option<(PathBuf, CaptionFormat)>,
    pub help: bool,
}

/// Why `piperd say` stopped; each has its own exit status.
#[derive(Debug, thiserror::Error)]
pub enum SayError {
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Speech(#[from] SpeechError),
    #[error("{0}")]
    Output(String),
    #[error("{0}")]
    Config(String),
    #[error("interrupted: no output was kept")]
    Interrupted,
}

impl SayError {
    /// 2 for a wrong command line, 130 for Ctrl-C, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            SayError::Usage(_) | SayError::Config(_) => 2,
            SayError::Interrupted => 130,
            _ => 1,
        }
    }
}

impl Args {
    /// Parses the arguments after `say`.
    pub fn parse(args: &[String]) -> Result<Args, SayError> {
        let mut parsed = Args {
            voice: None,
            format: AudioFormat::Wav,
            sample_rate: None,
            output: None,
            inputs: Vec::new(),
            length_scale: None,
            captions: None,
            help: false,
        };
        let usage = |message: String| SayError::Usage(message);
        let mut rest = args.iter();
        let mut only_files = false;
        while let Some(arg) = rest.next() {
            if only_files || arg == "-" || !arg.starts_with('-') {
                parsed.inputs.push(PathBuf::from(arg));
                continue;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if arg.starts_with("--") => (flag, Some(value.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| rest.next().cloned())
                    .ok_or_else(|| usage(format!("{name} needs a value")))
            };
            match flag {
                "--" => only_files = true,
                "-h" | "--help" => parsed.help = true,
                "-v" | "--voice" => parsed.voice = Some(value("--voice")?),
                "-f" | "--format" => {
                    let name = value("--format")?;
                    parsed.format = AudioFormat::parse(&name)
                        .filter(|f| f.is_supported())
                        .ok_or_else(|| usage(format!("unknown --format {name:?}")))?;
                }
                "-r" | "--sample-rate" => {
                    let rate = value("--sample-rate")?;
                    parsed.sample_rate = Some(rate.parse().map_err(|_| {
                        usage(format!("--sample-rate {rate:?} is not a number of hertz"))
                    })?);
                }
                "-o" | "--output" => {
                    let path = value("--output")?;
                    parsed.output = (path != "-").then(|| PathBuf::from(path));
                }
                "--length-scale" => {
                    let scale = value("--length-scale")?;
                    parsed.length_scale =
                        Some(scale.parse().map_err(|_| {
                            usage(format!("--length-scale {scale:?} is not a number"))
                        })?);
                }
                "--captions" => {
                    let path = PathBuf::from(value("--captions")?);
                    let format = path
                        .extension()
                        .and_then(|ext| ext.to_str())
                        .and_then(CaptionFormat::parse)
                        .ok_or_else(|| {
                            usage(format!(
                                "--captions {}: the file name must end in .vtt (WebVTT) or .srt",
                                path.display()
                            ))
                        })?;
                    parsed.captions = Some((path, format));
                }
                other => return Err(usage(format!("unknown option {other}"))),
            }
        }
        if let (Some((captions, _)), Some(output)) = (&parsed.captions, &parsed.output) {
            if captions == output {
                return Err(usage(format!(
                    "--captions and --output name the same file, {}",
                    output.display()
                )));
            }
        }
        Ok(parsed)
    }
}

/// Reads every input (standard input for none or `-`), one after the
/// other, a blank line between files.
fn read_inputs(inputs: &[PathBuf]) -> Result<String, SayError> {
    let read_stdin = || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map(|_| text)
            .map_err(|e| SayError::Input(format!("cannot read standard input: {e}")))
    };
    if inputs.is_empty() {
        return read_stdin();
    }
    let mut parts = Vec::new();
    for input in inputs {
        if input == Path::new("-") {
            parts.push(read_stdin()?);
        } else {
            parts.push(
                std::fs::read_to_string(input).map_err(|e| {
                    SayError::Input(format!("cannot read {}: {e}", input.display()))
                })?,
            );
        }
    }
    Ok(parts.join("\n\n"))
}

/// Cuts a text into parts of at most `max` characters, at a paragraph
/// break if there is one in the part, else at a line break, else at a
/// space, else anywhere (on a character boundary).
pub fn parts(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while crate::text::char_count(rest) > max {
        let limit = rest
            .char_indices()
            .nth(max)
            .map(|(at, _)| at)
            .unwrap_or(rest.len());
        let window = &rest[..limit];
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|mark| {
                window
                    .rfind(mark)
                    .filter(|&at| at > 0)
                    .map(|at| at + mark.len())
            })
            .unwrap_or(limit);
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out.retain(|part| !part.trim().is_empty());
    out
}

/// Where the audio goes: standard output, a device or pipe written as it
/// is (`-o /dev/null`: renaming a file over it would replace the device),
/// or a temporary file renamed to its name once complete (dropped, it
/// deletes itself).
enum Sink {
    Stdout(std::io::Stdout),
    Device(std::fs::File),
    File {
        temp: tempfile::NamedTempFile,
        path: PathBuf,
    },
}

impl Sink {
    fn open(output: Option<&Path>) -> Result<Sink, SayError> {
        let Some(path) = output else {
            return Ok(Sink::Stdout(std::io::stdout()));
        };
        if let Some(device) = open_if_not_a_file(path)? {
            return Ok(Sink::Device(device));
        }
        Ok(Sink::File {
            temp: temp_beside(path)?,
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SayError> {
        let result = match self {
            Sink::Stdout(out) => out.write_all(bytes),
            Sink::Device(device) => device.write_all(bytes),
            Sink::File { temp, .. } => temp.write_all(bytes),
        };
        result.map_err(|e| SayError::Output(format!("cannot write the audio: {e}")))
    }

    /// Writes the exact sizes a streamed header left open (a file only),
    /// then puts the file in place.
    fn finish(self, format: AudioFormat) -> Result<(), SayError> {
        let io = |e: std::io::Error| SayError::Output(format!("cannot write the audio: {e}"));
        match self {
            Sink::Stdout(mut out) => out.flush().map_err(io),
            Sink::Device(mut device) => device.flush().map_err(io),
            Sink::File { mut temp, path } => {
                use std::io::{Seek, SeekFrom};
                let file = temp.as_file_mut();
                let len = file.seek(SeekFrom::End(0)).map_err(io)?;
                for (at, bytes) in audio::size_patches(format, len) {
                    file.seek(SeekFrom::Start(at)).map_err(io)?;
                    file.write_all(&bytes).map_err(io)?;
                }
                file.sync_all().map_err(io)?;
                temp.persist(&path).map_err(|e| {
                    SayError::Output(format!("cannot write {}: {}", path.display(), e.error))
                })?;
                Ok(())
            }
        }
    }
}

/// `path` opened for writing when it exists and is not a regular file (a
/// device such as /dev/null, a FIFO): such a path is written, never
/// replaced.
fn open_if_not_a_file(path: &Path) -> Result<Option<std::fs::File>, SayError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map(Some)
            .map_err(|e| SayError::Output(format!("cannot write {}: {e}", path.display()))),
        _ => Ok(None),
    }
}

/// A temporary file in the folder of `path`, so that renaming it to `path`
/// puts it in place at once; dropped, it deletes itself.
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile, SayError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".piperd-say-")
        .tempfile_in(dir)
        .map_err(|e| SayError::Output(format!("cannot write in {}: {e}", dir.display())))
}

/// The captions of the whole input: every sentence's span and timed words,
/// placed on the whole text and the whole audio, until they are written.
struct Captions {
    temp: tempfile::NamedTempFile,
    path: PathBuf,
    format: CaptionFormat,
    sentences: Vec<(Range<usize>, Vec<WordTime>)>,
}

impl Captions {
    /// Opens the temporary file at once, so that a folder one cannot write
    /// in is reported before any speech is made.
    fn open(path: &Path, format: CaptionFormat) -> Result<Captions, SayError> {
        if std::fs::metadata(path).is_ok_and(|meta| !meta.is_file()) {
            // A device or pipe would be replaced by the rename.
            return Err(SayError::Output(format!(
                "captions go to a regular file, and {} is not one",
                path.display()
            )));
        }
        Ok(Captions {
            temp: temp_beside(path)?,
            path: path.to_path_buf(),
            format,
            sentences: Vec::new(),
        })
    }

    /// A sentence of a part that starts `at` bytes into the whole text and
    /// `offset` samples into the whole audio.
    fn add(&mut self, span: Range<usize>, words: Vec<WordTime>, at: usize, offset: u64) {
        let words = words
            .into_iter()
            .map(|word| WordTime {
                text: word.text.start + at..word.text.end + at,
                samples: word.samples.start + offset..word.samples.end + offset,
                phonemes: word.phonemes.iter().map(|p| p + offset).collect(),
            })
            .collect();
        self.sentences.push((span.start + at..span.end + at, words));
    }

    /// Writes the captions of `text` (at `rate` samples a second) into the
    /// temporary file; [`Captions::persist`] then puts it in place.
    fn write(&mut self, text: &str, rate: u32) -> Result<(), SayError> {
        let io = |e: std::io::Error| SayError::Output(format!("cannot write the captions: {e}"));
        let cues = captions::cues(text, &self.sentences, rate);
        let file = self.temp.as_file_mut();
        file.write_all(captions::render(&cues, self.format).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)
    }

    fn persist(self) -> Result<(), SayError> {
        self.temp.persist(&self.path).map_err(|e| {
            SayError::Output(format!("cannot write {}: {}", self.path.display(), e.error))
        })?;
        Ok(())
    }
}

/// A progress bar on a terminal, nothing otherwise.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(chars: usize) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(chars as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} characters, {eta} left",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress(Some(bar))
    }

    fn set(&self, chars: usize) {
        if let Some(bar) = &self.0 {
            bar.set_position(chars as u64);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Runs `piperd say` with the server's configuration until it is done or
/// `interrupted` completes; stops and reaps every engine either way.
pub async fn run(
    config: Config,
    args: Args,
    interrupted: impl std::future::Future<Output = ()>,
) -> Result<(), SayError> {
    let output = Output::new(args.format, args.sample_rate).map_err(|e| match e {
        SpeechError::InvalidParameter { message, .. } => {
            SayError::Usage(format!("--sample-rate: {message}"))
        }
        other => SayError::Speech(other),
    })?;
    let text = read_inputs(&args.inputs)?;
    if text.trim().is_empty() {
        return Err(SayError::Input("the input is empty: nothing to say".into()));
    }
    let config = Arc::new(config);
    let reaper = Reaper::default();
    let spawn = |e: ractor::SpawnErr| SayError::Config(format!("cannot start: {e}"));
    let (supervisor, supervisor_task) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config.clone(),
            reaper: reaper.clone(),
        },
    )
    .await
    .map_err(spawn)?;
    let (catalog, catalog_task) = Actor::spawn(
        None,
        ConfigCache,
        CacheArgs {
            voices_dir: config.voices_dir.clone(),
            ttl: config.config_cache_ttl,
        },
    )
    .await
    .map_err(spawn)?;
    let speech = Speech::new(config.clone(), supervisor.clone(), catalog.clone());

    let result = tokio::select! {
        result = speak(&speech, &args, output, &text) => result,
        _ = interrupted => Err(SayError::Interrupted),
    };
    // The sessions are dropped: their sentences leave the engines. Then
    // every engine is stopped and reaped, whatever happened.
    drop(speech);
    let _ = supervisor
        .call(SupervisorMsg::StopWorkers, Some(Duration::from_secs(10)))
        .await;
    supervisor.stop(None);
    catalog.stop(None);
    let _ = supervisor_task.await;
    let _ = catalog_task.await;
    if let Err(err) = reaper.reap_all(REAP_GRACE, REAP_GRACE).await {
        tracing::error!("{err}");
    }
    result
}

async fn speak(speech: &Speech, args: &Args, output: Output, text: &str) -> Result<(), SayError> {
    let voice = speech.voice(args.voice.as_deref()).await?;
    let options = crate::speech::VoiceOptions {
        length_scale: args.length_scale,
        ..Default::default()
    }
    .resolve(&voice)?;
    let mut encoder: Box<dyn Encoder> = encoder_for(output, voice.sample_rate)?;
    let mut sink = Sink::open(args.output.as_deref())?;
    let mut captions = match &args.captions {
        Some((path, format)) => Some(Captions::open(path, *format)?),
        None => None,
    };
    let total = crate::text::char_count(text);
    let progress = Progress::new(total);
    let mut done_chars = 0;
    // Bytes of PCM so far: where each part starts on the whole audio.
    let mut pcm_bytes: u64 = 0;
    for part in parts(text, MAX_TEXT_CHARS) {
        // `part` is a slice of `text`: its place in it.
        let at = part.as_ptr() as usize - text.as_ptr() as usize;
        let part_offset = pcm_bytes / 2;
        let mut session = match speech
            .say(Utterance {
                voice: voice.clone(),
                text: part,
                options: options.clone(),
                complete: false,
                normalize: true,
                ssml: false,
            })
            .await
        {
            Ok(session) => session,
            // A part of only symbols among others: nothing to say there.
            Err(SpeechError::NoSpeakableText) if total > crate::text::char_count(part) => {
                done_chars += crate::text::char_count(part);
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        while let Some(event) = session.next().await {
            match event {
                SpeechEvent::Audio(pcm) => {
                    pcm_bytes += pcm.len() as u64;
                    let bytes = encoder
                        .push(&pcm)
                        .map_err(|e| SayError::Output(e.to_string()))?;
                    sink.write(&bytes)?;
                }
                SpeechEvent::SentenceEnd { span, words, .. } => {
                    progress.set(done_chars + crate::text::char_count(&part[..span.end]));
                    if let Some(captions) = captions.as_mut() {
                        captions.add(span, words, at, part_offset);
                    }
                }
                SpeechEvent::Done(_) => break,
                SpeechEvent::Failed(err) => return Err(err.into()),
            }
        }
        done_chars += crate::text::char_count(part);
        progress.set(done_chars);
    }
    let tail = encoder
        .finish()
        .map_err(|e| SayError::Output(e.to_string()))?;
    sink.write(&tail)?;
    progress.finish();
    // Both files are complete before either is put in place.
    if let Some(captions) = captions.as_mut() {
        captions.write(text, voice.sample_rate)?;
    }
    sink.finish(output.format)?;
    match captions {
        Some(captions) => captions.persist(),
        None => Ok(()),
    }
}

/// The stream of Ctrl-C and SIGTERM, as one future that completes at the
/// first of them.
pub fn interrupted() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGINT, SIGTERM])?;
    Ok(async move {
        let _ = signals.next().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, SayError> {
        Args::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_command_line() {
        let parsed = args(&[
            "-v",
            "joe",
            "--format=ulaw",
            "--sample-rate",
            "16000",
            "-o",
            "out.raw",
            "a.txt",
            "-",
        ])
        .unwrap();
        assert_eq!(parsed.voice.as_deref(), Some("joe"));
        assert_eq!(parsed.format, AudioFormat::Ulaw);
        assert_eq!(parsed.sample_rate, Some(16_000));
        assert_eq!(parsed.output, Some(PathBuf::from("out.raw")));
        assert_eq!(parsed.inputs, [PathBuf::from("a.txt"), PathBuf::from("-")]);
        assert_eq!(args(&["-o", "-"]).unwrap().output, None);
        assert_eq!(args(&["--", "-v"]).unwrap().inputs, [PathBuf::from("-v")]);
        assert_eq!(
            args(&["--captions", "book.VTT"]).unwrap().captions,
            Some((PathBuf::from("book.VTT"), CaptionFormat::Vtt))
        );
        assert_eq!(
            args(&["--captions=out/book.srt"]).unwrap().captions,
            Some((PathBuf::from("out/book.srt"), CaptionFormat::Srt))
        );
        for bad in [
            &["--format", "ogg"][..],
            &["--voice"],
            &["--sample-rate", "fast"],
            &["--captions", "out.txt"],
            &["--captions", "book"],
            &["--captions", "same.srt", "-o", "same.srt"],
            &["--nope"],
        ] {
            let err = args(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn captions_run_on_across_parts() {
        // Two parts of one text, each spoken from its own sample 0, one
        // word a second at 1000 samples a second.
        let text = "One two. Three four.";
        let word = |text: Range<usize>, from: u64| WordTime {
            text,
            samples: from..from + 800,
            phonemes: vec![from + 800],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.srt");
        let mut captions = Captions::open(&path, CaptionFormat::Srt).unwrap();
        captions.add(0..8, vec![word(0..3, 0), word(4..7, 1000)], 0, 0);
        // The second part starts at byte 9 of the text and after 2.5 s.
        captions.add(0..11, vec![word(0..5, 100), word(6..10, 1100)], 9, 2500);
        captions.write(text, 1000).unwrap();
        assert!(!path.exists(), "only put in place once persisted");
        captions.persist().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "1\n00:00:00,000 --> 00:00:01,800\nOne two.\n\n\
             2\n00:00:02,600 --> 00:00:04,400\nThree four.\n\n"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
    }

    #[test]
    fn long_texts_are_cut_at_paragraphs_then_lines_then_spaces() {
        let text = "one two three\n\nfour five\nsix seven";
        assert_eq!(parts(text, 100), [text]);
        assert_eq!(
            parts(text, 20),
            ["one two three\n\n", "four five\nsix seven"]
        );
        assert_eq!(
            parts("four five\nsix seven", 12),
            ["four five\n", "six seven"]
        );
        assert_eq!(parts("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(parts("été à la mer", 4), ["été ", "à ", "la ", "mer"]);
        // Every character is kept, in order.
        let long = "word ".repeat(1000);
        assert_eq!(parts(&long, 333).concat(), long);
        assert!(parts(&long, 333).iter().all(|p| p.chars().count() <= 333));
    }

    #[test]
    fn a_device_is_written_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let mut sink = Sink::open(Some(Path::new("/dev/null"))).unwrap();
        assert!(matches!(sink, Sink::Device(_)));
        sink.write(b"RIFF").unwrap();
        sink.finish(crate::audio::AudioFormat::Wav).unwrap();
        let kind = std::fs::metadata("/dev/null").unwrap().file_type();
        assert!(kind.is_char_device(), "/dev/null was replaced");
        assert!(Captions::open(Path::new("/dev/null"), CaptionFormat::Vtt).is_err());
    }
}
