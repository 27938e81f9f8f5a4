//! Voices on disk: safe name resolution and the `.onnx.json` config.
//!
//! A voice is a pair `NAME.onnx` + `NAME.onnx.json` in the voices folder.
//! Names come from users, so they are checked before they touch the file
//! system: no separators, no `..`, nothing that resolves (through a symlink
//! too) outside the folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Why a requested voice cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum VoiceError {
    #[error("invalid voice name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error("voice {name:?} not found")]
    NotFound {
        name: String,
        available: Vec<String>,
    },
    #[error("the config of voice {name:?} cannot be read: {reason}")]
    BadConfig { name: String, reason: String },
}

/// The two files of a voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceFiles {
    pub name: String,
    pub model: PathBuf,
    pub config: PathBuf,
}

/// Identity of a voice's files; a change means the engine must reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub model: (Option<SystemTime>, u64),
    pub config: (Option<SystemTime>, u64),
}

/// A loaded voice: its files and what its config says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VoiceInfo {
    pub name: String,
    #[serde(skip)]
    pub files: VoiceFiles,
    #[serde(skip)]
    pub fingerprint: Fingerprint,
    pub language: String,
    pub quality: String,
    pub sample_rate: u32,
    pub num_speakers: u32,
    /// Speaker names to ids, for multi-speaker voices.
    pub speakers: BTreeMap<String, u32>,
    /// The config's own `length_scale` (1 when it has none): what a rate
    /// asked for a part of a text (SSML) is relative to.
    #[serde(skip)]
    pub length_scale: f32,
}

/// Checks a requested name and strips the optional `.onnx`.
pub fn validate_name(requested: &str) -> Result<&str, VoiceError> {
    let invalid = |why| Err(VoiceError::InvalidName(requested.to_string(), why));
    let name = requested.strip_suffix(".onnx").unwrap_or(requested);
    if name.is_empty() {
        return invalid("the name is empty");
    }
    if name.contains('/') || name.contains('\\') {
        return invalid("a voice name cannot contain a path separator");
    }
    if name.contains("..") {
        return invalid("a voice name cannot contain '..'");
    }
    if name.chars().any(|c| c.is_control()) {
        return invalid("a voice name cannot contain control characters");
    }
    if name.len() > 255 {
        return invalid("the name is too long");
    }
    Ok(name)
}

/// Where a validated name's files would be.
pub fn files_for(dir: &Path, name: &str) -> VoiceFiles {
    VoiceFiles {
        name: name.to_string(),
        model: dir.join(format!("{name}.onnx")),
        config: dir.join(format!("{name}.onnx.json")),
    }
}

/// Resolves a requested name to its files, refusing anything outside `dir`.
/// Blocking (file-system calls): run it off the async threads.
pub fn resolve(dir: &Path, requested: &str) -> Result<(VoiceFiles, Fingerprint), VoiceError> {
    let name = validate_name(requested)?;
    let files = files_for(dir, name);
    let not_found = || VoiceError::NotFound {
        name: name.to_string(),
        available: list_names(dir),
    };
    let root = std::fs::canonicalize(dir).map_err(|_| not_found())?;
    let mut stamps = [(None, 0); 2];
    for (path, stamp) in [&files.model, &files.config]
        .into_iter()
        .zip(stamps.iter_mut())
    {
        let real = std::fs::canonicalize(path).map_err(|_| not_found())?;
        if !real.starts_with(&root) {
            return Err(VoiceError::InvalidName(
                requested.to_string(),
                "the voice resolves outside the voices directory",
            ));
        }
        let meta = std::fs::metadata(&real).map_err(|_| not_found())?;
        if !meta.is_file() {
            return Err(not_found());
        }
        *stamp = (meta.modified().ok(), meta.len());
    }
    let fingerprint = Fingerprint {
        model: stamps[0],
        config: stamps[1],
    };
    Ok((files, fingerprint))
}

/// Names of the voices in `dir` (models with a config next to them), sorted.
pub fn list_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let name = file.strip_suffix(".onnx")?.to_string();
            dir.join(format!("{file}.json")).is_file().then_some(name)
        })
        .collect();
    names.sort();
    names
}

#[derive(Deserialize)]
struct RawConfig {
    audio: RawAudio,
    #[serde(default)]
    num_speakers: Option<u32>,
    #[serde(default)]
    speaker_id_map: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    language: Option<RawLanguage>,
    #[serde(default)]
    espeak: Option<RawEspeak>,
    #[serde(default)]
    inference: Option<RawInference>,
}

#[derive(Deserialize)]
struct RawInference {
    #[serde(default)]
    length_scale: Option<f32>,
}

#[derive(Deserialize)]
struct RawAudio {
    sample_rate: u32,
    #[serde(default)]
    quality: Option<String>,
}

#[derive(Deserialize)]
struct RawLanguage {
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct RawEspeak {
    #[serde(default)]
    voice: Option<String>,
}

/// Parses a voice config. Blocking: run it off the async threads.
pub fn load(files: VoiceFiles, fingerprint: Fingerprint) -> Result<VoiceInfo, VoiceError> {
    let bad = |reason: String| VoiceError::BadConfig {
        name: files.name.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&files.config).map_err(|e| bad(e.to_string()))?;
    let raw: RawConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if raw.audio.sample_rate == 0 {
        return Err(bad("sample_rate is 0".into()));
    }
    let language = raw
        .language
        .and_then(|l| l.code)
        .or_else(|| raw.espeak.and_then(|e| e.voice))
        .unwrap_or_default();
    Ok(VoiceInfo {
        name: files.name.clone(),
        language,
        quality: raw.audio.quality.unwrap_or_default(),
        sample_rate: raw.audio.sample_rate,
        num_speakers: raw.num_speakers.unwrap_or(1).max(1),
        speakers: raw.speaker_id_map.unwrap_or_default(),
        length_scale: raw
            .inference
            .and_then(|i| i.length_scale)
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(1.0),
        files,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_paths_are_refused() {
        for bad in [
            "",
            ".onnx",
            "../etc/passwd",
            "a/b",
            "/abs/voice",
            "..",
            "x\\y",
            "a\0b",
            "..hidden",
        ] {
            assert!(
                matches!(validate_name(bad), Err(VoiceError::InvalidName(..))),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(
            validate_name("en_US-joe-medium.onnx"),
            Ok("en_US-joe-medium")
        );
        assert_eq!(validate_name("en_US-joe-medium"), Ok("en_US-joe-medium"));
    }

    fn voice_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.onnx"), b"model").unwrap();
        std::fs::write(
            dir.path().join("a.onnx.json"),
            br#"{"audio":{"sample_rate":16000,"quality":"low"},"num_speakers":2,
                 "speaker_id_map":{"x":0,"y":1},"language":{"code":"de_DE"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("lonely.onnx"), b"no config").unwrap();
        dir
    }

    #[test]
    fn resolves_and_loads_a_voice() {
        let dir = voice_dir();
        let (files, fp) = resolve(dir.path(), "a.onnx").unwrap();
        let info = load(files, fp).unwrap();
        assert_eq!(info.sample_rate, 16000);
        assert_eq!(info.language, "de_DE");
        assert_eq!(info.quality, "low");
        assert_eq!(info.num_speakers, 2);
        assert_eq!(info.speakers.get("y"), Some(&1));
        assert_eq!(list_names(dir.path()), vec!["a".to_string()]);
    }

    #[test]
    fn unknown_voice_lists_the_available_ones() {
        let dir = voice_dir();
        match resolve(dir.path(), "nope") {
            Err(VoiceError::NotFound { available, .. }) => assert_eq!(available, vec!["a"]),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            resolve(dir.path(), "lonely"),
            Err(VoiceError::NotFound { .. })
        ));
    }

    #[test]
    fn a_symlink_out_of_the_folder_is_refused() {
        let dir = voice_dir();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("o.onnx"), b"m").unwrap();
        std::fs::write(
            outside.path().join("o.onnx.json"),
            br#"{"audio":{"sample_rate":1}}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path().join("o.onnx"), dir.path().join("s.onnx"))
            .unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("o.onnx.json"),
            dir.path().join("s.onnx.json"),
        )
        .unwrap();
        assert!(matches!(
            resolve(dir.path(), "s"),
            Err(VoiceError::InvalidName(_, why)) if why.contains("outside")
        ));
    }

    #[test]
    fn a_broken_config_is_reported() {
        let dir = voice_dir();
        std::fs::write(dir.path().join("a.onnx.json"), b"{").unwrap();
        let (files, fp) = resolve(dir.path(), "a").unwrap();
        assert!(matches!(load(files, fp), Err(VoiceError::BadConfig { .. })));
    }
}
