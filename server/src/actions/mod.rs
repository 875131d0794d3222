//! Code generation actions: **Add docstring** and **Generate unit tests**. The structure of
//! what is inserted (where, how indented, which parameters, which file) comes from the syntax
//! tree; the model only writes prose and test bodies, which are checked before anything is
//! inserted. Both run on the engine thread as one task of several short generations that share
//! a prompt prefix, so the KV cache makes every question after the first cheap.

pub mod docstring;
#[cfg(test)]
mod fixture_tests;
pub mod project_files;
pub mod scaffold;
#[cfg(test)]
pub(crate) mod scripted_tests;
pub mod unit_tests;
pub mod verify;

use std::path::PathBuf;

use ropey::Rope;
use tree_sitter::Tree;

use crate::engine::{Backend, CancelToken, ChatFormat, EngineError, Flow, GenerationRequest, PromptPiece, Sampling};
use crate::syntax::Language;
use crate::syntax::scopes::Scope;

/// The function, method or class an action works on, with the document as it was.
#[derive(Clone)]
pub struct Target {
    pub uri: String,
    pub path: Option<PathBuf>,
    pub version: i32,
    pub language: Language,
    pub rope: Rope,
    pub tree: Tree,
    pub scope: Scope,
}

impl Target {
    pub fn source(&self) -> String {
        self.rope.byte_slice(self.scope.anchor.start..self.scope.range.end).to_string()
    }

    pub fn fence(&self) -> &'static str {
        self.language.spec().fence
    }
}

/// An insertion into a file: at `offset` of `uri` (a byte offset in the text the action saw).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insertion {
    pub offset: usize,
    pub text: String,
}

/// Why an action produced nothing; shown to the user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Rejected(String),
}

/// Asks the model short questions about one piece of code, through its chat template when it
/// has one and through a plain completion prompt otherwise.
pub struct Asker<'a> {
    pub model: &'a mut dyn Backend,
    pub cancel: CancelToken,
    /// The code the questions are about, first in every prompt so the KV cache is shared.
    pub context: String,
    pub chat: Option<ChatFormat>,
    pub attempt: u64,
    /// When every generation must stop (an action's time budget): `EngineError::TimedOut`.
    pub deadline: Option<std::time::Instant>,
}

impl<'a> Asker<'a> {
    pub fn new(model: &'a mut dyn Backend, cancel: CancelToken, context: String) -> Self {
        let chat = model.info().chat_format;
        Asker { model, cancel, context, chat, attempt: 0, deadline: None }
    }

    /// The prompt for `question` (chat) or for `completion_lead` (plain models): a text the
    /// answer continues.
    pub fn prompt(&self, question: &str, completion_lead: &str, answer_lead: &str) -> Vec<PromptPiece> {
        match self.chat {
            Some(ChatFormat::ChatMl) => {
                let special = |token: &str| PromptPiece::Special(token.to_string());
                vec![
                    special("<|im_start|>"),
                    PromptPiece::Text("system\nYou are a precise senior software engineer. Answer briefly.".into()),
                    special("<|im_end|>"),
                    PromptPiece::Text("\n".into()),
                    special("<|im_start|>"),
                    PromptPiece::Text(format!("user\n{}\n\n{question}", self.context)),
                    special("<|im_end|>"),
                    PromptPiece::Text("\n".into()),
                    special("<|im_start|>"),
                    PromptPiece::Text(format!("assistant\n{answer_lead}")),
                ]
            }
            None => vec![PromptPiece::Text(format!("{}\n\n{completion_lead}{answer_lead}", self.context))],
        }
    }

    /// Generates up to `max_tokens` after `prompt`, stopping at any of `stops`. The first try is
    /// greedy; retries (higher `attempt`) sample, so they can say something else.
    pub fn generate(
        &mut self,
        prompt: Vec<PromptPiece>,
        max_tokens: usize,
        stops: &[&str],
    ) -> Result<String, ActionError> {
        self.generate_until(prompt, max_tokens, stops, &mut |_| Flow::Continue)
    }

    /// `generate`, also stopped when `done` says the text so far is enough.
    pub fn generate_until(
        &mut self,
        prompt: Vec<PromptPiece>,
        max_tokens: usize,
        stops: &[&str],
        done: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<String, ActionError> {
        let request = self.request(prompt, max_tokens, stops);
        Ok(self.model.generate(&request, done)?.text)
    }

    /// `generate_until` for each of `prompts`, each stopped by `done` on its own text: the
    /// answers it gives one after another, which the model may decode side by side.
    pub fn generate_each(
        &mut self,
        prompts: Vec<Vec<PromptPiece>>,
        max_tokens: usize,
        stops: &[&str],
        done: &dyn Fn(&str) -> Flow,
    ) -> Vec<Result<String, ActionError>> {
        let requests: Vec<GenerationRequest> =
            prompts.into_iter().map(|prompt| self.request(prompt, max_tokens, stops)).collect();
        let mut observers: Vec<_> = requests.iter().map(|_| |text: &str| done(text)).collect();
        let mut observers: Vec<&mut dyn FnMut(&str) -> Flow> =
            observers.iter_mut().map(|observer| observer as &mut dyn FnMut(&str) -> Flow).collect();
        let generations = self.model.generate_batch(&requests, &mut observers);
        generations.into_iter().map(|generation| Ok(generation?.text)).collect()
    }

    /// The request for `prompt`: greedy on the first try; retries (higher `attempt`) sample.
    fn request(&self, prompt: Vec<PromptPiece>, max_tokens: usize, stops: &[&str]) -> GenerationRequest {
        let sampling = if self.attempt == 0 {
            Sampling::GREEDY
        } else {
            Sampling { temperature: 0.6, top_p: 0.9, seed: 0x5eed + self.attempt }
        };
        GenerationRequest {
            prompt,
            max_tokens,
            sampling,
            stop_strings: stops.iter().map(|s| s.to_string()).collect(),
            stop_tokens: Vec::new(),
            cancel: self.cancel.clone(),
            deadline: self.deadline,
            prefill_budget_ms: None,
            single_line: false,
            warm_alternative: None,
            heal_word: false,
        }
    }
}

/// Where `clean_sentence` ends the first sentence: a period before a space (taking backticks
/// out neither makes nor breaks one).
const SENTENCE_END: &str = ". ";
/// Where small models start to ramble: a relative clause, cut off by `clean_sentence`.
const RAMBLE: &str = ", which ";

/// Whether an answer is past all `clean_sentence` keeps of it (the end of its first sentence
/// or the start of a relative clause), so that generating more would only be thrown away.
pub fn past_first_sentence(answer: &str) -> bool {
    // `clean_sentence` trims the line first: a marker at its very end is not one yet.
    let answer = answer.trim_end();
    answer.contains(SENTENCE_END) || answer.contains(RAMBLE)
}

/// One clean sentence out of a model's answer: the first line and sentence, without quotes,
/// code markup or "The function x" preambles, capitalised, ending with a period. `None` when
/// nothing usable is left.
pub fn clean_sentence(answer: &str, strip_subjects: &[String]) -> Option<String> {
    let line = answer.trim().lines().next()?.trim();
    if line.contains("```") || line.contains("<|") {
        return None;
    }
    let mut sentence = line.replace('`', "");
    if let Some(end) = sentence.find(SENTENCE_END) {
        sentence.truncate(end + 1);
    }
    let mut sentence = sentence.trim().trim_matches(['"', '\'', '*', '-', ':']).trim().to_string();
    for subject in strip_subjects {
        let lower = sentence.to_lowercase();
        // A multi-word subject ("The f function returns") also leads without a verb after it.
        let bare = subject.contains(' ').then(|| format!("{subject} "));
        let leads = [format!("{subject} is "), format!("{subject}: "), format!("{subject} - ")];
        for lead in leads.into_iter().chain(bare) {
            if lower.starts_with(&lead.to_lowercase()) {
                sentence = sentence[lead.len()..].trim().to_string();
                break;
            }
        }
    }
    for lead in ["This function ", "The function ", "This method ", "The method ", "This class ", "It "] {
        if let Some(rest) = sentence.strip_prefix(lead) {
            sentence = rest.to_string();
        }
    }
    if let Some(cut) = sentence.find(RAMBLE) {
        sentence.truncate(cut);
    }
    if sentence.chars().filter(|c| c.is_alphabetic()).count() < 3 || sentence.len() > 240 {
        return None;
    }
    // Prose is mostly words: broken bytes, control characters or symbol soup are junk.
    let wordlike = sentence.chars().filter(|c| c.is_alphanumeric() || " ,.;:'()-/%".contains(*c)).count();
    if sentence.contains(['\u{fffd}', '{', '}', '<', '>', '$'])
        || sentence.chars().any(char::is_control)
        || wordlike * 10 < sentence.chars().count() * 9
    {
        return None;
    }
    let mut chars = sentence.chars();
    let first = chars.next()?;
    let mut cleaned: String = first.to_uppercase().chain(chars).collect();
    if !cleaned.ends_with(['.', '!', '?']) {
        cleaned.push('.');
    }
    Some(cleaned)
}

/// PEP 257's imperative mood for a summary that starts with its subject: "add returns the
/// sum" → "Return the sum".
pub fn imperative(summary: &str, name: &str) -> String {
    let words: Vec<&str> = summary.split(' ').collect();
    let first = words[0].trim_matches(['`', '(', ')']);
    let named = first.eq_ignore_ascii_case(name) || first.eq_ignore_ascii_case("it");
    // "add returns the sum" (subject first), or "Returns the sum" (a verb before a determiner).
    let (verb, rest) = if named && words.len() > 1 {
        (words[1], &words[2..])
    } else if words.len() > 1 && DETERMINERS.contains(&words[1].to_lowercase().as_str()) {
        (words[0], &words[1..])
    } else {
        return summary.to_string();
    };
    let base = if let Some(stem) = verb.strip_suffix("ies") {
        format!("{stem}y")
    } else if verb.ends_with("ses") || verb.ends_with("xes") || verb.ends_with("shes") || verb.ends_with("ches") {
        verb[..verb.len() - 2].to_string()
    } else if let Some(stem) = verb.strip_suffix('s').filter(|stem| !stem.ends_with('s')) {
        stem.to_string()
    } else {
        return summary.to_string();
    };
    let mut chars = base.chars();
    let capitalised: String = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
    std::iter::once(capitalised.as_str()).chain(rest.iter().copied()).collect::<Vec<_>>().join(" ")
}

/// Words that follow a verb at the start of a summary ("Returns *the* sum").
const DETERMINERS: &[&str] = &[
    "a", "an", "the", "this", "that", "all", "each", "every", "its", "their", "one", "true", "false", "whether", "how",
    "what",
];

/// Lower-cases the first letter (for "// Name does ..." Go comments).
pub fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A target at the `$0` marker of `source` in a file at `path` (tests).
#[cfg(test)]
pub fn test_target(path: &str, language_id: &str, source: &str) -> Target {
    let cursor = source.find("$0").expect("a $0 cursor marker");
    let text = source.replacen("$0", "", 1);
    let document = crate::document::Document::new(format!("file://{path}"), language_id.into(), 1, &text);
    let language = document.language.expect("a language with a grammar");
    let tree = document.tree().cloned().expect("a syntax tree");
    let scope = crate::syntax::scopes::scope_at(language, &tree, &document.rope, cursor).expect("a scope at $0");
    Target {
        uri: document.uri.clone(),
        path: document.path.clone(),
        version: 1,
        language,
        rope: document.rope.clone(),
        tree,
        scope,
    }
}

/// `text` with `insertions` made, whose offsets all refer to `text` (tests).
#[cfg(test)]
pub fn with_insertions(text: &str, insertions: &[Insertion]) -> String {
    let mut text = text.to_string();
    for insertion in insertions.iter().rev() {
        text.insert_str(insertion.offset, &insertion.text);
    }
    text
}

/// Every function, method and class of `source` without documentation, as the targets of
/// "Add docstrings to all functions" (tests).
#[cfg(test)]
pub fn undocumented_test_targets(path: &str, language_id: &str, source: &str) -> Vec<Target> {
    let document = crate::document::Document::new(format!("file://{path}"), language_id.into(), 1, source);
    let language = document.language.expect("a language with a grammar");
    let tree = document.tree().cloned().expect("a syntax tree");
    crate::syntax::scopes::all_scopes(language, &tree, &document.rope)
        .into_iter()
        .filter(|scope| scope.doc.is_none())
        .map(|scope| Target {
            uri: document.uri.clone(),
            path: document.path.clone(),
            version: 1,
            language,
            rope: document.rope.clone(),
            tree: tree.clone(),
            scope,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer stopped anywhere once `past_first_sentence` says so cleans to the same sentence
    /// as the whole answer (the docstring action stops generating there).
    #[test]
    fn an_answer_stopped_past_its_first_sentence_cleans_the_same() {
        let subjects = vec!["ids".to_string(), "The parameter ids".to_string()];
        let answers = [
            "The parameter `ids` is a list of integers that is used to determine the process. It is a list.",
            "Returns a `NBits` object from a Numpy array, which is then written out. More text follows",
            "`data` holds the rows, e.g. the input. It is read once.",
            "It is the `x`. value `y` here, which ends here. Then more.",
            "  a number. It counts.",
        ];
        for answer in answers {
            let whole = clean_sentence(answer, &subjects);
            let stop = (1..=answer.len()).find(|&end| past_first_sentence(&answer[..end])).expect("a sentence ends");
            for end in stop..=answer.len() {
                assert_eq!(clean_sentence(&answer[..end], &subjects), whole, "{answer:?} stopped at {end}");
            }
        }
    }

    #[test]
    fn cleans_answers_into_sentences() {
        let subjects = vec!["price".to_string(), "The parameter price".to_string()];
        assert_eq!(
            clean_sentence("  return the `price` after tax. Then more.", &[]).as_deref(),
            Some("Return the price after tax.")
        );
        assert_eq!(clean_sentence("price: the amount to pay\nmore", &subjects).as_deref(), Some("The amount to pay."));
        assert_eq!(
            clean_sentence("The parameter price is the base cost", &subjects).as_deref(),
            Some("The base cost.")
        );
        assert_eq!(clean_sentence("This function computes totals", &[]).as_deref(), Some("Computes totals."));
        assert_eq!(clean_sentence("```python", &[]), None);
        assert_eq!(clean_sentence("  ", &[]), None);
        assert_eq!(clean_sentence("x.", &[]), None);
        assert_eq!(clean_sentence("Hello \u{fffd}\u{fffd} world", &[]), None);
        assert_eq!(clean_sentence("fox();i 8ello PoYY range i' %  add range, ${i> jump", &[]), None);
        assert_eq!(
            clean_sentence("Returns a float, which is the same as a float.", &[]).as_deref(),
            Some("Returns a float.")
        );
        assert_eq!(imperative("With_tax returns a rounded value.", "with_tax"), "Return a rounded value.");
        let returns = vec!["The f function returns".to_string()];
        assert_eq!(
            clean_sentence("The f function returns a float value.", &returns).as_deref(),
            Some("A float value.")
        );
        assert_eq!(imperative("Total applies discounts.", "total"), "Apply discounts.");
        assert_eq!(imperative("Compute the sum.", "total"), "Compute the sum.");
        assert_eq!(imperative("Returns a rounded value.", "with_tax"), "Return a rounded value.");
        assert_eq!(imperative("Checks whether it is empty.", "empty"), "Check whether it is empty.");
        assert_eq!(imperative("Items are counted.", "count"), "Items are counted.");
    }
}
