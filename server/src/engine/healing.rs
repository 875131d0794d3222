//! Token healing for prompts that end inside a word (a completion typed mid-identifier).
//!
//! A byte-level BPE model reads `self.sess` as `self`, `.`, `sess`: a token it rarely saw
//! there, since `self.session` is `self`, `.`, `session` wherever it occurs. Continuing such a
//! prompt, the model first has to finish an unusual split (or takes `sess` for a whole name),
//! and prompt lookup finds no earlier occurrence of its last tokens. Healing backs the prompt
//! off to before the word's typed part (and the space before it, which such vocabularies glue
//! to the word), and makes the first sampled tokens spell that part (`Spelling`): the model
//! then writes the word with its usual tokens. The generator returns the text after the
//! spelled part, so callers see a continuation of the prompt they sent. A fill-in-the-middle
//! prompt ends with its middle marker, not inside the word, and is not healed.

use std::sync::Arc;

use tokenizers::Tokenizer;

use super::PromptPiece;

/// The longest typed part of a word that is healed; a longer one stays in the prompt.
const LONGEST_WORD: usize = 48;

/// `prompt` without the end of its last text piece that the output is to spell, and that end:
/// the ASCII identifier characters (letters, digits, `_`) it ends with, and the one space
/// before them. `None` where the prompt does not end inside such a word, or where the word
/// continues a non-ASCII letter (its bytes would not be spelled by whole tokens).
pub(crate) fn heal(prompt: &[PromptPiece]) -> Option<(Vec<PromptPiece>, String)> {
    let (PromptPiece::Text(text), before) = prompt.split_last()? else { return None };
    let word = text.len() - text.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_').len();
    let start = text.len() - word;
    if word == 0 || word > LONGEST_WORD || text[..start].ends_with(char::is_alphanumeric) {
        return None;
    }
    let start = if text[..start].ends_with(' ') { start - 1 } else { start };
    if start == 0 && before.is_empty() {
        return None; // Nothing would be left to run.
    }
    let mut healed = before.to_vec();
    if start > 0 {
        healed.push(PromptPiece::Text(text[..start].to_string()));
    }
    Some((healed, text[start..].to_string()))
}

/// The text of every token id (special tokens: empty), for spelling.
pub(crate) type TokenTexts = Arc<Vec<String>>;

/// The texts of the ids below `vocab` (the model's vocabulary; the tokenizer's without it), or
/// `None` where the tokens' texts do not add up to the text they encode (a SentencePiece
/// tokenizer decodes `▁word` alone as `word`): spelling by token texts needs them to, so such
/// a model is not healed.
pub(crate) fn token_texts(tokenizer: &Tokenizer, vocab: Option<usize>) -> Option<TokenTexts> {
    let vocab = vocab.unwrap_or_else(|| tokenizer.get_vocab_size(true)) as u32;
    let texts: Vec<String> = (0..vocab).map(|id| tokenizer.decode(&[id], true).unwrap_or_default()).collect();
    spelled_by_texts(tokenizer, &texts).then(|| Arc::new(texts))
}

/// Whether code and the spaces around its words are spelled by its tokens' texts, one after
/// the other.
fn spelled_by_texts(tokenizer: &Tokenizer, texts: &[String]) -> bool {
    const PROBE: &str = "def total(values):\n    return self.sum_of(values) + 1  # x_2";
    let Ok(encoding) = tokenizer.encode(PROBE, false) else { return false };
    let ids = encoding.get_ids();
    let spelled: Option<String> = ids.iter().map(|&id| texts.get(id as usize).map(String::as_str)).collect();
    spelled.as_deref() == Some(PROBE) && tokenizer.decode(ids, true).is_ok_and(|text| text == PROBE)
}

/// What the next sampled tokens must still spell, and the vocabulary's texts.
#[derive(Clone)]
pub(crate) struct Spelling {
    remaining: String,
    texts: TokenTexts,
}

impl Spelling {
    pub fn new(text: String, texts: TokenTexts) -> Self {
        Spelling { remaining: text, texts }
    }

    pub fn done(&self) -> bool {
        self.remaining.is_empty()
    }

    /// Whether token `id` may come next: its text goes on spelling the rest, or spells it all
    /// and goes beyond.
    fn allows(&self, id: usize) -> bool {
        let text = self.texts.get(id).map_or("", String::as_str);
        !text.is_empty() && (self.remaining.starts_with(text) || text.starts_with(self.remaining.as_str()))
    }

    /// `logits` with every token that does not go on spelling at minus infinity (as they are
    /// once the spelling is done).
    pub fn mask<'a>(&self, logits: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        if self.done() {
            return logits.into();
        }
        let masked = logits
            .iter()
            .enumerate()
            .map(|(id, &logit)| if self.allows(id) { logit } else { f32::NEG_INFINITY })
            .collect();
        std::borrow::Cow::Owned(masked)
    }

    /// Takes `id`, the token sampled from the masked logits, off what is left to spell.
    pub fn advance(&mut self, id: u32) {
        let text = self.texts.get(id as usize).map_or("", String::as_str);
        self.remaining = self.remaining.strip_prefix(text).map_or_else(String::new, str::to_string);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer that splits on spaces and writes them as `▁` on the next word
    /// (SentencePiece's way), whose decoder drops a leading space.
    fn metaspace_tokenizer() -> Tokenizer {
        let words = ["[UNK]", "▁def", "def", "▁total", "▁return"];
        let vocab: Vec<String> = words.iter().enumerate().map(|(id, word)| format!("\"{word}\": {id}")).collect();
        let json = format!(
            r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
                "pre_tokenizer": {{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}},
                "post_processor": null,
                "decoder": {{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}},
                "model": {{"type": "WordLevel", "vocab": {{{}}}, "unk_token": "[UNK]"}}}}"#,
            vocab.join(", ")
        );
        json.parse().expect("a valid tokenizer")
    }

    #[test]
    fn a_tokenizer_whose_token_texts_do_not_add_up_is_not_healed() {
        let tokenizer = metaspace_tokenizer();
        assert_eq!(tokenizer.decode(&[3], true).unwrap(), "total", "alone, `▁total` loses its space");
        assert!(token_texts(&tokenizer, None).is_none());
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-model/tokenizer.json");
        let byte_level = Tokenizer::from_file(fixture).expect("the fixture's tokenizer");
        assert!(token_texts(&byte_level, None).is_some(), "a byte-level BPE tokenizer spells its text");
    }

    fn text(value: &str) -> PromptPiece {
        PromptPiece::Text(value.to_string())
    }

    #[test]
    fn the_typed_part_of_the_last_word_and_its_space_are_healed() {
        let special = PromptPiece::Special("<fim_middle>".into());
        assert_eq!(heal(&[text("x = self.sess")]), Some((vec![text("x = self.")], "sess".into())));
        assert_eq!(heal(&[text("    return tot")]), Some((vec![text("    return")], " tot".into())));
        assert_eq!(heal(&[text("def f(a_1")]), Some((vec![text("def f(")], "a_1".into())));
        assert_eq!(heal(&[special.clone(), text("x")]), Some((vec![special.clone()], "x".into())));
        assert_eq!(heal(&[text(" x")]), None, "the whole prompt: nothing would run");
        assert_eq!(heal(&[text("x = self.")]), None, "no word at the end");
        assert_eq!(heal(&[text("x = 1 ")]), None);
        assert_eq!(heal(&[text("nom = café_x")]), None, "inside a word with a non-ASCII letter");
        assert_eq!(heal(&[text("x"), special]), None, "the prompt ends with a special token");
        assert_eq!(heal(&[text(&format!("y = {}", "a".repeat(LONGEST_WORD + 1)))]), None, "too long a word");
    }

    #[test]
    fn spelling_allows_tokens_that_go_on_spelling_and_ends_once_spelled() {
        let texts: Vec<String> = ["", " s", " se", " session", "ss", "ion", "s", " sx", "x"].map(String::from).into();
        let mut spelling = Spelling::new(" sess".into(), Arc::new(texts));
        let logits = [9.0; 9];
        let allowed: Vec<usize> = (0..9).filter(|&id| spelling.mask(&logits)[id].is_finite()).collect();
        assert_eq!(allowed, [1, 2, 3], "the prefixes of \" sess\" and the tokens that start with it");
        spelling.advance(2);
        assert!(!spelling.done());
        let allowed: Vec<usize> = (0..9).filter(|&id| spelling.mask(&logits)[id].is_finite()).collect();
        assert_eq!(allowed, [4, 6], "\"ss\" is left: \"ss\" and \"s\"");
        spelling.advance(4);
        assert!(spelling.done());
        assert!(spelling.mask(&logits).iter().all(|logit| logit.is_finite()), "nothing masked once done");
        let mut beyond = Spelling::new(" se".into(), spelling.texts.clone());
        beyond.advance(3);
        assert!(beyond.done(), "\" session\" spells \" se\" and goes on");
    }
}
