//! The actions' success paths on a scripted [`Backend`]: every prompt is answered from a table
//! keyed by how the prompt ends, streamed a character at a time through the request's stop
//! strings and the observer as the engine streams tokens. A prompt the table does not know
//! fails the test, so a changed question or lead shows here, not only on the default model.

use std::path::PathBuf;

use super::project_files::ProjectFiles;
use super::{Target, docstring, unit_tests};
use crate::config::DocstringStyle;
use crate::engine::{Backend, CancelToken, EngineError, FinishReason, Flow, Generation, GenerationRequest, ModelInfo};

/// A plain model (no chat template, so prompts are completion prompts) that answers from
/// `answers`: (how the prompt ends, the answers in turn). It records every prompt. The
/// handlers' tests use it too.
pub(crate) struct Scripted {
    info: ModelInfo,
    answers: Vec<(&'static str, Vec<&'static str>)>,
    prompts: Vec<String>,
}

impl Scripted {
    pub(crate) fn new(answers: &[(&'static str, &[&'static str])]) -> Scripted {
        let answers = answers.iter().map(|(ending, said)| (*ending, said.iter().rev().copied().collect())).collect();
        Scripted { info: ModelInfo::default(), answers, prompts: Vec::new() }
    }

    /// The next answer for `prompt`: the entry with the longest ending the prompt ends with.
    fn answer(&mut self, prompt: &str) -> &'static str {
        let entry = self
            .answers
            .iter_mut()
            .filter(|(ending, _)| prompt.ends_with(ending))
            .max_by_key(|(ending, _)| ending.len())
            .unwrap_or_else(|| panic!("no scripted answer for a prompt ending {:?}", tail(prompt)));
        entry.1.pop().unwrap_or_else(|| panic!("the answers for {:?} ran out", entry.0))
    }
}

fn tail(text: &str) -> &str {
    &text[text.char_indices().rev().nth(60).map_or(0, |(at, _)| at)..]
}

impl Backend for Scripted {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError> {
        let prompt = crate::completion::prompt::render(&request.prompt);
        let answer = self.answer(&prompt);
        self.prompts.push(prompt);
        let mut text = String::new();
        let mut finish = FinishReason::Length;
        for character in answer.chars() {
            text.push(character);
            if let Some(cut) = request.stop_strings.iter().filter_map(|stop| text.find(stop.as_str())).min() {
                text.truncate(cut);
                finish = FinishReason::StopString;
                break;
            }
            if observer(&text) == Flow::Stop {
                finish = FinishReason::Observer;
                break;
            }
        }
        Ok(Generation { text, tokens: Vec::new(), finish, stats: Default::default() })
    }
}

fn target(path: &str, language_id: &str, source: &str) -> Target {
    super::test_target(path, language_id, source)
}

fn inserted(target: &Target, offset: usize, text: &str) -> String {
    let mut document = target.rope.to_string();
    document.insert_str(offset, text);
    document
}

#[test]
fn a_python_docstring_from_the_models_sentences_with_a_retry_steered() {
    let price = target(
        "/w/shop.py",
        "python",
        "def price(base, rate=0.2):\n    if base < 0:\n        raise ValueError(\"negative\")\n    return base * (1 + rate)$0\n",
    );
    let mut model = Scripted::new(&[
        ("# Summary of price: ", &["price computes the price with tax\n"]),
        // The first answer is code: unusable, so the answer is started for the model.
        ("# Parameter base of price: ", &["`base * (1 + rate)` {}\n"]),
        ("# Parameter base of price: `base` is", &[" the amount before tax\n"]),
        ("# Parameter rate of price: ", &["The tax rate, a fraction.\n"]),
        ("# price returns: ", &["the price including tax\n"]),
        ("# price raises ValueError when ", &["if base is negative\n"]),
    ]);
    let insertion = docstring::generate(&mut model, &price, DocstringStyle::Google, None, CancelToken::default())
        .unwrap()
        .insertion;
    expect_test::expect![[r#"
        def price(base, rate=0.2):
            """Compute the price with tax.

            Args:
                base: The amount before tax.
                rate: The tax rate, a fraction.

            Returns:
                The price including tax.

            Raises:
                ValueError: If base is negative.
            """
            if base < 0:
                raise ValueError("negative")
            return base * (1 + rate)
    "#]]
    .assert_eq(&inserted(&price, insertion.offset, &insertion.text));
    assert_eq!(model.prompts.len(), 6, "one question per sentence, one retry");
    assert!(model.prompts.iter().all(|prompt| prompt.starts_with("```python\ndef price(base, rate=0.2):")));
}

/// `with_tax` as nib ran it: every result a float, some with fractions.
fn with_tax_seen() -> docstring::SeenResults {
    docstring::SeenResults {
        kinds: vec![docstring::ValueKind::Float],
        fractions: true,
        values: vec!["2.4".into(), "1.2".into()],
    }
}

/// The answers for `with_tax`'s sentences other than its Returns sentence.
const WITH_TAX_ANSWERS: &[(&str, &[&str])] = &[
    ("# Summary of with_tax: ", &["Add tax to a price.\n"]),
    ("# Parameter price of with_tax: ", &["The price before tax.\n"]),
    ("# Parameter rate of with_tax: ", &["The tax rate.\n"]),
];

/// `with_tax` as the docstring `model` writes for it leaves it, and the sentences turned down.
fn with_tax_documented(model: &mut Scripted, seen: Option<docstring::SeenResults>) -> (String, Vec<String>) {
    let with_tax = target(
        "/w/pricing.py",
        "python",
        "def with_tax(price, rate=0.2):\n    return round(price * (1 + rate), 2)$0\n",
    );
    let written = docstring::generate(model, &with_tax, DocstringStyle::Google, seen, CancelToken::default()).unwrap();
    (inserted(&with_tax, written.insertion.offset, &written.insertion.text), written.turned_down)
}

#[test]
fn a_returns_sentence_that_running_the_code_contradicts_is_asked_again_from_the_kind_it_returned() {
    let mut model = Scripted::new(
        &[
            WITH_TAX_ANSWERS,
            &[
                // False: with_tax(2) returned 2.4.
                ("# with_tax returns: ", &["A float value rounded to the nearest integer.\n"]),
                ("# with_tax returns: It returns a float", &[" rounded to two decimal places.\n"]),
            ],
        ]
        .concat(),
    );
    let (text, turned_down) = with_tax_documented(&mut model, Some(with_tax_seen()));
    assert!(text.contains("    Returns:\n        A float rounded to two decimal places.\n"), "{text}");
    assert_eq!(
        turned_down,
        [
            "\"A float value rounded to the nearest integer.\": it says \"nearest integer\", but the calls returned numbers with fractions"
        ]
    );
    assert!(!text.contains("integer"), "{text}");
    // Without what running it showed, the first answer stands: the check is what turned it down.
    let mut unchecked = Scripted::new(
        &[WITH_TAX_ANSWERS, &[("# with_tax returns: ", &["A float value rounded to the nearest integer.\n"])]].concat(),
    );
    let (text, turned_down) = with_tax_documented(&mut unchecked, None);
    assert!(turned_down.is_empty());
    assert!(text.contains("A float value rounded to the nearest integer."), "{text}");
}

#[test]
fn when_every_returns_answer_is_contradicted_the_sentence_is_the_kind_it_returned() {
    let mut model = Scripted::new(
        &[
            WITH_TAX_ANSWERS,
            &[
                ("# with_tax returns: ", &["An integer.\n"]),
                // The steered retries, greedy then sampled.
                (
                    "# with_tax returns: It returns a float",
                    &[" rounded to the nearest integer.\n", " that is a whole number.\n"],
                ),
            ],
        ]
        .concat(),
    );
    let (text, turned_down) = with_tax_documented(&mut model, Some(with_tax_seen()));
    assert!(text.contains("    Returns:\n        A float.\n"), "{text}");
    assert_eq!(turned_down.len(), 3, "{turned_down:?}");
    assert!(turned_down[0].ends_with("it says an integer, but the calls returned a float"), "{turned_down:?}");
    assert_eq!(model.prompts.len(), 6, "three questions, then the returns question three times");
}

#[test]
fn a_function_that_returned_several_kinds_falls_back_to_all_of_them() {
    let mut model = Scripted::new(
        &[
            WITH_TAX_ANSWERS,
            &[
                ("# with_tax returns: ", &["A list of tuples.\n"]),
                ("# with_tax returns: It returns", &[" a list.\n", " a tuple.\n"]),
            ],
        ]
        .concat(),
    );
    let seen = docstring::SeenResults {
        kinds: vec![docstring::ValueKind::Text, docstring::ValueKind::Nothing],
        fractions: false,
        values: vec!["'a'".into(), "None".into()],
    };
    let (text, _) = with_tax_documented(&mut model, Some(seen));
    assert!(text.contains("    Returns:\n        A string, or None.\n"), "{text}");
}

#[test]
fn a_rust_doc_comment_with_errors_and_panics_sections() {
    let load = target(
        "/w/src/lib.rs",
        "rust",
        "pub fn load(key: &str) -> Result<u8, Error> {\n    let v = MAP.get(key).unwrap();$0\n    Ok(*v)\n}\n",
    );
    let mut model = Scripted::new(&[
        ("// Summary of load: ", &["Load the value stored under a key.\n"]),
        ("// Parameter key of load: ", &["The key to look up.\n"]),
        ("// load returns an error when ", &["if the value cannot be parsed\n"]),
        ("// load panics when ", &["if the key is missing\n"]),
    ]);
    let insertion =
        docstring::generate(&mut model, &load, DocstringStyle::Google, None, CancelToken::default()).unwrap().insertion;
    expect_test::expect![[r#"
        /// Load the value stored under a key.
        ///
        /// # Errors
        ///
        /// If the value cannot be parsed.
        ///
        /// # Panics
        ///
        /// If the key is missing.
        pub fn load(key: &str) -> Result<u8, Error> {
            let v = MAP.get(key).unwrap();
            Ok(*v)
        }
    "#]]
    .assert_eq(&inserted(&load, insertion.offset, &insertion.text));
}

#[test]
fn python_tests_written_freely_keep_only_distinct_asserting_ones() {
    let double = target("/w/calc.py", "python", "def double(x):\n    return x * 2$0\n");
    let files = ProjectFiles::new(vec![PathBuf::from("/w")], Vec::new());
    let plan = unit_tests::plan(&double, &[PathBuf::from("/w")], &files).unwrap();
    let mut model = Scripted::new(&[
        ("def test_double_", &["of_two(", "again(", "of_zero(", "of_negative("]),
        ("def test_double_of_two():\n    assert double(", &["2) == 4\n"]),
        // The same body under another name: the same test, discarded.
        ("def test_double_again():\n    assert double(", &["2) == 4\n"]),
        ("def test_double_of_zero():\n    assert double(", &["0) == 0\n"]),
        // Generation stops once the test is complete.
        ("def test_double_of_negative():\n    assert double(", &["-3) == -6\n    # the sign stays\n"]),
    ]);
    let edit = unit_tests::generate(&mut model, &double, &plan, CancelToken::default()).unwrap();
    assert_eq!(edit.file, PathBuf::from("/w/test_calc.py"));
    assert!(edit.create);
    assert_eq!(edit.test_names, ["test_double_of_two", "test_double_of_zero", "test_double_of_negative"]);
    expect_test::expect![[r#"
        import unittest
        from calc import double


        class TestDouble(unittest.TestCase):
            def test_double_of_two(self):
                assert double(2) == 4

            def test_double_of_zero(self):
                assert double(0) == 0

            def test_double_of_negative(self):
                assert double(-3) == -6


        if __name__ == "__main__":
            unittest.main()
    "#]]
    .assert_eq(&edit.insertion.text);
}

#[test]
fn go_tests_fill_the_scaffold_arguments_and_expectation() {
    let sum = target("/w/m.go", "go", "package m\n\nfunc Sum(a, b int) int {\n\treturn a + b$0\n}\n");
    let files = ProjectFiles::new(vec![PathBuf::from("/w")], Vec::new());
    let plan = unit_tests::plan(&sum, &[PathBuf::from("/w")], &files).unwrap();
    let mut model = Scripted::new(&[
        ("func TestSum", &["Small(t", "Negative(", "Zero("]),
        ("got := Sum(", &["1, 2)\n", "-1, -2)\n", "0, 0) // both zero\n"]),
        ("var want int = ", &["3\n", "-3\n", "0\n"]),
    ]);
    let edit = unit_tests::generate(&mut model, &sum, &plan, CancelToken::default()).unwrap();
    assert_eq!(edit.file, PathBuf::from("/w/m_test.go"));
    expect_test::expect![[r#"
        package m

        import (
        	"reflect"
        	"testing"
        )

        func TestSumSmall(t *testing.T) {
        	got := Sum(1, 2)
        	var want int = 3
        	if !reflect.DeepEqual(got, want) {
        		t.Errorf("Sum() = %#v, want %#v", got, want)
        	}
        }

        func TestSumNegative(t *testing.T) {
        	got := Sum(-1, -2)
        	var want int = -3
        	if !reflect.DeepEqual(got, want) {
        		t.Errorf("Sum() = %#v, want %#v", got, want)
        	}
        }

        func TestSumZero(t *testing.T) {
        	got := Sum(0, 0)
        	var want int = 0
        	if !reflect.DeepEqual(got, want) {
        		t.Errorf("Sum() = %#v, want %#v", got, want)
        	}
        }
    "#]]
    .assert_eq(&edit.insertion.text);
}
