//! The voice catalog: the voices folder's listing and voice configs, kept
//! for a TTL and reloaded on change (an actor, so lookups never race).
//!
//! Every lookup checks the voice's files (a `stat` each, microseconds), so a
//! changed `.onnx` or `.onnx.json` is seen by the very next request: the
//! config is reloaded and the new fingerprint travels with the request to
//! the worker, which restarts its engine before serving it. The TTL bounds
//! how long a config is trusted even if the file system hides a change.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::counter;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::metrics as m;
use crate::voices::{self, VoiceError, VoiceInfo};

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
/// briefly rather than read per request, and a voice added or removed shows
/// within this time.
const LISTING_TTL: Duration = Duration::from_secs(1);

pub struct CacheState {
    voices_dir: PathBuf,
    ttl: Duration,
    entries: HashMap<String, (Arc<VoiceInfo>, Instant)>,
    listing: Option<(Arc<[String]>, Instant)>,
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
        let names: Arc<[String]> = tokio::task::spawn_blocking(move || voices::list_names(&dir))
            .await
            .unwrap_or_default()
            .into();
        self.listing = Some((names.clone(), Instant::now()));
        names
    }

    async fn lookup(&mut self, name: String) -> Lookup {
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
        add_voice(dir.path(), "b");
        assert_eq!(names(&catalog).await, ["a"]);
        tokio::time::sleep(LISTING_TTL + Duration::from_millis(50)).await;
        assert_eq!(names(&catalog).await, ["a", "b"]);
        catalog.stop(None);
        handle.await.unwrap();
    }
}
