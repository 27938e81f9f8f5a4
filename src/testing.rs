//! Fixtures shared by the unit tests: a voice's description, and a voices
//! folder spoken by the engine's test double.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::voices::{files_for, Fingerprint, VoiceInfo};

/// A voice as the catalog describes it, with no files behind it.
pub fn voice_info(name: &str, sample_rate: u32, speakers: &[(&str, u32)]) -> VoiceInfo {
    VoiceInfo {
        name: name.into(),
        files: files_for(std::path::Path::new("/v"), name),
        fingerprint: Fingerprint {
            model: (None, 1),
            config: (None, 1),
        },
        language: "en_US".into(),
        quality: "medium".into(),
        sample_rate,
        num_speakers: speakers.len().max(1) as u32,
        speakers: speakers.iter().map(|(n, i)| (n.to_string(), *i)).collect(),
        length_scale: 1.0,
    }
}

/// A voices folder holding voice `v`, and a configuration that has the
/// engine's test double (tests/fake_engine.py) speak it, with `vars` over
/// the defaults.
pub fn fake_engine_setup(vars: &[(&str, &str)]) -> (tempfile::TempDir, Arc<Config>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("v.onnx"), b"not read by the double").unwrap();
    std::fs::write(
        dir.path().join("v.onnx.json"),
        br#"{"audio":{"sample_rate":22050}}"#,
    )
    .unwrap();
    let double = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fake_engine.py");
    let mut env: HashMap<String, String> = [
        ("PIPER_VOICES_DIR", dir.path().to_str().unwrap()),
        ("PIPER_PYTHON", "python3"),
        ("PIPER_ENGINE", double.to_str().unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    (dir, Arc::new(Config::from_vars(&env).unwrap()))
}
