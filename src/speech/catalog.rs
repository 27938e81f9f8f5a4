//! The voice catalog: the voices folder's listing and voice configs, kept
//! for a TTL and reloaded on change (an actor, so lookups never race).
//!
//! Every lookup checks the voice's files (a `stat` each, microseconds), so a
//! changed `.onnx` or `.onnx.json` is seen by the very next request: the
//! config is reloaded and the new fingerprint travels with the request to
//! the worker, which restarts its engine before serving it. The TTL bounds
//! how long a config is trusted even if the file system hides a change.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics::counter;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::metrics as m;
use crate::voices::{self, Fingerprint, VoiceError, VoiceInfo};

pub struct ConfigCache;

pub struct CacheArgs {
    pub voices_dir: PathBuf,
    pub ttl: Duration,
}

pub type Lookup = Result<Arc<VoiceInfo>, VoiceError>;

pub enum ConfigMsg {
    /// The config of one voice, by the name a user gave.
    Get(String, RpcReplyPort<Lookup>),
    /// Every voice in the folder.
    List(RpcReplyPort<Vec<Lookup>>),
    /// The names of the voices in the folder, sorted.
    Names(RpcReplyPort<Arc<[String]>>),
}

/// How long a listing of the voices folder is trusted without looking at
/// the folder again: requests that name no voice ask for it, so it is kept
/// briefly rather than read per request.
pub const LISTING_TTL: Duration = Duration::from_millis(500);

/// How long a new voice's files must have been left alone before it is
/// listed: a copy in progress keeps touching them.
pub const SETTLE: Duration = Duration::from_secs(1);

pub struct CacheState {
    voices_dir: PathBuf,
    ttl: Duration,
    entries: HashMap<String, (Arc<VoiceInfo>, Instant)>,
    listing: Option<(Arc<[String]>, Instant)>,
    watch: Watch,
}

/// What the listings have seen of the folder, to tell whole voices from
/// voices still arriving.
#[derive(Debug, Default)]
struct Watch {
    /// Whether the folder was listed before.
    listed: bool,
    /// The voices listed (usable).
    accepted: HashSet<String>,
    /// Every voice found by the last listing, with its files' stamps.
    last_seen: HashMap<String, Option<Fingerprint>>,
}

impl Watch {
    /// Takes a new look at the folder (voice names with their files'
    /// stamps, `None` when they cannot be read); returns the voices to
    /// list, sorted.
    fn observe(
        &mut self,
        found: Vec<(String, Option<Fingerprint>)>,
        now: SystemTime,
    ) -> Vec<String> {
        let settled = |stamp: &Fingerprint| {
            [stamp.model.0, stamp.config.0]
                .into_iter()
                .flatten()
                .all(|modified| now.duration_since(modified).unwrap_or_default() >= SETTLE)
        };
        let mut accepted = HashSet::new();
        for (name, stamp) in &found {
            let whole = match stamp {
                Some(stamp) => self.last_seen.get(name) == Some(&Some(*stamp)) && settled(stamp),
                None => false,
            };
            if !self.listed || self.accepted.contains(name) || whole {
                accepted.insert(name.clone());
            }
        }
        for name in found.iter().map(|(n, _)| n) {
            if !accepted.contains(name) && !self.accepted.contains(name) {
                tracing::debug!(voice = %name, "a new voice is not whole yet");
            }
        }
        for name in accepted.difference(&self.accepted) {
            if self.listed {
                tracing::info!(voice = %name, "voice added");
            }
        }
        for name in self.accepted.difference(&accepted) {
            tracing::info!(voice = %name, "voice removed");
        }
        self.listed = true;
        self.accepted = accepted;
        self.last_seen = found.into_iter().collect();
        let mut names: Vec<String> = self.accepted.iter().cloned().collect();
        names.sort();
        names
    }
}

impl Actor for ConfigCache {
    type Msg = ConfigMsg;
    type State = CacheState;
    type Arguments = CacheArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: CacheArgs,
    ) -> Result<CacheState, ActorProcessingErr> {
        Ok(CacheState {
            voices_dir: args.voices_dir,
            ttl: args.ttl,
            entries: HashMap::new(),
            listing: None,
            watch: Watch::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: ConfigMsg,
        state: &mut CacheState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConfigMsg::Get(name, reply) => {
                let found = state.lookup(name).await;
                if !reply.is_closed() {
                    let _ = reply.send(found);
                }
            }
            ConfigMsg::List(reply) => {
                let names = state.names().await;
                let mut out = Vec::with_capacity(names.len());
                for name in names.iter() {
                    out.push(state.lookup(name.clone()).await);
                }
                let _ = reply.send(out);
            }
            ConfigMsg::Names(reply) => {
                let names = state.names().await;
                let _ = reply.send(names);
            }
        }
        Ok(())
    }
}

impl CacheState {
    /// The folder's voice names, listed again once [`LISTING_TTL`] passed.
    async fn names(&mut self) -> Arc<[String]> {
        if let Some((names, at)) = &self.listing {
            if at.elapsed() < LISTING_TTL {
                return names.clone();
            }
        }
        let dir = self.voices_dir.clone();
        let found = tokio::task::spawn_blocking(move || {
            voices::list_names(&dir)
                .into_iter()
                .map(|name| {
                    let stamp = voices::resolve(&dir, &name).ok().map(|(_, stamp)| stamp);
                    (name, stamp)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let names: Arc<[String]> = self.watch.observe(found, SystemTime::now()).into();
        self.listing = Some((names.clone(), Instant::now()));
        names
    }

    async fn lookup(&mut self, name: String) -> Lookup {
        let listed = self.names().await;
        let dir = self.voices_dir.clone();
        let requested = name.clone();
        let (files, fingerprint) =
            tokio::task::spawn_blocking(move || voices::resolve(&dir, &requested))
                .await
                .map_err(|e| VoiceError::BadConfig {
                    name: name.clone(),
                    reason: e.to_string(),
                })??;
        let key = files.name.clone();
        if !listed.contains(&key) {
            // There, but not whole yet: still being copied.
            return Err(VoiceError::NotFound {
                name: key,
                available: listed.to_vec(),
            });
        }
        let result = match self.entries.get(&key) {
            Some((info, at)) if info.fingerprint == fingerprint && at.elapsed() < self.ttl => {
                counter!(m::CONFIG_CACHE_LOOKUPS, "result" => "hit").increment(1);
                return Ok(info.clone());
            }
            Some(_) => "reloaded",
            None => "miss",
        };
        counter!(m::CONFIG_CACHE_LOOKUPS, "result" => result).increment(1);
        let loaded = tokio::task::spawn_blocking(move || voices::load(files, fingerprint))
            .await
            .map_err(|e| VoiceError::BadConfig {
                name: key.clone(),
                reason: e.to_string(),
            })?;
        match loaded {
            Ok(info) => {
                let info = Arc::new(info);
                self.entries.insert(key, (info.clone(), Instant::now()));
                Ok(info)
            }
            Err(err) => {
                self.entries.remove(&key);
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::rpc::CallResult;

    fn add_voice(dir: &std::path::Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.onnx")), b"model").unwrap();
        std::fs::write(
            dir.join(format!("{name}.onnx.json")),
            br#"{"audio":{"sample_rate":22050}}"#,
        )
        .unwrap();
    }

    /// A voice whose files were last written `ago`.
    fn add_old_voice(dir: &std::path::Path, name: &str, ago: Duration) {
        add_voice(dir, name);
        for ext in ["onnx", "onnx.json"] {
            let file = std::fs::File::options()
                .write(true)
                .open(dir.join(format!("{name}.{ext}")))
                .unwrap();
            file.set_modified(SystemTime::now() - ago).unwrap();
        }
    }

    fn stamp(modified: SystemTime, size: u64) -> Option<Fingerprint> {
        Some(Fingerprint {
            model: (Some(modified), size),
            config: (Some(modified), 10),
        })
    }

    #[test]
    fn a_new_voice_is_listed_once_whole_and_settled() {
        let mut watch = Watch::default();
        let t0 = SystemTime::now();
        let old = t0 - Duration::from_secs(60);
        let s = Duration::from_millis(500);
        // At start-up, every voice is listed at once.
        assert_eq!(watch.observe(vec![("a".into(), stamp(t0, 5))], t0), ["a"]);
        // A copy in progress: the size grows between looks.
        let copying = |modified, size| {
            vec![
                ("a".into(), stamp(t0, 5)),
                ("b".into(), stamp(modified, size)),
            ]
        };
        assert_eq!(watch.observe(copying(t0 + s, 100), t0 + s), ["a"]);
        assert_eq!(watch.observe(copying(t0 + s * 2, 200), t0 + s * 2), ["a"]);
        // Unchanged, but touched less than SETTLE ago.
        assert_eq!(watch.observe(copying(t0 + s * 2, 200), t0 + s * 3), ["a"]);
        // Unchanged and settled.
        assert_eq!(
            watch.observe(copying(t0 + s * 2, 200), t0 + s * 5),
            ["a", "b"]
        );
        // A listed voice whose files change stays listed.
        let changed = vec![
            ("a".into(), stamp(t0 + s * 6, 7)),
            ("b".into(), stamp(t0 + s * 2, 200)),
        ];
        assert_eq!(watch.observe(changed, t0 + s * 6), ["a", "b"]);
        // Files that cannot be read, and a voice removed.
        assert_eq!(
            watch.observe(vec![("a".into(), None), ("c".into(), None)], t0 + s * 7),
            ["a"]
        );
        // A voice with old files (moved in whole) needs one look before.
        let moved = vec![("a".into(), stamp(old, 7)), ("d".into(), stamp(old, 9))];
        assert_eq!(watch.observe(moved.clone(), t0 + s * 8), ["a"]);
        assert_eq!(watch.observe(moved, t0 + s * 9), ["a", "d"]);
    }

    async fn names(catalog: &ActorRef<ConfigMsg>) -> Vec<String> {
        match catalog.call(ConfigMsg::Names, None).await.unwrap() {
            CallResult::Success(names) => names.to_vec(),
            _ => panic!("the catalog did not answer"),
        }
    }

    #[tokio::test]
    async fn the_listing_is_kept_briefly_and_then_read_again() {
        let dir = tempfile::tempdir().unwrap();
        add_voice(dir.path(), "a");
        let (catalog, handle) = Actor::spawn(
            None,
            ConfigCache,
            CacheArgs {
                voices_dir: dir.path().to_path_buf(),
                ttl: Duration::from_secs(300),
            },
        )
        .await
        .unwrap();
        assert_eq!(names(&catalog).await, ["a"]);
        // Requests that name no voice ask for the listing: within its TTL it
        // is answered from memory, not by reading the folder again.
        add_old_voice(dir.path(), "b", Duration::from_secs(60));
        assert_eq!(names(&catalog).await, ["a"]);
        // Seen once, then listed at the next look, as it did not change.
        tokio::time::sleep(LISTING_TTL + Duration::from_millis(50)).await;
        assert_eq!(names(&catalog).await, ["a"]);
        tokio::time::sleep(LISTING_TTL + Duration::from_millis(50)).await;
        assert_eq!(names(&catalog).await, ["a", "b"]);
        // A voice still being written is not listed, nor found by name.
        add_voice(dir.path(), "c");
        tokio::time::sleep(LISTING_TTL + Duration::from_millis(50)).await;
        assert_eq!(names(&catalog).await, ["a", "b"]);
        let found = catalog
            .call(|reply| ConfigMsg::Get("c".into(), reply), None)
            .await
            .unwrap();
        assert!(
            matches!(found, CallResult::Success(Err(VoiceError::NotFound { .. }))),
            "a voice not whole yet was found"
        );
        catalog.stop(None);
        handle.await.unwrap();
    }
}
