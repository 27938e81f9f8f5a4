//! The speech core: what every front-end calls to turn text into audio.
//!
//! A front-end parses its own wire format, then asks [`Speech`] for a voice
//! and opens a [`Session`]: with the whole text at once ([`Speech::say`]) or
//! with text that arrives over time ([`Speech::open`]). The session yields
//! [`SpeechEvent`]s — audio as it is made, each sentence's end with its span
//! in the text, then done or failed — which the front-end encodes onto its
//! socket. Nothing here knows HTTP, Wyoming or actors' types: errors are one
//! [`SpeechError`], which each front-end maps to its own statuses once.
//!
//! Below it: the [`crate::scheduler`] (which engine speaks which sentence
//! when), the voice [`catalog`], the audio [`cache`] and [`admission`]
//! control; the encoders of [`crate::audio`] are reached through [`encode`].

pub mod admission;
pub mod cache;
pub mod captions;
pub mod catalog;
pub mod encode;
pub mod error;
pub mod request;
pub mod session;
pub mod words;

use std::sync::Arc;
use std::time::Duration;

use metrics::histogram;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::mpsc;

/// The scheduler's half of [`SpeechError`], named here so that front-ends
/// map every error without reaching below the core.
pub use crate::scheduler::messages::{EngineHealth, Health};
pub use crate::scheduler::SynthError;
pub use error::{ErrorKind, SpeechError, MAX_TEXT_CHARS};
pub use request::{Speaker, VoiceOptions};
pub use session::{Session, SpeechEvent, Summary, WordSink};
pub use words::{char_samples, char_times, CharTime, SpokenLine, WordTime};

use crate::config::Config;
use crate::engine::SynthOptions;
use crate::metrics as m;
use crate::scheduler::messages::{SupervisorMsg, WarmInfo};
use crate::scheduler::{Sentence, SynthJob};
use crate::text::normalize::Rules;
use crate::text::ssml::Pace;
use crate::text::stream::{Piece, PieceLimits, SentenceStream};
use crate::voices::{VoiceError, VoiceInfo};
use admission::Admission;
use cache::AudioCache;
use catalog::{ConfigMsg, Lookup};

/// How long a call waits for an actor that should answer at once.
const ACTOR_TIMEOUT: Duration = Duration::from_secs(5);
/// Speech runs 8 to 25 characters a second (measured on the bundled voice
/// and others); an answer's audio is estimated at the fast end, so that a
/// text is refused before synthesis only when it surely exceeds the limit.
const FASTEST_CHARS_PER_SECOND: f64 = 25.0;

/// The speech service. Cheap to clone; every front-end holds one.
#[derive(Clone)]
pub struct Speech {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    supervisor: ActorRef<SupervisorMsg>,
    catalog: ActorRef<ConfigMsg>,
    cache: Arc<AudioCache>,
    admission: Arc<Admission>,
}

/// One sentence of `POST /api/phonemes`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Phonemized {
    /// The sentence as the user wrote it.
    pub text: String,
    /// The words it is read as (the line the engine is given).
    pub normalized: String,
    /// IPA, one string per sentence the engine's phonemizer finds in it.
    pub phonemes: Vec<String>,
}

/// A whole text to speak.
pub struct Utterance<'a> {
    pub voice: Arc<VoiceInfo>,
    pub text: &'a str,
    pub options: SynthOptions,
    /// A complete answer (not streamed): its audio is bounded by
    /// `PIPER_MAX_AUDIO_SECONDS`, since it is held until the end.
    pub complete: bool,
    /// Numbers, money, dates, abbreviations… written out as a person reads
    /// them (English voices only; `"normalize": false` turns it off).
    pub normalize: bool,
    /// The text is an SSML document (see [`crate::text::ssml`]).
    pub ssml: bool,
}

impl Speech {
    pub fn new(
        config: Arc<Config>,
        supervisor: ActorRef<SupervisorMsg>,
        catalog: ActorRef<ConfigMsg>,
    ) -> Speech {
        let cache = Arc::new(AudioCache::new((config.audio_cache_mb << 20) as usize));
        let admission = Arc::new(Admission::new(config.max_queue));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watch_voices(catalog.clone(), supervisor.clone()));
        }
        Speech {
            inner: Arc::new(Inner {
                config,
                supervisor,
                catalog,
                cache,
                admission,
            }),
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// Requests waiting for their first audio, and the bound on them.
    pub fn queue(&self) -> (usize, usize) {
        let admission = &self.inner.admission;
        (admission.waiting(), admission.max())
    }

    /// The voice a user named (with or without `.onnx`), or the first one.
    pub async fn voice(&self, requested: Option<&str>) -> Result<Arc<VoiceInfo>, SpeechError> {
        let name =
            match requested {
                Some(name) => name.to_string(),
                None => self.voice_names().await.first().cloned().ok_or_else(|| {
                    VoiceError::NotFound {
                        name: String::new(),
                        available: Vec::new(),
                    }
                })?,
            };
        let asked = self
            .inner
            .catalog
            .call(|reply| ConfigMsg::Get(name, reply), Some(ACTOR_TIMEOUT))
            .await;
        match asked {
            Ok(CallResult::Success(found)) => Ok(found?),
            _ => Err(SpeechError::Internal(
                "the voice catalog did not answer".into(),
            )),
        }
    }

    /// The first voice of a language (`en_US`, or `en` for any English).
    pub async fn voice_of_language(&self, language: &str) -> Option<Arc<VoiceInfo>> {
        let wanted = language.replace('-', "_").to_ascii_lowercase();
        self.voices().await.into_iter().flatten().find(|v| {
            let have = v.language.to_ascii_lowercase();
            have == wanted || have.split('_').next() == Some(wanted.as_str())
        })
    }

    /// The names of the installed voices, sorted.
    pub async fn voice_names(&self) -> Arc<[String]> {
        match self
            .inner
            .catalog
            .call(ConfigMsg::Names, Some(ACTOR_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(names)) => names,
            _ => Arc::new([]),
        }
    }

    /// Every installed voice, or why its config cannot be read.
    pub async fn voices(&self) -> Vec<Lookup> {
        match self
            .inner
            .catalog
            .call(ConfigMsg::List, Some(ACTOR_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(found)) => found,
            _ => Vec::new(),
        }
    }

    /// What the scheduler says of the engine and its workers.
    pub async fn health(&self) -> Option<Health> {
        match self
            .inner
            .supervisor
            .call(SupervisorMsg::Health, Some(ACTOR_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(health)) => Some(health),
            _ => None,
        }
    }

    /// Starts a voice's engine and answers once it is ready.
    pub async fn warmup(&self, voice: Arc<VoiceInfo>) -> Result<WarmInfo, SpeechError> {
        let config = &self.inner.config;
        let timeout = config.engine_start_timeout + config.queue_timeout + ACTOR_TIMEOUT;
        let answer = self
            .inner
            .supervisor
            .call(|reply| SupervisorMsg::Warmup(voice, reply), Some(timeout))
            .await;
        match answer {
            Ok(CallResult::Success(result)) => Ok(result?),
            Ok(CallResult::Timeout) => Err(SynthError::EngineTimeout.into()),
            _ => Err(SynthError::ShuttingDown.into()),
        }
    }

    /// Checks a whole text before anything else is done for it: empty, too
    /// long, or nothing speakable in it.
    pub fn check_text(text: &str) -> Result<(), SpeechError> {
        if text.trim().is_empty() {
            return Err(SpeechError::EmptyText);
        }
        let chars = crate::text::char_count(text);
        if chars > MAX_TEXT_CHARS {
            return Err(SpeechError::TextTooLong(chars));
        }
        Ok(())
    }

    fn limits(&self) -> PieceLimits {
        PieceLimits::from_config(&self.inner.config)
    }

    /// Speaks a whole text: from the cache when it was said before, else by
    /// the engine. Answers once the first audio is there (or the request
    /// failed), so that a front-end can still choose its status.
    pub async fn say(&self, utterance: Utterance<'_>) -> Result<Session, SpeechError> {
        let Utterance {
            voice,
            text,
            options,
            complete,
            normalize,
            ssml,
        } = utterance;
        let config = &self.inner.config;
        Speech::check_text(text)?;
        let chars = crate::text::char_count(text);
        let rules = Rules::for_language(&voice.language, normalize);
        let pieces: Vec<(Piece, Pace)> = if ssml {
            crate::text::ssml::pieces(text, self.limits(), rules)?
        } else {
            crate::text::stream::pieces_with(text, self.limits(), rules)
                .into_iter()
                .map(|p| (p, Pace::default()))
                .collect()
        };
        let chunks = crate::text::split_chunks(text, config.chunk_size)
            .into_iter()
            .filter(|chunk| crate::text::is_speakable(chunk))
            .count();
        histogram!(m::REQUEST_CHARACTERS).record(chars as f64);
        histogram!(m::REQUEST_CHUNKS).record(chunks as f64);
        if pieces.is_empty() {
            return Err(SpeechError::NoSpeakableText);
        }
        if complete {
            let scale = f64::from(options.length_scale.unwrap_or(1.0));
            let silence = f64::from(options.sentence_silence.unwrap_or(0.0));
            let breaks: u64 = pieces
                .iter()
                .map(|(_, pace)| {
                    u64::from(pace.before_ms.unwrap_or(0) + pace.after_ms.unwrap_or(0))
                })
                .sum();
            let least = chars as f64 / FASTEST_CHARS_PER_SECOND * scale
                + silence * pieces.len() as f64
                + breaks as f64 / 1000.0;
            if least > config.max_audio_seconds as f64 {
                return Err(SpeechError::AudioTooLong {
                    max_seconds: config.max_audio_seconds,
                });
            }
        }

        let cache = &self.inner.cache;
        let key = cache.enabled().then(|| {
            // A piece's pace is part of what it sounds like.
            let lines: Vec<String> = pieces
                .iter()
                .map(|(p, pace)| match *pace == Pace::default() {
                    true => p.line.clone(),
                    false => format!("{}\u{0}{pace:?}", p.line),
                })
                .collect();
            cache.key(&voice, lines.iter().map(String::as_str), &options)
        });
        if let Some(hit) = key.as_ref().and_then(|k| cache.get(k)) {
            return Ok(Session::from_cache(voice, hit).with_size(chars, chunks));
        }
        let ticket = self.inner.admission.admit()?;
        let mut maps = Vec::with_capacity(pieces.len());
        let base = options.length_scale.unwrap_or(voice.length_scale);
        let sentences = pieces
            .into_iter()
            .map(|(p, pace)| {
                maps.push((p.span.start, p.map, p.line.clone(), pace));
                Sentence {
                    line: p.line,
                    span: p.span,
                    length_scale: pace.rate.map(|rate| rate_scale(base, rate)),
                }
            })
            .collect();
        let (mut job, events) = SynthJob::whole(voice.clone(), sentences, options);
        job.complete = complete;
        let mut session = Session::live(voice, events, Some(ticket))
            .with_size(chars, chunks)
            .with_maps(maps);
        // A copy for the cache only when the answer can fit in it: speech
        // runs well under 3,000 bytes of PCM per character.
        if let Some(key) = key.filter(|_| chars.saturating_mul(3_000) <= cache.max_entry()) {
            session = session.with_tee(cache.clone(), key);
        }
        if complete {
            session = session.with_limit(config.max_audio_seconds);
        }
        self.submit(job)?;
        match session.next().await {
            Some(SpeechEvent::Failed(err)) => Err(err),
            Some(first) => {
                session.unread(first);
                Ok(session)
            }
            None => Err(SpeechError::Internal("the session ended unheard".into())),
        }
    }

    /// How a text would be spoken, sentence by sentence, without speaking it:
    /// each sentence's original text, the words it is read as, and the
    /// phonemes the voice's engine makes of them (`POST /api/phonemes`).
    pub async fn phonemize(
        &self,
        voice: Arc<VoiceInfo>,
        text: &str,
        normalize: bool,
    ) -> Result<Vec<Phonemized>, SpeechError> {
        Speech::check_text(text)?;
        let rules = Rules::for_language(&voice.language, normalize);
        let pieces = crate::text::stream::pieces_with(text, self.limits(), rules);
        if pieces.is_empty() {
            return Err(SpeechError::NoSpeakableText);
        }
        let spans: Vec<std::ops::Range<usize>> = pieces.iter().map(|p| p.span.clone()).collect();
        let mut out: Vec<Phonemized> = pieces
            .iter()
            .map(|p| Phonemized {
                text: text[p.span.clone()].to_string(),
                normalized: p.line.clone(),
                phonemes: Vec::new(),
            })
            .collect();
        let ticket = self.inner.admission.admit()?;
        let sentences = pieces
            .into_iter()
            .map(|p| Sentence {
                line: p.line,
                span: p.span,
                length_scale: None,
            })
            .collect();
        let options = SynthOptions {
            phonemize: true,
            ..SynthOptions::default()
        };
        let (job, events) = SynthJob::whole(voice.clone(), sentences, options);
        let mut session = Session::live(voice, events, Some(ticket));
        self.submit(job)?;
        // The engine answers each sentence with its phonemes as JSON where
        // audio would be (docs/engine-protocol.md), one answer per sentence.
        let mut answer = Vec::new();
        while let Some(event) = session.next().await {
            match event {
                SpeechEvent::Audio(bytes) => answer.extend_from_slice(&bytes),
                SpeechEvent::SentenceEnd { span, .. } => {
                    let phonemes: Vec<String> = serde_json::from_slice(&answer).map_err(|err| {
                        SpeechError::Synth(SynthError::EngineBadOutput(format!(
                            "phonemes are not a JSON list of strings: {err}"
                        )))
                    })?;
                    if let Some(at) = spans.iter().position(|s| *s == span) {
                        out[at].phonemes = phonemes;
                    }
                    answer.clear();
                }
                SpeechEvent::Done(_) => break,
                SpeechEvent::Failed(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// A session whose text arrives over time: push it with
    /// [`Session::push`], end it with [`Session::end`]. Each sentence goes
    /// to the engine as soon as it is complete.
    pub fn open(
        &self,
        voice: Arc<VoiceInfo>,
        options: SynthOptions,
    ) -> Result<Session, SpeechError> {
        self.open_with(voice, options, true)
    }

    /// [`Speech::open`], with normalization on or off (see
    /// [`Utterance::normalize`]).
    pub fn open_with(
        &self,
        voice: Arc<VoiceInfo>,
        options: SynthOptions,
        normalize: bool,
    ) -> Result<Session, SpeechError> {
        let (more, sentences) = mpsc::unbounded_channel();
        let rules = Rules::for_language(&voice.language, normalize);
        let (job, events) = SynthJob::open(voice.clone(), Vec::new(), Some(sentences), options);
        self.submit(job)?;
        let splitter = SentenceStream::with_rules(self.limits(), rules);
        Ok(Session::live(voice, events, None).with_input(
            splitter,
            more,
            self.inner.admission.clone(),
        ))
    }

    /// [`Speech::open_with`] for SSML arriving over time: each document is
    /// spoken once it is whole (a `</speak>`, a flush or the end closes
    /// it), and text that does not start with `<speak>` is read as a
    /// document's content.
    pub fn open_ssml(
        &self,
        voice: Arc<VoiceInfo>,
        options: SynthOptions,
        normalize: bool,
    ) -> Result<Session, SpeechError> {
        let rules = Rules::for_language(&voice.language, normalize);
        let scale = options.length_scale.unwrap_or(voice.length_scale);
        let session = self.open_with(voice, options, normalize)?;
        Ok(session.with_ssml(self.limits(), rules, scale))
    }

    fn submit(&self, job: SynthJob) -> Result<(), SpeechError> {
        self.inner
            .supervisor
            .send_message(SupervisorMsg::Synthesize(job))
            .map_err(|_| SpeechError::Synth(SynthError::ShuttingDown))
    }
}

/// How long speech lasts at a `length_scale`, against its length at 1:
/// not in proportion, since every phoneme and the pause after it last at
/// least one frame of the model (measured with piper 1.8.0 on the bundled
/// voice, two sentences, noise scales at 0; the two agree within 5%).
/// Below 0.3 speech gets no shorter.
const LENGTH_CURVE: [(f32, f32); 10] = [
    (0.2, 0.484),
    (0.3, 0.4975),
    (0.4, 0.548),
    (0.5, 0.627),
    (0.7, 0.7365),
    (1.0, 1.0),
    (1.5, 1.371),
    (2.0, 1.7355),
    (2.5, 2.1245),
    (3.0, 2.4855),
];

/// The length of speech at `scale`, against its length at 1.
fn length_at(scale: f32) -> f32 {
    let (last, end) = LENGTH_CURVE[LENGTH_CURVE.len() - 1];
    if scale >= last {
        let (before, start) = LENGTH_CURVE[LENGTH_CURVE.len() - 2];
        return end + (scale - last) * (end - start) / (last - before);
    }
    let mut prev = LENGTH_CURVE[0];
    for &(s, l) in &LENGTH_CURVE[1..] {
        if scale <= s {
            let t = ((scale - prev.0) / (s - prev.0)).max(0.0);
            return prev.1 + t * (l - prev.1);
        }
        prev = (s, l);
    }
    end
}

/// The `length_scale` whose speech lasts `length` (against 1 at 1).
fn scale_for(length: f32) -> f32 {
    let (first, shortest) = LENGTH_CURVE[0];
    if length <= shortest {
        return first;
    }
    let (last, end) = LENGTH_CURVE[LENGTH_CURVE.len() - 1];
    if length >= end {
        let (before, start) = LENGTH_CURVE[LENGTH_CURVE.len() - 2];
        return last + (length - end) * (last - before) / (end - start);
    }
    let mut prev = LENGTH_CURVE[0];
    for &(s, l) in &LENGTH_CURVE[1..] {
        if length <= l {
            return prev.0 + (length - prev.1) / (l - prev.1) * (s - prev.0);
        }
        prev = (s, l);
    }
    last
}

/// The engine's `length_scale` for speech at `rate` percent of the speed
/// that `base` gives (an SSML `prosody rate`): the scale whose speech lasts
/// 100/`rate` times as long as at `base`, within the range a request may
/// ask for. Speech cannot get much faster than twice the voice's own.
pub fn rate_scale(base: f32, rate: u32) -> f32 {
    let length = length_at(base) * 100.0 / rate.max(1) as f32;
    scale_for(length).clamp(0.1, 10.0)
}

/// Lists the voices folder as often as the catalog keeps a listing, so
/// that voices added or removed show on every front-end within 2 s, and
/// tells the scheduler which voices are there. Ends with the actors.
async fn watch_voices(catalog: ActorRef<ConfigMsg>, supervisor: ActorRef<SupervisorMsg>) {
    let mut tick = tokio::time::interval(catalog::LISTING_TTL + Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let names = match catalog.call(ConfigMsg::Names, Some(ACTOR_TIMEOUT)).await {
            Ok(CallResult::Success(names)) => names,
            Ok(_) => continue,
            Err(_) => return,
        };
        if supervisor
            .send_message(SupervisorMsg::VoicesPresent(names))
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::supervisor::{Supervisor, SupervisorArgs};

    #[test]
    fn a_rate_is_the_scale_whose_speech_lasts_as_asked() {
        let close = |a: f32, b: f32| (a - b).abs() < 0.01;
        assert!(close(rate_scale(1.0, 100), 1.0));
        // A measured point comes back as it is.
        assert!(close(scale_for(1.7355), 2.0));
        // Half the speed: the scale that makes speech twice as long.
        let slow = rate_scale(1.0, 50);
        assert!(close(length_at(slow), 2.0), "{slow}");
        assert!(slow > 2.0, "{slow}");
        // Relative to the request's own scale.
        let fast = rate_scale(2.0, 200);
        assert!(close(length_at(fast), length_at(2.0) / 2.0), "{fast}");
        // As fast as the voice goes, and no faster.
        assert!(close(rate_scale(1.0, 1000), 0.2));
        assert!(close(rate_scale(1.0, 10), 10.0));
        for rate in [10, 33, 50, 75, 100, 150, 200, 500] {
            let scale = rate_scale(1.0, rate);
            assert!((0.1..=10.0).contains(&scale), "{rate}: {scale}");
        }
    }
    use catalog::{CacheArgs, ConfigCache};
    use ractor::Actor;

    /// The core over a real scheduler and catalog, with the engine's test
    /// double speaking one voice.
    async fn speech(vars: &[(&str, &str)]) -> (tempfile::TempDir, Speech) {
        let (dir, config) = crate::testing::fake_engine_setup(vars);
        let (supervisor, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                config: config.clone(),
                reaper: crate::engine::reaper::Reaper::default(),
            },
        )
        .await
        .unwrap();
        let (catalog, _) = Actor::spawn(
            None,
            ConfigCache,
            CacheArgs {
                voices_dir: config.voices_dir.clone(),
                ttl: config.config_cache_ttl,
            },
        )
        .await
        .unwrap();
        (dir, Speech::new(config, supervisor, catalog))
    }

    async fn next_kind(session: &mut Session) -> &'static str {
        match tokio::time::timeout(Duration::from_secs(20), session.next()).await {
            Ok(Some(SpeechEvent::Audio(_))) => "audio",
            Ok(Some(SpeechEvent::SentenceEnd { .. })) => "end",
            Ok(Some(SpeechEvent::Done(_))) => "done",
            Ok(Some(SpeechEvent::Failed(err))) => panic!("failed: {err}"),
            Ok(None) => "none",
            Err(_) => "nothing yet",
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn text_over_time_is_spoken_sentence_by_sentence_until_its_end() {
        let (_dir, speech) = speech(&[]).await;
        let voice = speech.voice(None).await.unwrap();
        let mut session = speech.open(voice, SynthOptions::default()).unwrap();
        // The first sentence is complete once the next one starts.
        session.push("Hello there. Gen").unwrap();
        assert_eq!(next_kind(&mut session).await, "audio");
        // The engine's parts of it, then its end.
        let mut kind = next_kind(&mut session).await;
        while kind == "audio" {
            kind = next_kind(&mut session).await;
        }
        assert_eq!(kind, "end");
        // Input still open: nothing more comes until more text does.
        let quiet = tokio::time::timeout(Duration::from_millis(300), session.next()).await;
        assert!(quiet.is_err(), "the session ended before its input did");
        session.push("eral Kenobi").unwrap();
        session.end().unwrap();
        assert_eq!(next_kind(&mut session).await, "audio");
        let mut kind = next_kind(&mut session).await;
        while kind == "audio" {
            kind = next_kind(&mut session).await;
        }
        assert_eq!(kind, "end");
        assert_eq!(next_kind(&mut session).await, "done");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_whole_text_is_cached_with_its_sentences() {
        let (_dir, speech) = speech(&[]).await;
        let voice = speech.voice(Some("v")).await.unwrap();
        let text = "One sentence here. And another one.";
        let mut spans = Vec::new();
        for round in 0..2 {
            let mut session = speech
                .say(Utterance {
                    voice: voice.clone(),
                    text,
                    options: SynthOptions::default(),
                    complete: true,
                    normalize: true,
                    ssml: false,
                })
                .await
                .unwrap();
            assert_eq!(session.cached(), round == 1);
            let mut got = Vec::new();
            while let Some(event) = session.next().await {
                if let SpeechEvent::SentenceEnd { span, .. } = event {
                    got.push(text[span].to_string());
                }
            }
            spans.push(got);
        }
        assert_eq!(spans[0], ["One sentence here.", "And another one."]);
        assert_eq!(spans[0], spans[1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn text_is_checked_before_any_work() {
        let (_dir, speech) = speech(&[("PIPER_MAX_AUDIO_SECONDS", "10")]).await;
        let voice = speech.voice(None).await.unwrap();
        let say = |text: &'static str, complete| Utterance {
            voice: voice.clone(),
            text,
            options: SynthOptions::default(),
            complete,
            normalize: true,
            ssml: false,
        };
        assert_eq!(
            speech.say(say("  \n", true)).await.err(),
            Some(SpeechError::EmptyText)
        );
        assert_eq!(
            speech.say(say("...", true)).await.err(),
            Some(SpeechError::NoSpeakableText)
        );
        // 500 characters are at least 20 s of speech: over 10 s, when complete.
        let long: &'static str = "word ".repeat(100).leak();
        assert_eq!(
            speech.say(say(long, true)).await.err(),
            Some(SpeechError::AudioTooLong { max_seconds: 10 })
        );
        assert!(speech.say(say(long, false)).await.is_ok());
    }
}
