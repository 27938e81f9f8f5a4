//! The config cache: voice configs, kept for a TTL and reloaded on change.
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
}

pub struct CacheState {
    voices_dir: PathBuf,
    ttl: Duration,
    entries: HashMap<String, (Arc<VoiceInfo>, Instant)>,
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
                let dir = state.voices_dir.clone();
                let names = tokio::task::spawn_blocking(move || voices::list_names(&dir))
                    .await
                    .unwrap_or_default();
                let mut out = Vec::with_capacity(names.len());
                for name in names {
                    out.push(state.lookup(name).await);
                }
                let _ = reply.send(out);
            }
        }
        Ok(())
    }
}

impl CacheState {
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
