//! What a front-end asks for, checked before any work is done.
//!
//! Front-ends parse their own wire formats into [`VoiceOptions`]; the ranges
//! and the speaker are checked here, once for all of them.

use serde::Deserialize;

use super::error::SpeechError;
use crate::engine::SynthOptions;
use crate::voices::VoiceInfo;

/// Speaker: an id or, for multi-speaker voices, a name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Speaker {
    Id(u32),
    Name(String),
}

/// Options a client may set; `None` leaves the voice's own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VoiceOptions {
    pub speaker: Option<Speaker>,
    /// Above 1 is slower.
    pub length_scale: Option<f32>,
    pub noise_scale: Option<f32>,
    pub noise_w_scale: Option<f32>,
    /// Seconds of silence after each sentence.
    pub sentence_silence: Option<f32>,
    pub volume: Option<f32>,
}

impl VoiceOptions {
    /// Whether every option is in its range (the speaker needs the voice).
    pub fn check_ranges(&self) -> Result<(), SpeechError> {
        self.clone().ranged().map(drop)
    }

    fn ranged(self) -> Result<(Option<Speaker>, SynthOptions), SpeechError> {
        let options = SynthOptions {
            speaker_id: None,
            length_scale: check_range("length_scale", self.length_scale, 0.1, 10.0)?,
            noise_scale: check_range("noise_scale", self.noise_scale, 0.0, 2.0)?,
            noise_w_scale: check_range("noise_w_scale", self.noise_w_scale, 0.0, 2.0)?,
            sentence_silence: check_range("sentence_silence", self.sentence_silence, 0.0, 10.0)?,
            volume: check_range("volume", self.volume, 0.0, 10.0)?,
            phonemize: false,
        };
        Ok((self.speaker, options))
    }

    /// The options for the engine, once every range and the speaker check out.
    pub fn resolve(self, voice: &VoiceInfo) -> Result<SynthOptions, SpeechError> {
        let (speaker, options) = self.ranged()?;
        Ok(SynthOptions {
            speaker_id: resolve_speaker(voice, speaker)?,
            ..options
        })
    }
}

/// A value inside `min..=max`, or the error naming its parameter.
pub fn check_range(
    param: &'static str,
    value: Option<f32>,
    min: f32,
    max: f32,
) -> Result<Option<f32>, SpeechError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(SpeechError::InvalidParameter {
            param,
            message: format!("{v} is outside {min}..={max}"),
        }),
        other => Ok(other),
    }
}

fn resolve_speaker(
    voice: &VoiceInfo,
    speaker: Option<Speaker>,
) -> Result<Option<u32>, SpeechError> {
    let invalid = |message: String| SpeechError::InvalidParameter {
        param: "speaker",
        message,
    };
    match speaker {
        None => Ok(None),
        Some(Speaker::Id(id)) if id < voice.num_speakers => Ok(Some(id)),
        Some(Speaker::Id(id)) => Err(invalid(format!(
            "speaker {id} does not exist; voice {} has {} speaker(s)",
            voice.name, voice.num_speakers
        ))),
        Some(Speaker::Name(name)) => match voice.speakers.get(&name) {
            Some(id) => Ok(Some(*id)),
            None if voice.speakers.is_empty() && name.parse::<u32>().ok() == Some(0) => Ok(Some(0)),
            None => Err(invalid(format!(
                "speaker {name:?} does not exist; known: {:?}",
                voice.speakers.keys().collect::<Vec<_>>()
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(speakers: &[(&str, u32)]) -> VoiceInfo {
        crate::testing::voice_info("v", 22050, speakers)
    }

    #[test]
    fn ranges_name_the_parameter_that_is_out() {
        let options = VoiceOptions {
            length_scale: Some(11.0),
            ..Default::default()
        };
        match options.resolve(&voice(&[])) {
            Err(SpeechError::InvalidParameter { param, .. }) => assert_eq!(param, "length_scale"),
            other => panic!("{other:?}"),
        }
        let fine = VoiceOptions {
            volume: Some(10.0),
            sentence_silence: Some(0.0),
            ..Default::default()
        };
        let resolved = fine.resolve(&voice(&[])).unwrap();
        assert_eq!(resolved.volume, Some(10.0));
    }

    #[test]
    fn speakers_by_id_or_name() {
        let many = voice(&[("alice", 0), ("bob", 1)]);
        let by_name = VoiceOptions {
            speaker: Some(Speaker::Name("bob".into())),
            ..Default::default()
        };
        assert_eq!(by_name.resolve(&many).unwrap().speaker_id, Some(1));
        let unknown = VoiceOptions {
            speaker: Some(Speaker::Id(2)),
            ..Default::default()
        };
        assert!(unknown.resolve(&many).is_err());
        // A single-speaker voice takes "0" as its one speaker.
        let zero = VoiceOptions {
            speaker: Some(Speaker::Name("0".into())),
            ..Default::default()
        };
        assert_eq!(zero.resolve(&voice(&[])).unwrap().speaker_id, Some(0));
    }
}
