//! The fill-in-the-middle families, read from `models/fim.json`: the one table that the server
//! and the converter (`models/nib_convert/meta.py`) share. It holds data only; how a family
//! lays out its prompt is `completion::prompt`'s business.

use std::sync::OnceLock;

use serde::Deserialize;

/// The table, compiled into the binary.
const TABLE: &str = include_str!("../../../models/fim.json");

/// One family of the table.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Family {
    /// The name `nib.json` and the settings use (`starcoder`, `qwen`, ...).
    pub name: String,
    /// Marker spellings, tried in order.
    pub spellings: Vec<Markers>,
    /// Tokens that end a FIM completion besides the model's own and the markers.
    pub stop_tokens: Vec<String>,
    /// Remote model names: a family matches when every part of one entry occurs in the name.
    model_names: Vec<Vec<String>>,
    /// The tokens of repository-level training data, where the family has them.
    pub repository: Option<Repository>,
}

/// A family's repository tokens: `{name}repo\n`, then per file `{file_separator}path\ncode`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    #[serde(flatten)]
    pub tokens: RepositoryTokens,
    /// The remote model names that have the tokens (matched as the family's `model_names`).
    model_names: Vec<Vec<String>>,
}

/// The two repository tokens as a vocabulary spells them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryTokens {
    pub name: String,
    pub file_separator: String,
}

impl Repository {
    /// Whether a remote model of this name was trained with the tokens.
    pub fn matches_model_name(&self, model: &str) -> bool {
        name_matches(&self.model_names, model)
    }
}

fn name_matches(model_names: &[Vec<String>], model: &str) -> bool {
    let name = model.to_ascii_lowercase();
    model_names.iter().any(|parts| parts.iter().all(|part| name.contains(part.as_str())))
}

/// A family's markers as a vocabulary spells them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Markers {
    pub prefix: String,
    pub suffix: String,
    /// `None`: the family puts the suffix first and has no middle marker (Codestral).
    pub middle: Option<String>,
}

#[derive(Deserialize)]
struct Table {
    families: Vec<Family>,
}

/// Every family, in the order they are tried.
pub fn families() -> &'static [Family] {
    static FAMILIES: OnceLock<Vec<Family>> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let table: Table = serde_json::from_str(TABLE).expect("models/fim.json is valid (tested)");
        table.families
    })
}

pub fn family(name: &str) -> Option<&'static Family> {
    families().iter().find(|family| family.name == name)
}

/// The family names, for validating settings.
pub fn family_names() -> Vec<&'static str> {
    families().iter().map(|family| family.name.as_str()).collect()
}

/// The FIM family of a remote model, from the names model hubs and serving engines use.
pub fn family_of_model_name(model: &str) -> Option<&'static str> {
    families().iter().find(|family| name_matches(&family.model_names, model)).map(|family| family.name.as_str())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use serde_json::Value;

    use super::*;
    use crate::completion::prompt::FimFormat;
    use crate::engine::ModelInfo;

    #[test]
    fn the_table_parses_and_every_family_has_markers() {
        assert!(families().len() >= 5);
        let with_repository: Vec<&str> =
            families().iter().filter(|family| family.repository.is_some()).map(|family| family.name.as_str()).collect();
        assert_eq!(with_repository, ["qwen", "starcoder"]);
        for family in families() {
            assert!(!family.spellings.is_empty(), "{}", family.name);
            assert!(!family.model_names.is_empty(), "{}", family.name);
        }
        assert_eq!(family_of_model_name("Qwen2.5-Coder-1.5B"), Some("qwen"));
        assert_eq!(family_of_model_name("gpt-4o"), None);
    }

    /// What `models/nib_convert/meta.py` writes into `nib.json` for a vocabulary holding each
    /// spelling of each family, read back by the server: both must name the same family and
    /// markers, also when the server detects them from the vocabulary alone.
    #[test]
    fn the_converter_and_the_server_agree_on_every_family() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = repo.join(".venv/bin/python");
        if !python.exists() {
            assert!(std::env::var_os("NIB_REQUIRE_DEFAULT_MODEL").is_none(), "no .venv: run `make setup`");
            eprintln!("skipping: no .venv (run `make setup`)");
            return;
        }
        // Each spelling of each family, alone and with every family's repository tokens.
        let repository_tokens: Vec<&RepositoryTokens> =
            families().iter().filter_map(|family| Some(&family.repository.as_ref()?.tokens)).collect();
        let mut vocabularies: Vec<Vec<String>> = Vec::new();
        for family in families() {
            for markers in &family.spellings {
                let mut vocabulary = vec!["a".to_string(), "<|endoftext|>".to_string()];
                vocabulary.extend([markers.prefix.clone(), markers.suffix.clone()]);
                vocabulary.extend(markers.middle.clone());
                for tokens in &repository_tokens {
                    let mut with_repository = vocabulary.clone();
                    with_repository.extend([tokens.name.clone(), tokens.file_separator.clone()]);
                    vocabularies.push(with_repository);
                }
                vocabularies.push(vocabulary);
            }
        }
        let script = "import json, sys\nfrom nib_convert.meta import detect_fim\n\
                      print(json.dumps([detect_fim(v) for v in json.load(sys.stdin)]))";
        let mut child = Command::new(&python)
            .args(["-c", script])
            .current_dir(repo.join("models"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run .venv/bin/python");
        serde_json::to_writer(child.stdin.take().unwrap(), &vocabularies).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "meta.py failed");
        let written: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        for (vocabulary, nib_json_fim) in vocabularies.iter().zip(&written) {
            let converter = Markers {
                prefix: nib_json_fim["prefix"].as_str().unwrap().into(),
                suffix: nib_json_fim["suffix"].as_str().unwrap().into(),
                middle: nib_json_fim["middle"].as_str().map(str::to_string),
            };
            let converter_repository: Option<RepositoryTokens> =
                serde_json::from_value(nib_json_fim["repository"].clone()).unwrap();
            let family_name = nib_json_fim["family"].as_str().unwrap();
            let base = ModelInfo { special_tokens: vocabulary.clone(), ..ModelInfo::default() };
            let declared = ModelInfo {
                fim_family: Some(family_name.into()),
                fim_markers: Some(converter.clone()),
                fim_repository: converter_repository.clone(),
                ..base.clone()
            };
            for (how, info) in [("from nib.json", declared), ("from the vocabulary", base)] {
                let server = FimFormat::for_model(&info).unwrap_or_else(|| panic!("no FIM {how} for {vocabulary:?}"));
                assert_eq!(server.family.name(), family_name, "{how}: {vocabulary:?}");
                assert_eq!(server.markers(), &converter, "{how}: {vocabulary:?}");
                assert_eq!(server.repository(), converter_repository.as_ref(), "{how}: {vocabulary:?}");
            }
        }
    }
}
