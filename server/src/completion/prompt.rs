//! Prompt formats: the fill-in-the-middle families (markers detected from the tokenizer's
//! special tokens, each checked to be a single token) and the plain prefix prompt used for
//! models without FIM, such as the default SmolLM2.

use crate::engine::fim::{self, Markers, RepositoryTokens};
use crate::engine::{ModelInfo, PromptPiece};

/// The families whose prompts nib can lay out; their markers come from `models/fim.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FimFamily {
    StarCoder,
    CodeLlama,
    DeepSeek,
    Qwen,
    Codestral,
}

impl FimFamily {
    pub fn from_name(name: &str) -> Option<FimFamily> {
        match name {
            "starcoder" => Some(FimFamily::StarCoder),
            "codellama" => Some(FimFamily::CodeLlama),
            "deepseek" => Some(FimFamily::DeepSeek),
            "qwen" => Some(FimFamily::Qwen),
            "codestral" => Some(FimFamily::Codestral),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FimFamily::StarCoder => "starcoder",
            FimFamily::CodeLlama => "codellama",
            FimFamily::DeepSeek => "deepseek",
            FimFamily::Qwen => "qwen",
            FimFamily::Codestral => "codestral",
        }
    }
}

/// The markers of one family as the vocabulary spells them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FimFormat {
    pub family: FimFamily,
    markers: Markers,
    /// The repository tokens, where the model has them (`models/fim.json`'s `repository`).
    repository: Option<RepositoryTokens>,
}

/// What goes before the current file's code in a repository-level prompt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepositorySection {
    /// The repository's name: its workspace folder's.
    pub name: String,
    /// Retrieved code, each as its own file section: (path, code).
    pub files: Vec<(String, String)>,
    /// The current file's path.
    pub path: String,
}

impl RepositorySection {
    /// Its length in bytes without the tokens, for the prompt budget.
    pub fn text_len(&self) -> usize {
        self.name.len()
            + self.path.len()
            + 2
            + self.files.iter().map(|(path, code)| path.len() + code.len() + 2).sum::<usize>()
    }
}

impl FimFormat {
    /// The FIM format of a model: the markers its `nib.json` spells out (when they are single
    /// tokens), else the first spelling of the family `nib.json` names, or of any family,
    /// whose markers are all single special tokens of the vocabulary.
    pub fn for_model(info: &ModelInfo) -> Option<FimFormat> {
        if info.fim_declared_absent {
            return None;
        }
        // A remote server reads markers from text: any family's can be used, spelled as text.
        let is_token =
            |token: &str| info.markers_are_text || info.special_tokens.iter().any(|special| special == token);
        let usable = |markers: &Markers| {
            let spelled_as_text = !(info.markers_are_text && markers.prefix.starts_with('▁'));
            spelled_as_text
                && is_token(&markers.prefix)
                && is_token(&markers.suffix)
                && markers.middle.as_deref().is_none_or(is_token)
        };
        let declared_family = info.fim_family.as_deref();
        let format = if let (Some(family), Some(markers)) =
            (declared_family.and_then(FimFamily::from_name), &info.fim_markers)
            && usable(markers)
        {
            FimFormat { family, markers: markers.clone(), repository: None }
        } else {
            fim::families()
                .iter()
                .filter(|entry| declared_family.is_none_or(|declared| declared == entry.name))
                .find_map(|entry| {
                    let family = FimFamily::from_name(&entry.name)?;
                    let markers = entry.spellings.iter().find(|markers| usable(markers))?;
                    Some(FimFormat { family, markers: markers.clone(), repository: None })
                })?
        };
        let repository = repository_tokens(info, format.family);
        Some(FimFormat { repository, ..format })
    }

    /// The repository tokens, when the model has them.
    pub fn repository(&self) -> Option<&RepositoryTokens> {
        self.repository.as_ref()
    }

    pub fn markers(&self) -> &Markers {
        &self.markers
    }

    /// `prefix` already holds the context header; `suffix` is the text after the cursor.
    pub fn build(&self, prefix: String, suffix: String) -> Vec<PromptPiece> {
        let special = |token: &str| PromptPiece::Special(token.to_string());
        let Markers { prefix: prefix_marker, suffix: suffix_marker, middle } = &self.markers;
        match (&self.family, middle) {
            // CodeLlama: `<PRE> {prefix} <SUF>{suffix} <MID>`; the spaces are part of the format.
            (FimFamily::CodeLlama, Some(middle)) => vec![
                special(prefix_marker),
                PromptPiece::Text(format!(" {prefix}")),
                special(suffix_marker),
                PromptPiece::Text(suffix),
                PromptPiece::Text(" ".into()),
                special(middle),
            ],
            (_, Some(middle)) => vec![
                special(prefix_marker),
                PromptPiece::Text(prefix),
                special(suffix_marker),
                PromptPiece::Text(suffix),
                special(middle),
            ],
            // Suffix first: the text typed at the cursor stays at the end of the prompt, which
            // keeps the KV cache valid while typing.
            (_, None) => {
                vec![
                    special(suffix_marker),
                    PromptPiece::Text(suffix),
                    special(prefix_marker),
                    PromptPiece::Text(prefix),
                ]
            }
        }
    }

    /// A repository-level FIM prompt: `{name}repo\n`, a `{file_separator}path\ncode` section per
    /// retrieved file, the current file's `{file_separator}path\n`, then the FIM prompt of its
    /// code (llama.cpp's `/infill` layout). Without repository tokens, `build`'s prompt.
    pub fn build_in_repository(&self, section: &RepositorySection, prefix: String, suffix: String) -> Vec<PromptPiece> {
        let Some(tokens) = &self.repository else {
            return self.build(prefix, suffix);
        };
        let mut pieces = repository_head(tokens, section);
        pieces.extend(self.build(prefix, suffix));
        pieces
    }

    /// Tokens that end a FIM completion besides the model's own stop tokens.
    pub fn stop_tokens(&self) -> Vec<String> {
        let mut stops = fim::family(self.family.name()).map(|entry| entry.stop_tokens.clone()).unwrap_or_default();
        stops.push(self.markers.prefix.clone());
        stops.push(self.markers.suffix.clone());
        stops.extend(self.markers.middle.clone());
        stops
    }
}

/// The repository section's pieces, which stay the same while the retrieved files do.
pub fn repository_head(tokens: &RepositoryTokens, section: &RepositorySection) -> Vec<PromptPiece> {
    let separator = PromptPiece::Special(tokens.file_separator.clone());
    let mut pieces = vec![PromptPiece::Special(tokens.name.clone()), PromptPiece::Text(format!("{}\n", section.name))];
    for (path, code) in &section.files {
        pieces.push(separator.clone());
        pieces.push(PromptPiece::Text(format!("{path}\n{}\n", code.trim_end())));
    }
    pieces.push(separator);
    pieces.push(PromptPiece::Text(format!("{}\n", section.path)));
    pieces
}

/// The repository tokens of `family` that the model has: those `nib.json` spells out, or the
/// table's when both are single tokens of the vocabulary; for a remote model (no vocabulary to
/// check), the table's when the model's name is one trained with them.
fn repository_tokens(info: &ModelInfo, family: FimFamily) -> Option<RepositoryTokens> {
    let is_token = |token: &str| info.special_tokens.iter().any(|special| special == token);
    let has = |tokens: &RepositoryTokens| is_token(&tokens.name) && is_token(&tokens.file_separator);
    if let Some(declared) = info.fim_repository.as_ref().filter(|tokens| has(tokens)) {
        return Some(declared.clone());
    }
    let table = fim::family(family.name())?.repository.as_ref()?;
    let usable = if info.markers_are_text { table.matches_model_name(&info.name) } else { has(&table.tokens) };
    usable.then(|| table.tokens.clone())
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
            ..ModelInfo::default()
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
        // The markers nib.json spells out win over the table's order (issue 18: a model
        // converted with `<fim-prefix>` kept its FIM only by luck of the order).
        let hyphens = ["<fim-prefix>", "<fim-suffix>", "<fim-middle>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"];
        let markers = Markers {
            prefix: "<fim-prefix>".into(),
            suffix: "<fim-suffix>".into(),
            middle: Some("<fim-middle>".into()),
        };
        let converted = ModelInfo { fim_markers: Some(markers.clone()), ..info(&hyphens, Some("starcoder"), false) };
        assert_eq!(FimFormat::for_model(&converted).unwrap().markers(), &markers);
        // Every family of the table is one nib can lay out.
        for entry in fim::families() {
            assert_eq!(FimFamily::from_name(&entry.name).map(FimFamily::name), Some(entry.name.as_str()));
        }
    }
}
