//! A `/process` request: the form's fields, checked.

use crate::audio::AudioFormat;

/// What a client asked `/process` for.
#[derive(Debug, Clone, PartialEq)]
pub struct MaryRequest {
    pub text: String,
    pub locale: Option<String>,
    pub voice: Option<String>,
    /// From `effect_Rate` (`durScale`): above 1 is slower, as Piper's scale.
    pub length_scale: Option<f32>,
    /// From `effect_Volume` (`amount`).
    pub volume: Option<f32>,
    /// From `AUDIO`: WAV, AU or AIFF.
    pub format: AudioFormat,
    /// `INPUT_TYPE=SSML`: the text is an SSML document.
    pub ssml: bool,
}

/// Why a MaryTTS request is refused before any speech is made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("cannot read the request: {0}")]
    Unreadable(String),
    #[error("the request is larger than {} bytes", super::MAX_REQUEST_BYTES)]
    TooLarge,
    #[error("the request is not a form (application/x-www-form-urlencoded): {0}")]
    NotAForm(String),
    #[error("INPUT_TEXT is missing")]
    MissingText,
    #[error("INPUT_TYPE {0} is not supported; only TEXT and SSML are")]
    InputType(String),
    #[error("OUTPUT_TYPE {0} is not supported; only AUDIO is")]
    OutputType(String),
    #[error("AUDIO {0} is not supported; use WAVE_FILE, AU_FILE or AIFF_FILE")]
    Audio(String),
    #[error("effect {effect}: {message}")]
    Effect {
        effect: &'static str,
        message: String,
    },
}

impl RequestError {
    /// A stable code for logs and the errors metric.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Unreadable(_) | RequestError::NotAForm(_) => "invalid_request",
            RequestError::TooLarge => "body_too_large",
            RequestError::MissingText => "empty_text",
            RequestError::InputType(_) | RequestError::OutputType(_) | RequestError::Audio(_) => {
                "unsupported_format"
            }
            RequestError::Effect { .. } => "invalid_parameter",
        }
    }
}

impl MaryRequest {
    /// Parses a form (a POST body or a GET query); names are MaryTTS's,
    /// matched exactly, and the last of a repeated field counts.
    pub fn parse(form: &[u8]) -> Result<MaryRequest, RequestError> {
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(form)
            .map_err(|e| RequestError::NotAForm(e.to_string()))?;
        let field = |name: &str| {
            fields
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_string())
        };
        let present = |name: &str| field(name).filter(|v| !v.is_empty());
        let text = fields
            .iter()
            .rev()
            .find(|(k, _)| k == "INPUT_TEXT")
            .map(|(_, v)| v.clone())
            .ok_or(RequestError::MissingText)?;
        let ssml = match present("INPUT_TYPE") {
            None => false,
            Some(kind) if kind.eq_ignore_ascii_case("TEXT") => false,
            Some(kind) if kind.eq_ignore_ascii_case("SSML") => true,
            Some(kind) => return Err(RequestError::InputType(kind)),
        };
        if let Some(kind) = present("OUTPUT_TYPE").filter(|k| !k.eq_ignore_ascii_case("AUDIO")) {
            return Err(RequestError::OutputType(kind));
        }
        let format = match present("AUDIO") {
            None => AudioFormat::Wav,
            Some(audio) => audio_format(&audio).ok_or(RequestError::Audio(audio))?,
        };
        let effect = |name: &'static str, key: &str| -> Result<Option<f32>, RequestError> {
            let selected = field(&format!("effect_{name}_selected"))
                .is_some_and(|v| v.eq_ignore_ascii_case("on"));
            if !selected {
                return Ok(None);
            }
            let parameters = field(&format!("effect_{name}_parameters")).unwrap_or_default();
            effect_value(&parameters, key)
                .map(Some)
                .map_err(|message| RequestError::Effect {
                    effect: name,
                    message,
                })
        };
        Ok(MaryRequest {
            text,
            locale: present("LOCALE"),
            voice: present("VOICE"),
            length_scale: effect("Rate", "durScale")?,
            volume: effect("Volume", "amount")?,
            format,
            ssml,
        })
    }
}

/// MaryTTS's `AUDIO` names: a Java audio file type (`WAVE`, `AU`, `AIFF`)
/// and how to send it (`_FILE`, a complete file, which is what piperd
/// answers), or the type alone.
fn audio_format(name: &str) -> Option<AudioFormat> {
    let upper = name.to_ascii_uppercase();
    let kind = upper.strip_suffix("_FILE").unwrap_or(&upper);
    match kind {
        "WAVE" => Some(AudioFormat::Wav),
        "AU" => Some(AudioFormat::Au),
        "AIFF" => Some(AudioFormat::Aiff),
        _ => None,
    }
}

/// The number after `key:` in MaryTTS's effect parameters
/// (`durScale:1.5;`).
fn effect_value(parameters: &str, key: &str) -> Result<f32, String> {
    let value = parameters
        .split(';')
        .filter_map(|pair| pair.split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .ok_or_else(|| format!("parameters {parameters:?} have no {key}"))?;
    value
        .parse::<f32>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{key} {value:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speak2marys_form_with_effects() {
        let form = b"INPUT_TEXT=Hello+world%21&OUTPUT_TYPE=AUDIO&INPUT_TYPE=TEXT&LOCALE=en_US\
            &AUDIO=WAVE_FILE&VOICE=cmu-slt-hsmm&effect_Rate_selected=on\
            &effect_Rate_parameters=durScale%3A1.5%3B&effect_Volume_selected=on\
            &effect_Volume_parameters=amount%3A2.0%3B&effect_Robot_selected=on\
            &effect_Robot_parameters=amount%3A100.0%3B";
        let request = MaryRequest::parse(form).unwrap();
        assert_eq!(
            request,
            MaryRequest {
                text: "Hello world!".into(),
                locale: Some("en_US".into()),
                voice: Some("cmu-slt-hsmm".into()),
                length_scale: Some(1.5),
                volume: Some(2.0),
                format: AudioFormat::Wav,
                ssml: false,
            }
        );
        let ssml = MaryRequest::parse(b"INPUT_TEXT=%3Cspeak%3EHi%3C%2Fspeak%3E&INPUT_TYPE=SSML");
        assert_eq!(
            ssml.map(|r| (r.text, r.ssml)),
            Ok(("<speak>Hi</speak>".into(), true))
        );
    }

    #[test]
    fn the_least_a_client_sends() {
        let request = MaryRequest::parse(b"INPUT_TEXT=hi").unwrap();
        assert_eq!(request.text, "hi");
        assert_eq!((request.locale, request.voice), (None, None));
        // An effect's parameters without `_selected=on` are not applied.
        let request =
            MaryRequest::parse(b"INPUT_TEXT=hi&effect_Rate_parameters=durScale:2").unwrap();
        assert_eq!(request.length_scale, None);
    }

    #[test]
    fn wave_au_and_aiff_as_speak2mary_names_them() {
        let format = |form: &[u8]| MaryRequest::parse(form).unwrap().format;
        assert_eq!(format(b"INPUT_TEXT=x"), AudioFormat::Wav);
        assert_eq!(format(b"INPUT_TEXT=x&AUDIO=WAVE_FILE"), AudioFormat::Wav);
        assert_eq!(format(b"INPUT_TEXT=x&AUDIO=WAVE"), AudioFormat::Wav);
        assert_eq!(format(b"INPUT_TEXT=x&AUDIO=AU_FILE"), AudioFormat::Au);
        assert_eq!(format(b"INPUT_TEXT=x&AUDIO=AU"), AudioFormat::Au);
        assert_eq!(format(b"INPUT_TEXT=x&AUDIO=AIFF_FILE"), AudioFormat::Aiff);
        assert_eq!(format(b"INPUT_TEXT=x&AUDIO=aiff"), AudioFormat::Aiff);
    }

    #[test]
    fn what_is_refused_and_why() {
        let refused = |form: &[u8]| MaryRequest::parse(form).unwrap_err();
        assert_eq!(refused(b"LOCALE=en_US"), RequestError::MissingText);
        assert_eq!(
            refused(b"INPUT_TEXT=x&INPUT_TYPE=RAWMARYXML"),
            RequestError::InputType("RAWMARYXML".into())
        );
        assert_eq!(
            refused(b"INPUT_TEXT=x&OUTPUT_TYPE=PHONEMES"),
            RequestError::OutputType("PHONEMES".into())
        );
        assert_eq!(
            refused(b"INPUT_TEXT=x&AUDIO=MP3_FILE"),
            RequestError::Audio("MP3_FILE".into())
        );
        assert_eq!(
            refused(b"INPUT_TEXT=x&AUDIO=AU_STREAM"),
            RequestError::Audio("AU_STREAM".into())
        );
        assert!(matches!(
            refused(b"INPUT_TEXT=x&effect_Rate_selected=on&effect_Rate_parameters=fast"),
            RequestError::Effect { effect: "Rate", .. }
        ));
        assert!(matches!(
            refused(b"INPUT_TEXT=x&effect_Volume_selected=on&effect_Volume_parameters=amount:NaN"),
            RequestError::Effect {
                effect: "Volume",
                ..
            }
        ));
    }
}
