//! Prompt formats: the fill-in-the-middle families (markers detected from the tokenizer's
//! special tokens, each checked to be a single token) and the plain prefix prompt used for
//! models without FIM, such as the default SmolLM2.

use crate::engine::{ModelInfo, PromptPiece};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FimFamily {
    StarCoder,
    CodeLlama,
    DeepSeek,
    Qwen,
    Codestral,
}

/// The markers of one family as the vocabulary spells them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FimFormat {
    pub family: FimFamily,
    prefix: String,
    suffix: String,
    /// Codestral has no middle marker: `[SUFFIX]s[PREFIX]p`.
    middle: Option<String>,
}

/// One spelling of a family's markers: (prefix, suffix, middle).
type Spelling = (&'static str, &'static str, Option<&'static str>);

/// Candidate spellings per family (with its `nib.json` name), in the order tried.
const FAMILIES: &[(FimFamily, &str, &[Spelling])] = &[
    (FimFamily::StarCoder, "starcoder", &[("<fim_prefix>", "<fim_suffix>", Some("<fim_middle>"))]),
    (FimFamily::Qwen, "qwen", &[("<|fim_prefix|>", "<|fim_suffix|>", Some("<|fim_middle|>"))]),
    (FimFamily::DeepSeek, "deepseek", &[("<｜fim▁begin｜>", "<｜fim▁hole｜>", Some("<｜fim▁end｜>"))]),
    (FimFamily::CodeLlama, "codellama", &[("▁<PRE>", "▁<SUF>", Some("▁<MID>")), ("<PRE>", "<SUF>", Some("<MID>"))]),
    (FimFamily::Codestral, "codestral", &[("[PREFIX]", "[SUFFIX]", None)]),
];

impl FimFormat {
    /// The FIM format of a model: the family named in `nib.json` or, when it names none, the
    /// first family whose markers are all single special tokens of the vocabulary.
    pub fn for_model(info: &ModelInfo) -> Option<FimFormat> {
        if info.fim_declared_absent {
            return None;
        }
        // A remote server reads markers from text: any family's can be used, spelled as text.
        let is_token =
            |token: &str| info.markers_are_text || info.special_tokens.iter().any(|special| special == token);
        FAMILIES
            .iter()
            .filter(|(_, name, _)| info.fim_family.as_deref().is_none_or(|declared| declared == *name))
            .find_map(|(family, _, spellings)| {
                let spelled_as_text = |(prefix, _, _): &&Spelling| !(info.markers_are_text && prefix.starts_with('▁'));
                spellings.iter().filter(spelled_as_text).find_map(|(prefix, suffix, middle)| {
                    let all_single = is_token(prefix) && is_token(suffix) && middle.is_none_or(is_token);
                    all_single.then(|| FimFormat {
                        family: *family,
                        prefix: prefix.to_string(),
                        suffix: suffix.to_string(),
                        middle: middle.map(str::to_string),
                    })
                })
            })
    }

    /// `prefix` already holds the context header; `suffix` is the text after the cursor.
    pub fn build(&self, prefix: String, suffix: String) -> Vec<PromptPiece> {
        let special = |token: &str| PromptPiece::Special(token.to_string());
        match (&self.family, &self.middle) {
            // CodeLlama: `<PRE> {prefix} <SUF>{suffix} <MID>`; the spaces are part of the format.
            (FimFamily::CodeLlama, Some(middle)) => vec![
                special(&self.prefix),
                PromptPiece::Text(format!(" {prefix}")),
                special(&self.suffix),
                PromptPiece::Text(suffix),
                PromptPiece::Text(" ".into()),
                special(middle),
            ],
            (_, Some(middle)) => vec![
                special(&self.prefix),
                PromptPiece::Text(prefix),
                special(&self.suffix),
                PromptPiece::Text(suffix),
                special(middle),
            ],
            // Suffix first: the text typed at the cursor stays at the end of the prompt, which
            // keeps the KV cache valid while typing.
            (_, None) => {
                vec![special(&self.suffix), PromptPiece::Text(suffix), special(&self.prefix), PromptPiece::Text(prefix)]
            }
        }
    }

    /// Tokens that end a FIM completion besides the model's own stop tokens.
    pub fn stop_tokens(&self) -> Vec<String> {
        let mut stops: Vec<String> = match self.family {
            FimFamily::StarCoder => vec!["<|endoftext|>".into(), "<file_sep>".into()],
            FimFamily::CodeLlama => vec!["<EOT>".into(), "▁<EOT>".into()],
            FimFamily::DeepSeek => vec!["<｜end▁of▁sentence｜>".into(), "<|EOT|>".into()],
            FimFamily::Qwen => {
                vec!["<|fim_pad|>".into(), "<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()]
            }
            FimFamily::Codestral => vec![],
        };
        stops.push(self.prefix.clone());
        stops.push(self.suffix.clone());
        stops.extend(self.middle.clone());
        stops
    }
}

/// Renders prompt pieces as one string (special tokens spelled out), for inspection.
pub fn render(pieces: &[PromptPiece]) -> String {
    pieces
        .iter()
        .map(|piece| match piece {
            PromptPiece::Text(text) | PromptPiece::Special(text) => text.as_str(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(special: &[&str], declared: Option<&str>, absent: bool) -> ModelInfo {
        ModelInfo {
            dir: "m".into(),
            name: "m".into(),
            context_length: 2048,
            fim_family: declared.map(str::to_string),
            fim_declared_absent: absent,
            special_tokens: special.iter().map(|s| s.to_string()).collect(),
            markers_are_text: false,
            chat_format: None,
        }
    }

    fn template(special: &[&str]) -> String {
        let format = FimFormat::for_model(&info(special, None, false)).expect("a FIM family");
        render(&format.build("P".into(), "S".into()))
    }

    #[test]
    fn every_family_has_its_exact_template() {
        assert_eq!(
            template(&["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]),
            "<fim_prefix>P<fim_suffix>S<fim_middle>"
        );
        assert_eq!(template(&["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]), "▁<PRE> P▁<SUF>S ▁<MID>");
        assert_eq!(
            template(&["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"]),
            "<｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>"
        );
        assert_eq!(
            template(&["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>"]),
            "<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>"
        );
        assert_eq!(template(&["[PREFIX]", "[SUFFIX]"]), "[SUFFIX]S[PREFIX]P");
    }

    #[test]
    fn detection_needs_every_marker_and_respects_nib_json() {
        // SmolLM2's special tokens: no FIM.
        assert_eq!(FimFormat::for_model(&info(&["<|endoftext|>", "<|im_start|>", "<file_sep>"], None, false)), None);
        // A missing middle marker disqualifies the family.
        assert_eq!(FimFormat::for_model(&info(&["<fim_prefix>", "<fim_suffix>"], None, false)), None);
        // `"fim": null` in nib.json wins over the vocabulary.
        assert_eq!(FimFormat::for_model(&info(&["<fim_prefix>", "<fim_suffix>", "<fim_middle>"], None, true)), None);
        // A declared family picks among several present.
        let both =
            ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"];
        let declared = FimFormat::for_model(&info(&both, Some("qwen"), false)).unwrap();
        assert_eq!(declared.family, FimFamily::Qwen);
        assert!(declared.stop_tokens().contains(&"<|fim_pad|>".to_string()));
        // A remote model's markers are text: the declared family is used as spelled in text.
        let remote = ModelInfo { markers_are_text: true, ..info(&[], Some("codellama"), false) };
        let format = FimFormat::for_model(&remote).unwrap();
        assert_eq!(render(&format.build("P".into(), "S".into())), "<PRE> P<SUF>S <MID>");
    }
}
