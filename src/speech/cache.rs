//! An in-memory cache of finished audio, bounded in bytes.
//!
//! Prompts, notifications and IVR menus repeat: the same voice, text and
//! options. A hit is answered from memory without touching the engine. The
//! key includes the voice files' fingerprint, so a changed voice never
//! serves old audio; its entries simply age out.
//!
//! Reads go through a `DashMap` (sharded locks, no global one), so hits on
//! different keys never wait for each other. Eviction is least recently used:
//! a logical clock stamps every hit, and inserts evict the oldest entries
//! until the cache fits its budget. The cache holds a few hundred entries at
//! most, so the scan for the oldest is cheap next to any synthesis.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::words::{SpokenLine, WordTime};
use bytes::Bytes;
use dashmap::DashMap;
use metrics::{counter, gauge};

use crate::engine::SynthOptions;
use crate::metrics as m;
use crate::voices::VoiceInfo;

/// What identifies a synthesis: equal keys give the same audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    hash: u64,
    /// The full key, compared on a hit so that a hash collision can never
    /// serve another text's audio.
    material: Arc<str>,
}

/// The audio of a finished synthesis and where each sentence of it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedSpeech {
    pub pcm: Bytes,
    pub sentences: Arc<[CachedSentence]>,
}

/// One sentence of cached speech.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedSentence {
    /// Its span in the text.
    pub span: Range<usize>,
    /// The PCM byte its audio ends at.
    pub end: usize,
    /// Its words, timed over the whole audio, as they were first said.
    pub words: Vec<WordTime>,
    /// Its spoken line and that line's words, the same way.
    pub spoken: Option<Arc<SpokenLine>>,
}

impl CachedSpeech {
    /// Audio alone, with no sentence marks (tests).
    pub fn audio(pcm: Bytes) -> CachedSpeech {
        CachedSpeech {
            pcm,
            sentences: Arc::new([]),
        }
    }
}

struct Entry {
    material: Arc<str>,
    speech: CachedSpeech,
    last_used: AtomicU64,
}

pub struct AudioCache {
    entries: DashMap<u64, Arc<Entry>>,
    budget: usize,
    used: AtomicUsize,
    clock: AtomicU64,
    hasher: RandomState,
}

impl AudioCache {
    /// A cache of at most `budget` bytes of audio (0 disables it).
    pub fn new(budget: usize) -> AudioCache {
        AudioCache {
            entries: DashMap::new(),
            budget,
            used: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            hasher: RandomState::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// Largest answer worth keeping: a quarter of the budget, so one long
    /// text cannot empty the cache of everything else.
    pub fn max_entry(&self) -> usize {
        self.budget / 4
    }

    /// The key of a synthesis: voice identity, engine lines and options.
    pub fn key<'a>(
        &self,
        voice: &VoiceInfo,
        lines: impl IntoIterator<Item = &'a str>,
        options: &SynthOptions,
    ) -> CacheKey {
        let mut material = format!(
            "{}\u{0}{:?}\u{0}{:?}",
            voice.name, voice.fingerprint, options
        );
        for line in lines {
            material.push('\u{0}');
            material.push_str(line);
        }
        CacheKey {
            hash: self.hasher.hash_one(&material),
            material: material.into(),
        }
    }

    /// The speech of an earlier identical synthesis, if kept.
    pub fn get(&self, key: &CacheKey) -> Option<CachedSpeech> {
        if !self.enabled() {
            return None;
        }
        let hit = self
            .entries
            .get(&key.hash)
            .filter(|e| e.material == key.material)
            .map(|e| {
                e.last_used.store(
                    self.clock.fetch_add(1, Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                e.speech.clone()
            });
        let result = if hit.is_some() { "hit" } else { "miss" };
        counter!(m::AUDIO_CACHE_LOOKUPS, "result" => result).increment(1);
        hit
    }

    /// Keeps the speech of a finished synthesis, evicting the least
    /// recently used entries to stay within the budget.
    pub fn insert(&self, key: CacheKey, speech: CachedSpeech) {
        let size = speech.pcm.len();
        if !self.enabled() || size == 0 || size > self.max_entry() {
            return;
        }
        let entry = Arc::new(Entry {
            material: key.material,
            speech,
            last_used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
        });
        if let Some(old) = self.entries.insert(key.hash, entry) {
            self.used.fetch_sub(old.speech.pcm.len(), Ordering::Relaxed);
        }
        self.used.fetch_add(size, Ordering::Relaxed);
        while self.used.load(Ordering::Relaxed) > self.budget {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|e| e.last_used.load(Ordering::Relaxed))
                .map(|e| *e.key());
            let Some(hash) = oldest else { break };
            if let Some((_, old)) = self.entries.remove(&hash) {
                self.used.fetch_sub(old.speech.pcm.len(), Ordering::Relaxed);
            }
        }
        gauge!(m::AUDIO_CACHE_BYTES).set(self.used.load(Ordering::Relaxed) as f64);
    }

    /// Bytes of audio held.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voices::{files_for, Fingerprint};

    fn voice(name: &str, stamp: u64) -> VoiceInfo {
        VoiceInfo {
            name: name.into(),
            files: files_for(std::path::Path::new("/v"), name),
            fingerprint: Fingerprint {
                model: (None, stamp),
                config: (None, 1),
            },
            language: String::new(),
            quality: String::new(),
            sample_rate: 22050,
            num_speakers: 1,
            speakers: Default::default(),
            length_scale: 1.0,
        }
    }

    fn units(text: &str) -> [&str; 1] {
        [text]
    }

    fn audio(bytes: &'static [u8]) -> CachedSpeech {
        CachedSpeech::audio(Bytes::from_static(bytes))
    }

    fn sized(len: usize) -> CachedSpeech {
        CachedSpeech::audio(Bytes::from(vec![0; len]))
    }

    #[test]
    fn a_hit_needs_the_same_voice_files_text_and_options() {
        let cache = AudioCache::new(1 << 20);
        let v = voice("a", 1);
        let key = cache.key(&v, units("Hello."), &SynthOptions::default());
        assert_eq!(cache.get(&key), None);
        cache.insert(key.clone(), audio(&[1, 0, 2, 0]));
        assert_eq!(cache.get(&key), Some(audio(&[1, 0, 2, 0])));

        let slower = SynthOptions {
            length_scale: Some(1.5),
            ..Default::default()
        };
        assert_eq!(cache.get(&cache.key(&v, units("Hello."), &slower)), None);
        assert_eq!(
            cache.get(&cache.key(&v, units("Hello!"), &SynthOptions::default())),
            None
        );
        // A changed model file: a new fingerprint, so no stale audio.
        let changed = voice("a", 2);
        assert_eq!(
            cache.get(&cache.key(&changed, units("Hello."), &SynthOptions::default())),
            None
        );
    }

    #[test]
    fn the_budget_holds_by_evicting_the_least_recently_used() {
        let cache = AudioCache::new(4000);
        let v = voice("a", 1);
        let key = |t: &str| cache.key(&v, units(t), &SynthOptions::default());
        cache.insert(key("one"), sized(1000));
        cache.insert(key("two"), sized(1000));
        cache.insert(key("three"), sized(1000));
        assert!(cache.get(&key("one")).is_some()); // "two" is now the oldest
        cache.insert(key("four"), sized(1000));
        cache.insert(key("five"), sized(1000));
        assert!(cache.used() <= 4000);
        assert!(cache.get(&key("two")).is_none());
        assert!(cache.get(&key("one")).is_some());
        assert!(cache.get(&key("five")).is_some());
        // Larger than a quarter of the budget: not kept.
        cache.insert(key("huge"), sized(1001));
        assert!(cache.get(&key("huge")).is_none());
    }

    #[test]
    fn a_zero_budget_disables_the_cache() {
        let cache = AudioCache::new(0);
        let v = voice("a", 1);
        let key = cache.key(&v, units("x"), &SynthOptions::default());
        cache.insert(key.clone(), audio(&[0, 0]));
        assert_eq!(cache.get(&key), None);
    }
}
