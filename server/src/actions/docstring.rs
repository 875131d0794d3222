//! **Add docstring**: the documentation block for a function, method or class in the language's
//! convention. Placement, indentation, sections and parameter names come from the syntax tree;
//! the model writes the sentences. The result is checked (it parses, it lists exactly the
//! signature's parameters) before it is offered; otherwise the action fails with a message.

use tree_sitter::Node;

use super::{ActionError, Asker, Insertion, Target, clean_sentence, lower_first, past_first_sentence};
use crate::config::DocstringStyle;
use crate::engine::{Backend, CancelToken, Flow};
use crate::syntax::languages::DocStyle;
use crate::syntax::scopes::{ScopeKind, Variadic};
use crate::syntax::{self, scopes};

/// What the code itself says about what to document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Parameter names as documentation spells them (`*args`, `**kwargs`).
    pub parameters: Vec<String>,
    pub returns_value: bool,
    pub raises: Vec<String>,
    pub returns_result: bool,
    pub can_panic: bool,
    /// What the function returned when nib ran it, when it did (see `SeenResults`).
    pub results: Option<SeenResults>,
}

/// The values a function returned when nib ran it (Python, with verification on): each kind
/// seen, whether a number had a fractional part, and the values. A Returns sentence that names
/// only other kinds ("A string."), calls fractions integers ("rounded to the nearest integer")
/// or quotes a value no call returned is not offered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenResults {
    pub kinds: Vec<ValueKind>,
    pub fractions: bool,
    /// The results as Python reprs (`'a_b'`, `2.4`): a value the sentence quotes must be one.
    pub values: Vec<String>,
}

/// A kind of value, as prose names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Integer,
    Float,
    Text,
    Boolean,
    List,
    Tuple,
    Dictionary,
    Set,
    Bytes,
    Nothing,
}

/// The words that name a kind in a sentence (lower case, whole words). "set", "none" and
/// "number" are left out: they are also verbs, negations or fit several kinds.
const KIND_WORDS: &[(&str, ValueKind)] = &[
    ("integer", ValueKind::Integer),
    ("integers", ValueKind::Integer),
    ("int", ValueKind::Integer),
    ("float", ValueKind::Float),
    ("floats", ValueKind::Float),
    ("floating", ValueKind::Float),
    ("string", ValueKind::Text),
    ("strings", ValueKind::Text),
    ("str", ValueKind::Text),
    ("boolean", ValueKind::Boolean),
    ("booleans", ValueKind::Boolean),
    ("bool", ValueKind::Boolean),
    ("list", ValueKind::List),
    ("lists", ValueKind::List),
    ("tuple", ValueKind::Tuple),
    ("tuples", ValueKind::Tuple),
    ("dictionary", ValueKind::Dictionary),
    ("dictionaries", ValueKind::Dictionary),
    ("dict", ValueKind::Dictionary),
    ("bytes", ValueKind::Bytes),
];

/// The values `sentence` quotes ('camel_2_under', "x"): a quote opened at the start or after a
/// space or bracket, closed by the same quote before a space, punctuation or the end (so the
/// apostrophes of "word's" and "users'" quote nothing).
fn quoted_values(sentence: &str) -> Vec<&str> {
    let mut values = Vec::new();
    let mut from = 0;
    let opens = |at: usize, c: char| {
        matches!(c, '\'' | '"') && sentence[..at].chars().next_back().is_none_or(|b| b.is_whitespace() || b == '(')
    };
    while let Some((open, quote)) =
        sentence[from..].char_indices().map(|(i, c)| (from + i, c)).find(|&(i, c)| opens(i, c))
    {
        let start = open + 1;
        let closes = |at: usize, c: char| {
            c == quote && sentence[at + 1..].chars().next().is_none_or(|next| !next.is_alphanumeric())
        };
        let close = sentence[start..].char_indices().map(|(i, c)| (start + i, c)).find(|&(i, c)| closes(i, c));
        let Some((end, _)) = close else { break };
        values.push(&sentence[start..end]);
        from = end + 1;
    }
    values
}

/// Phrases that say a number has no fractional part.
const WHOLE_NUMBER_PHRASES: &[&str] = &["nearest integer", "whole number", "nearest whole", "rounded to an integer"];

impl ValueKind {
    /// The kind as the object of "It returns".
    fn noun(self) -> Option<&'static str> {
        Some(match self {
            ValueKind::Integer => "an integer",
            ValueKind::Float => "a float",
            ValueKind::Text => "a string",
            ValueKind::Boolean => "a boolean",
            ValueKind::List => "a list",
            ValueKind::Tuple => "a tuple",
            ValueKind::Dictionary => "a dictionary",
            ValueKind::Set => "a set",
            ValueKind::Bytes => "bytes",
            ValueKind::Nothing => return None,
        })
    }
}

impl SeenResults {
    /// Why `sentence` says something about the results that running the function showed to be
    /// false (or that no call showed: a quoted value), if it does.
    pub fn contradiction(&self, sentence: &str) -> Option<String> {
        let lower = sentence.to_lowercase();
        let mut named: Vec<ValueKind> = Vec::new();
        let words = lower.split(|c: char| !c.is_alphanumeric());
        for kind in words.filter_map(|word| KIND_WORDS.iter().find(|(name, _)| *name == word).map(|&(_, kind)| kind)) {
            if !named.contains(&kind) {
                named.push(kind);
            }
        }
        if !named.is_empty() && !named.iter().any(|kind| self.kinds.contains(kind)) {
            return Some(format!("it says {}, but the calls returned {}", phrase(&named), self.kinds_returned()));
        }
        let whole = WHOLE_NUMBER_PHRASES.iter().find(|phrase| lower.contains(*phrase));
        if let Some(phrase) = whole.filter(|_| self.fractions) {
            return Some(format!("it says \"{phrase}\", but the calls returned numbers with fractions"));
        }
        // A string's repr is quoted; a number's is the number.
        let returned = |quoted: &str| {
            self.values.iter().any(|value| {
                value == quoted
                    || value.strip_prefix(['\'', '"']).and_then(|v| v.strip_suffix(['\'', '"'])) == Some(quoted)
            })
        };
        let unseen = quoted_values(sentence).into_iter().find(|quoted| !returned(quoted));
        unseen.map(|quoted| format!("it quotes '{quoted}' as a result, but no call returned that"))
    }

    /// "a float" when every result was of that one kind.
    pub fn noun(&self) -> Option<&'static str> {
        match self.kinds.as_slice() {
            [kind] => kind.noun(),
            _ => None,
        }
    }

    /// Every kind returned: "a string, or None", "an integer or a float".
    pub fn kinds_returned(&self) -> String {
        phrase(&self.kinds)
    }
}

/// `kinds` in words: "a string, or None", "an integer or a float".
fn phrase(kinds: &[ValueKind]) -> String {
    let nouns: Vec<&str> = kinds.iter().filter_map(|kind| kind.noun()).collect();
    match (nouns.join(" or "), kinds.contains(&ValueKind::Nothing)) {
        (nouns, false) => nouns,
        (nouns, true) if nouns.is_empty() => "None".into(),
        (nouns, true) => format!("{nouns}, or None"),
    }
}

/// The sentences the model wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prose {
    pub summary: String,
    pub parameters: Vec<String>,
    pub returns: Option<String>,
    pub raises: Vec<String>,
    pub errors: Option<String>,
    pub panics: Option<String>,
    /// The sentences not used because running the code contradicted them, each with why.
    pub turned_down: Vec<String>,
}

/// Visits the nodes of `node`'s subtree, not descending into nested functions and classes.
fn visit_own_body<'tree>(node: Node<'tree>, visit: &mut dyn FnMut(Node<'tree>)) {
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        let nested = matches!(
            child.kind(),
            "function_definition"
                | "class_definition"
                | "lambda"
                | "function_item"
                | "closure_expression"
                | "function_declaration"
                | "function_expression"
                | "arrow_function"
                | "method_definition"
                | "func_literal"
                | "lambda_expression"
        );
        if nested {
            continue;
        }
        visit(child);
        visit_own_body(child, visit);
    }
}

pub fn facts(target: &Target) -> Facts {
    let scope = &target.scope;
    let parameters = if scope.kind == ScopeKind::Class {
        Vec::new()
    } else {
        scope
            .parameters
            .iter()
            .map(|p| match (target.language.spec().doc, p.variadic) {
                (DocStyle::Docstring, Variadic::Positional) => format!("*{}", p.name),
                (DocStyle::Docstring, Variadic::Keyword) => format!("**{}", p.name),
                _ => p.name.clone(),
            })
            .collect()
    };
    let mut facts = Facts { parameters, ..Facts::default() };
    let Some(body) =
        scope.body.as_ref().and_then(|range| target.tree.root_node().descendant_for_byte_range(range.start, range.end))
    else {
        return facts;
    };
    let text = |node: Node| target.rope.byte_slice(node.byte_range()).to_string();
    let mut inspect = |node: Node| match node.kind() {
        "return_statement" if node.named_child_count() > 0 => facts.returns_value = true,
        "raise_statement" => {
            if let Some(raised) = node.named_child(0) {
                let name = match raised.kind() {
                    "call" => raised.child_by_field_name("function").map(text),
                    "identifier" | "attribute" => Some(text(raised)),
                    _ => None,
                };
                if let Some(name) = name.filter(|name| !facts.raises.contains(name)) {
                    facts.raises.push(name);
                }
            }
        }
        "macro_invocation" => {
            let name = node.child_by_field_name("macro").map(text).unwrap_or_default();
            if matches!(
                name.as_str(),
                "panic" | "unreachable" | "todo" | "unimplemented" | "assert" | "assert_eq" | "assert_ne"
            ) {
                facts.can_panic = true;
            }
        }
        "field_identifier" if matches!(text(node).as_str(), "unwrap" | "expect") => facts.can_panic = true,
        _ => {}
    };
    // A one-statement body can be that statement itself.
    inspect(body);
    visit_own_body(body, &mut inspect);
    match target.language.spec().doc {
        DocStyle::Docstring | DocStyle::JsDoc => {}
        DocStyle::RustDoc => {
            facts.returns_result = scope.return_annotation.as_deref().is_some_and(|t| t.contains("Result"));
            facts.returns_value = false; // Rust convention documents behaviour, not a Returns section.
        }
        DocStyle::GoDoc => facts.returns_value = false,
        DocStyle::Javadoc | DocStyle::Doxygen => facts.raises = thrown(target, body),
    }
    if scope.kind == ScopeKind::Class {
        facts = Facts::default();
    }
    facts
}

/// Asks the model for every sentence the docstring needs. The questions do not depend on each
/// other's answers: their first answers are generated together (side by side on the
/// in-process model), then each is checked, and asked again when unusable, in order.
pub fn write_prose(
    model: &mut dyn Backend,
    target: &Target,
    facts: &Facts,
    cancel: CancelToken,
) -> Result<Prose, ActionError> {
    let context = format!("```{}\n{}\n```", target.fence(), target.source());
    let mut asker = Asker::new(model, cancel, context);
    let item = Documented { name: &target.scope.name, comment: target.language.spec().line_comment };
    let seen = facts.results.as_ref();
    let mut questions = vec![summary_question(target, &item)];
    questions.extend(facts.parameters.iter().map(|parameter| parameter_question(&item, parameter)));
    questions.extend(facts.returns_value.then(|| return_value_question(&item, seen)));
    questions.extend(facts.raises.iter().map(|exception| raises_question(&item, exception)));
    questions.extend(facts.returns_result.then(|| errors_question(&item)));
    questions.extend(facts.can_panic.then(|| panics_question(&item)));
    let prompts = questions.iter().map(|question| question.prompt(&asker, 0)).collect();
    let first_answers = asker.generate_each(prompts, ANSWER_TOKENS, &["\n"], &first_sentence);
    let mut answers = questions.iter().zip(first_answers);
    let mut next = |asker: &mut Asker, contradiction: &dyn Fn(&str) -> Option<String>| {
        let (question, first) = answers.next().expect("one answer per question");
        ask(asker, question, first, contradiction)
    };
    let mut prose = Prose { summary: finish_summary(target, &item, next(&mut asker, UNCHECKED)?), ..Prose::default() };
    for _ in &facts.parameters {
        prose.parameters.push(next(&mut asker, UNCHECKED)?);
    }
    if facts.returns_value {
        let (returns, turned_down) =
            return_value_sentence(seen, |true_to_the_code| next(&mut asker, true_to_the_code))?;
        (prose.returns, prose.turned_down) = (Some(returns), turned_down);
    }
    for _ in &facts.raises {
        prose.raises.push(next(&mut asker, UNCHECKED)?);
    }
    if facts.returns_result {
        prose.errors = Some(next(&mut asker, UNCHECKED)?);
    }
    if facts.can_panic {
        prose.panics = Some(next(&mut asker, UNCHECKED)?);
    }
    Ok(prose)
}

/// The most tokens of one answer (a sentence).
const ANSWER_TOKENS: usize = 48;

/// Only the first sentence is kept: generating past it would be thrown away.
fn first_sentence(text: &str) -> Flow {
    if past_first_sentence(text) { Flow::Stop } else { Flow::Continue }
}

/// The item the questions are about: its name, and how its language starts a comment (the
/// completion-style prompt writes the answer as a comment).
struct Documented<'a> {
    name: &'a str,
    comment: &'a str,
}

/// One question about the item, and how its answer may be steered: `lead` is written as the
/// start of the answer (the model continues it), and `prefix` goes before what it wrote ("If "
/// before a condition). `subjects` are the answer's subjects `clean_sentence` strips ("The
/// parameter x"), `what` names the answer in messages.
struct Question {
    question: String,
    completion_lead: String,
    lead: String,
    prefix: String,
    subjects: Vec<String>,
    what: String,
}

impl Question {
    /// The prompt of try `attempt`: the first is free, the later ones steered.
    fn prompt(&self, asker: &Asker, attempt: u64) -> Vec<crate::engine::PromptPiece> {
        let lead = if attempt == 0 { "" } else { self.lead.as_str() };
        asker.prompt(&self.question, &self.completion_lead, lead)
    }

    fn prefix_for(&self, attempt: u64) -> &str {
        if attempt == 0 { "" } else { &self.prefix }
    }
}

/// What the item does, as a sentence in the language's convention.
fn summary_question(target: &Target, item: &Documented) -> Question {
    let Documented { name, comment } = item;
    let what = target.scope.kind.as_str();
    Question {
        question: format!(
            "Write one short sentence that says what the {what} `{name}` does. Start with a verb such as \"Return\", \"Compute\" or \"Create\"."
        ),
        completion_lead: format!("{comment} Summary of {name}: "),
        lead: format!("This {what}"),
        prefix: String::new(),
        subjects: vec![name.to_string(), format!("The {what} {name}"), format!("{name}()")],
        what: "summary".into(),
    }
}

/// A Go doc comment is a sentence about the name; the others start with a verb.
fn finish_summary(target: &Target, item: &Documented, summary: String) -> String {
    match target.language.spec().doc {
        DocStyle::GoDoc => summary,
        DocStyle::Docstring | DocStyle::RustDoc | DocStyle::JsDoc | DocStyle::Javadoc | DocStyle::Doxygen => {
            super::imperative(&summary, item.name)
        }
    }
}

/// What one parameter is (`parameter` as documentation spells it, `*args` included).
fn parameter_question(item: &Documented, parameter: &str) -> Question {
    let Documented { name, comment } = item;
    let bare = parameter.trim_start_matches('*').to_string();
    Question {
        question: format!("In a few words, what is the parameter `{bare}` of `{name}`?"),
        completion_lead: format!("{comment} Parameter {bare} of {name}: "),
        lead: format!("`{bare}` is"),
        prefix: String::new(),
        subjects: vec![
            format!("The parameter {bare}"),
            format!("The {bare} parameter"),
            bare.clone(),
            parameter.into(),
        ],
        what: format!("description of `{bare}`"),
    }
}

/// What the item returns; steered with the kind it returned when nib ran it (`seen`: "It
/// returns a float"), which the sentence keeps.
fn return_value_question(item: &Documented, seen: Option<&SeenResults>) -> Question {
    let Documented { name, comment } = item;
    let noun = seen.and_then(SeenResults::noun);
    Question {
        question: format!("In a few words, what does `{name}` return?"),
        completion_lead: format!("{comment} {name} returns: "),
        lead: noun.map_or_else(|| "It returns".to_string(), |noun| format!("It returns {noun}")),
        prefix: noun.map_or_else(String::new, |noun| format!("{noun} ")),
        subjects: vec![
            format!("The {name} function returns"),
            format!("The {name} method returns"),
            format!("{name} returns"),
            "It returns".into(),
            "Returns".into(),
        ],
        what: "description of the return value".into(),
    }
}

/// The Returns sentence, asked by `ask` with a check: when nib ran the item (`seen`), the
/// sentence may not contradict what it returned. When no answer holds, the sentence is the
/// kinds returned alone ("A float.", "A string, or None."). Also the answers turned down, and
/// why.
fn return_value_sentence(
    seen: Option<&SeenResults>,
    ask: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> Result<String, ActionError>,
) -> Result<(String, Vec<String>), ActionError> {
    let turned_down = std::cell::RefCell::new(Vec::new());
    let true_to_the_code = |sentence: &str| {
        let why = seen.and_then(|seen| seen.contradiction(sentence));
        if let Some(why) = &why {
            turned_down.borrow_mut().push(format!("\"{sentence}\": {why}"));
        }
        why
    };
    let answer = ask(&true_to_the_code);
    let sentence = match (answer, seen.and_then(|seen| clean_sentence(&seen.kinds_returned(), &[]))) {
        (Err(ActionError::Rejected(_)), Some(kinds_alone)) => kinds_alone,
        (answer, _) => answer?,
    };
    Ok((sentence, turned_down.into_inner()))
}

/// When the item raises (Python) or throws (Java, C++) `exception`.
fn raises_question(item: &Documented, exception: &str) -> Question {
    let Documented { name, comment } = item;
    Question {
        question: format!("In a few words, when does `{name}` raise `{exception}`?"),
        completion_lead: format!("{comment} {name} raises {exception} when "),
        lead: format!("It raises `{exception}` when"),
        prefix: "If ".into(),
        subjects: vec![format!("{name} raises {exception}"), format!("It raises {exception}"), "It is raised".into()],
        what: format!("description of when `{exception}` is raised"),
    }
}

/// When a Rust function returns an `Err`: its `# Errors` section.
fn errors_question(item: &Documented) -> Question {
    let Documented { name, comment } = item;
    Question {
        question: format!("In a few words, when does `{name}` return an error?"),
        completion_lead: format!("{comment} {name} returns an error when "),
        lead: "It returns an error when".into(),
        prefix: "If ".into(),
        subjects: vec![format!("{name} returns an error"), "It returns an error".into()],
        what: "description of when an error is returned".into(),
    }
}

/// When a Rust function panics: its `# Panics` section.
fn panics_question(item: &Documented) -> Question {
    let Documented { name, comment } = item;
    Question {
        question: format!("In a few words, when does `{name}` panic?"),
        completion_lead: format!("{comment} {name} panics when "),
        lead: "It panics when".into(),
        prefix: "If ".into(),
        subjects: vec![format!("{name} panics"), "It panics".into()],
        what: "description of when it panics".into(),
    }
}

/// An answer `ask` can tell nothing false about.
const UNCHECKED: &dyn Fn(&str) -> Option<String> = &|_: &str| None;

/// One question, whose first, free answer (greedy) is `first`. When that is unusable (small
/// models like to answer with code, or `contradiction` says why it is false), the answer is
/// started for the model (`Question::lead`), greedy and then sampled.
fn ask(
    asker: &mut Asker,
    question: &Question,
    first: Result<String, ActionError>,
    contradiction: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ActionError> {
    let mut first = Some(first);
    for attempt in 0..3u64 {
        asker.attempt = attempt.saturating_sub(1);
        let answer = match first.take() {
            Some(first) => first?,
            None => {
                let prompt = question.prompt(asker, attempt);
                asker.generate_until(prompt, ANSWER_TOKENS, &["\n"], &mut first_sentence)?
            }
        };
        let answer = answer.trim_start();
        // "a float" + ", rounded": no space before the punctuation.
        let prefix = question.prefix_for(attempt);
        let prefix = if answer.starts_with([',', '.', ';']) { prefix.trim_end() } else { prefix };
        let Some(sentence) = clean_sentence(&format!("{prefix}{answer}"), &question.subjects) else {
            tracing::debug!(answer, attempt, "unusable answer for {}", question.what);
            continue;
        };
        match contradiction(&sentence) {
            None => return Ok(sentence),
            Some(why) => tracing::info!(sentence, "{} not used: {why}", question.what),
        }
    }
    Err(ActionError::Rejected(format!(
        "the model gave no usable {}; nothing was inserted (try again, or a larger model)",
        question.what
    )))
}

fn line_start(target: &Target, byte: usize) -> usize {
    target.rope.line_to_byte(target.rope.byte_to_line(byte))
}

fn indentation_at(target: &Target, byte: usize) -> String {
    let start = line_start(target, byte);
    target.rope.byte_slice(start..byte).to_string().chars().take_while(|c| c.is_whitespace()).collect()
}

/// Where the documentation goes and how it is indented, then the text itself.
pub fn render(target: &Target, facts: &Facts, prose: &Prose, style: DocstringStyle) -> Insertion {
    match target.language.spec().doc {
        DocStyle::Docstring => render_python(target, facts, prose, style),
        DocStyle::RustDoc => render_rust_doc(target, prose),
        DocStyle::JsDoc => render_jsdoc(target, facts, prose),
        DocStyle::GoDoc => render_go_doc(target, prose),
        DocStyle::Javadoc => render_tagged_block(target, facts, prose, ""),
        DocStyle::Doxygen => render_tagged_block(target, facts, prose, "@brief "),
    }
}

/// `///` lines above the item's attributes, with `# Errors` and `# Panics` sections.
fn render_rust_doc(target: &Target, prose: &Prose) -> Insertion {
    let mut anchor = target.scope.anchor.start;
    let root = target.tree.root_node();
    if let Some(node) = root.descendant_for_byte_range(target.scope.range.start, target.scope.range.end) {
        let mut previous = node.prev_sibling();
        while let Some(attribute) = previous.filter(|p| p.kind() == "attribute_item") {
            anchor = attribute.start_byte();
            previous = attribute.prev_sibling();
        }
    }
    let indent = indentation_at(target, anchor);
    let mut lines = vec![prose.summary.clone()];
    for (heading, text) in [("Errors", &prose.errors), ("Panics", &prose.panics)] {
        if let Some(text) = text {
            lines.extend([String::new(), format!("# {heading}"), String::new(), text.clone()]);
        }
    }
    let text =
        lines.iter().map(|line| format!("{indent}///{}{line}\n", if line.is_empty() { "" } else { " " })).collect();
    Insertion { offset: line_start(target, anchor), text }
}

/// A JSDoc block: summary, `@param name - ...`, `@returns ...`.
fn render_jsdoc(target: &Target, facts: &Facts, prose: &Prose) -> Insertion {
    let anchor = target.scope.anchor.start;
    let indent = indentation_at(target, anchor);
    let mut lines = vec![prose.summary.clone()];
    if !facts.parameters.is_empty() || prose.returns.is_some() {
        lines.push(String::new());
    }
    for (name, text) in facts.parameters.iter().zip(&prose.parameters) {
        lines.push(format!("@param {name} - {text}"));
    }
    if let Some(returns) = &prose.returns {
        lines.push(format!("@returns {returns}"));
    }
    Insertion { offset: line_start(target, anchor), text: comment_block(&indent, &lines) }
}

/// A Javadoc or Doxygen block: the summary after `summary_tag`, then `@param`, `@return` and
/// `@throws` tags.
fn render_tagged_block(target: &Target, facts: &Facts, prose: &Prose, summary_tag: &str) -> Insertion {
    let anchor = target.scope.anchor.start;
    let indent = indentation_at(target, anchor);
    let mut tags: Vec<String> =
        facts.parameters.iter().zip(&prose.parameters).map(|(name, text)| format!("@param {name} {text}")).collect();
    tags.extend(prose.returns.iter().map(|returns| format!("@return {returns}")));
    tags.extend(facts.raises.iter().zip(&prose.raises).map(|(thrown, text)| format!("@throws {thrown} {text}")));
    let mut lines = vec![format!("{summary_tag}{}", prose.summary)];
    if !tags.is_empty() {
        lines.push(String::new());
        lines.extend(tags);
    }
    Insertion { offset: line_start(target, anchor), text: comment_block(&indent, &lines) }
}

/// `/**`, one ` * ` line per line, ` */`, at `indent`.
fn comment_block(indent: &str, lines: &[String]) -> String {
    let mut text = format!("{indent}/**\n");
    for line in lines {
        text.push_str(&format!("{indent} *{}{line}\n", if line.is_empty() { "" } else { " " }));
    }
    text.push_str(&format!("{indent} */\n"));
    text
}

/// What Javadoc and Doxygen list under `@throws`: the types a Java `throws` clause declares,
/// then those the body throws (`throw new E(...)`, `throw std::invalid_argument(...)`).
fn thrown(target: &Target, body: Node) -> Vec<String> {
    let text = |node: Node| target.rope.byte_slice(node.byte_range()).to_string();
    let mut thrown: Vec<String> = Vec::new();
    let root = target.tree.root_node();
    if let Some(definition) = root.descendant_for_byte_range(target.scope.range.start, target.scope.range.end) {
        let mut cursor = definition.walk();
        for clause in definition.children(&mut cursor).filter(|child| child.kind() == "throws") {
            let mut inner = clause.walk();
            thrown.extend(clause.named_children(&mut inner).map(text));
        }
    }
    let mut inspect = |node: Node| {
        let Some(value) = node.named_child(0).filter(|_| node.kind() == "throw_statement") else { return };
        let name = match value.kind() {
            "object_creation_expression" => value.child_by_field_name("type").map(text),
            "call_expression" => value.child_by_field_name("function").map(text),
            "identifier" | "qualified_identifier" => Some(text(value)),
            _ => None,
        };
        if let Some(name) = name.filter(|name| !thrown.contains(name)) {
            thrown.push(name);
        }
    };
    visit_own_body(body, &mut inspect);
    thrown
}

/// A Go doc comment: a sentence about the name ("Sum returns ...").
fn render_go_doc(target: &Target, prose: &Prose) -> Insertion {
    let anchor = target.scope.anchor.start;
    let indent = indentation_at(target, anchor);
    let name = &target.scope.name;
    let sentence = match prose.summary.strip_prefix(name.as_str()) {
        Some(rest) if rest.starts_with(' ') => prose.summary.clone(),
        _ => format!("{name} {}", third_person(&lower_first(&prose.summary))),
    };
    let text = format!("{indent}// {sentence}\n");
    Insertion { offset: line_start(target, anchor), text }
}

/// "return the sum" → "returns the sum".
fn third_person(summary: &str) -> String {
    let (verb, rest) = summary.split_once(' ').unwrap_or((summary, ""));
    let conjugated = if verb.ends_with('y') && !verb.ends_with("ay") && !verb.ends_with("ey") {
        format!("{}ies", &verb[..verb.len() - 1])
    } else if verb.ends_with(['s', 'x', 'o']) || verb.ends_with("sh") || verb.ends_with("ch") {
        format!("{verb}es")
    } else {
        format!("{verb}s")
    };
    if rest.is_empty() { conjugated } else { format!("{conjugated} {rest}") }
}

/// A Python docstring, first in the body, in the configured `style`.
fn render_python(target: &Target, facts: &Facts, prose: &Prose, style: DocstringStyle) -> Insertion {
    let placement = python_placement(target);
    let parameters: Vec<(String, String)> =
        facts.parameters.iter().cloned().zip(prose.parameters.iter().cloned()).collect();
    let raises: Vec<(String, String)> = facts.raises.iter().cloned().zip(prose.raises.iter().cloned()).collect();
    let sections = match style {
        DocstringStyle::Google => google_sections(&parameters, prose.returns.as_deref(), &raises),
        DocstringStyle::Numpy => {
            let return_type = target.scope.return_annotation.as_deref().unwrap_or("object");
            let returns = prose.returns.as_deref().map(|text| (return_type, text));
            numpy_sections(&parameters, returns, &raises)
        }
        DocstringStyle::Rest => rest_sections(&parameters, prose.returns.as_deref(), &raises),
    };
    Insertion { offset: placement.offset, text: python_docstring(&placement, &prose.summary, sections) }
}

/// Where a Python docstring goes and what surrounds it.
struct PythonPlacement {
    offset: usize,
    /// The body's indentation: every line of the docstring after the first.
    indent: String,
    /// Before the opening quotes.
    lead: String,
    /// After the closing quotes.
    tail: String,
}

fn python_placement(target: &Target) -> PythonPlacement {
    let scope = &target.scope;
    let body = scope.body.clone().unwrap_or(scope.range.end..scope.range.end);
    let header_line = target.rope.byte_to_line(scope.range.start);
    let body_line = target.rope.byte_to_line(body.start);
    if body_line > header_line {
        let indent = indentation_at(target, body.start);
        PythonPlacement { offset: line_start(target, body.start), lead: indent.clone(), indent, tail: "\n".into() }
    } else {
        // `def f(): return 1`: the docstring goes on its own line and pushes the body down.
        let indent = format!("{}    ", indentation_at(target, scope.range.start));
        PythonPlacement { offset: body.start, lead: format!("\n{indent}"), tail: format!("\n{indent}"), indent }
    }
}

/// `Args:`, `Returns:` and `Raises:` sections, entries indented under each.
fn google_sections(
    parameters: &[(String, String)],
    returns: Option<&str>,
    raises: &[(String, String)],
) -> Vec<Vec<String>> {
    let mut sections = Vec::new();
    let entries = |title: &str, entries: &[(String, String)]| {
        let mut section = vec![title.to_string()];
        section.extend(entries.iter().map(|(name, text)| format!("    {name}: {text}")));
        section
    };
    if !parameters.is_empty() {
        sections.push(entries("Args:", parameters));
    }
    if let Some(returns) = returns {
        sections.push(vec!["Returns:".into(), format!("    {returns}")]);
    }
    if !raises.is_empty() {
        sections.push(entries("Raises:", raises));
    }
    sections
}

/// Underlined `Parameters`, `Returns` and `Raises` sections; `returns` is the return type
/// and its description.
fn numpy_sections(
    parameters: &[(String, String)],
    returns: Option<(&str, &str)>,
    raises: &[(String, String)],
) -> Vec<Vec<String>> {
    let mut sections = Vec::new();
    let entries = |title: &str, entries: &[(String, String)]| {
        let mut section = vec![title.to_string(), "-".repeat(title.len())];
        for (name, text) in entries {
            section.push(name.clone());
            section.push(format!("    {text}"));
        }
        section
    };
    if !parameters.is_empty() {
        sections.push(entries("Parameters", parameters));
    }
    if let Some((return_type, text)) = returns {
        sections.push(entries("Returns", &[(return_type.to_string(), text.to_string())]));
    }
    if !raises.is_empty() {
        sections.push(entries("Raises", raises));
    }
    sections
}

/// One block of `:param name:`, `:returns:` and `:raises E:` fields.
fn rest_sections(
    parameters: &[(String, String)],
    returns: Option<&str>,
    raises: &[(String, String)],
) -> Vec<Vec<String>> {
    let mut fields: Vec<String> =
        parameters.iter().map(|(name, text)| format!(":param {}: {text}", name.trim_start_matches('*'))).collect();
    fields.extend(returns.map(|returns| format!(":returns: {returns}")));
    fields.extend(raises.iter().map(|(name, text)| format!(":raises {name}: {text}")));
    if fields.is_empty() { Vec::new() } else { vec![fields] }
}

/// The quoted docstring: the summary alone on one line, or the summary, each section after a
/// blank line, and the closing quotes on their own line.
fn python_docstring(placement: &PythonPlacement, summary: &str, sections: Vec<Vec<String>>) -> String {
    let PythonPlacement { indent, lead, tail, .. } = placement;
    if sections.is_empty() {
        return format!("{lead}\"\"\"{summary}\"\"\"{tail}");
    }
    let mut text = format!("{lead}\"\"\"{summary}\n");
    for section in sections {
        text.push('\n');
        for line in section {
            text.push_str(&format!("{indent}{line}\n"));
        }
    }
    text.push_str(&format!("{indent}\"\"\"{tail}"));
    text
}

/// Checks the insertion: the file still parses as well as before, the scope now has
/// documentation, and every parameter of the signature is documented.
pub fn check(target: &Target, facts: &Facts, insertion: &Insertion) -> Result<(), String> {
    let mut rope = target.rope.clone();
    rope.insert(rope.byte_to_char(insertion.offset), &insertion.text);
    let tree = syntax::parse(&mut target.language.parser(), &rope, None).ok_or("the file could not be parsed")?;
    if syntax::error_count(&tree) > syntax::error_count(&target.tree) {
        return Err("the docstring would break the file's syntax".into());
    }
    let moved = if insertion.offset <= target.scope.range.start { insertion.text.len() } else { 0 };
    let scope = scopes::scope_at(target.language, &tree, &rope, target.scope.range.start + moved + 1)
        .ok_or("the documented item was not found after inserting")?;
    if scope.doc.is_none() {
        return Err("the documentation is not attached to the item".into());
    }
    let lists_parameters = match target.language.spec().doc {
        DocStyle::Docstring | DocStyle::JsDoc | DocStyle::Javadoc | DocStyle::Doxygen => true,
        DocStyle::RustDoc | DocStyle::GoDoc => false,
    };
    for parameter in facts.parameters.iter().filter(|_| lists_parameters) {
        if !insertion.text.contains(parameter.trim_start_matches('*')) {
            return Err(format!("parameter `{parameter}` is not documented"));
        }
    }
    Ok(())
}

/// Documents every target (all undocumented items of one file) in one go: either every
/// insertion, checked together, or an error and nothing. `prose` writes the sentences for one
/// item (the model; canned text in tests) and is told which item of how many it is at.
pub fn document_all(
    targets: &[Target],
    style: DocstringStyle,
    prose: &mut dyn FnMut(&Target, &Facts, usize) -> Result<Prose, ActionError>,
) -> Result<Vec<Insertion>, ActionError> {
    let Some(first) = targets.first() else {
        return Err(ActionError::Rejected("every function, method and class here is documented already".into()));
    };
    let mut insertions = Vec::with_capacity(targets.len());
    for (index, target) in targets.iter().enumerate() {
        let facts = facts(target);
        let insertion = render(target, &facts, &prose(target, &facts, index)?, style);
        check(target, &facts, &insertion)
            .map_err(|why| ActionError::Rejected(format!("no docstrings inserted: `{}`: {why}", target.scope.name)))?;
        insertions.push(insertion);
    }
    insertions.sort_by_key(|insertion| insertion.offset);
    // Together, too: the file must parse as well as before with all of them.
    let mut rope = first.rope.clone();
    for insertion in insertions.iter().rev() {
        rope.insert(rope.byte_to_char(insertion.offset), &insertion.text);
    }
    let tree = syntax::parse(&mut first.language.parser(), &rope, None);
    if tree.is_none_or(|tree| syntax::error_count(&tree) > syntax::error_count(&first.tree)) {
        return Err(ActionError::Rejected(
            "no docstrings inserted: together they would break the file's syntax".into(),
        ));
    }
    Ok(insertions)
}

/// A docstring to insert, and the sentences running the code turned down on the way, each with
/// why (for the user's message).
pub struct Written {
    pub insertion: Insertion,
    pub turned_down: Vec<String>,
}

/// The whole action: facts, prose, rendering, check. `seen` is what the function returned when
/// nib ran it, if it did.
pub fn generate(
    model: &mut dyn Backend,
    target: &Target,
    style: DocstringStyle,
    seen: Option<SeenResults>,
    cancel: CancelToken,
) -> Result<Written, ActionError> {
    let facts = Facts { results: seen, ..facts(target) };
    let prose = write_prose(model, target, &facts, cancel)?;
    let insertion = render(target, &facts, &prose, style);
    check(target, &facts, &insertion).map_err(|why| ActionError::Rejected(format!("no docstring inserted: {why}")))?;
    Ok(Written { insertion, turned_down: prose.turned_down })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, language_id: &str, source: &str) -> Target {
        crate::actions::test_target(&format!("/w/{name}"), language_id, source)
    }

    #[test]
    fn a_returns_sentence_is_false_when_it_names_only_kinds_the_code_did_not_return() {
        let floats = SeenResults { kinds: vec![ValueKind::Float], fractions: true, values: Vec::new() };
        assert!(floats.contradiction("A float value rounded to the nearest integer.").is_some(), "2.4 is no integer");
        assert!(floats.contradiction("An integer.").is_some());
        assert!(floats.contradiction("The price as a string.").is_some());
        assert_eq!(floats.contradiction("A float rounded to two decimal places."), None);
        assert_eq!(floats.contradiction("The price with tax, rounded."), None, "names no kind");
        let whole_floats = SeenResults { kinds: vec![ValueKind::Float], fractions: false, values: Vec::new() };
        assert_eq!(whole_floats.contradiction("A float rounded to the nearest integer."), None);
        let lists =
            SeenResults { kinds: vec![ValueKind::List, ValueKind::Nothing], fractions: false, values: Vec::new() };
        assert_eq!(lists.contradiction("A list of integers, or None."), None, "one named kind was returned");
        assert_eq!(lists.noun(), None, "two kinds: no one noun");
        assert_eq!(floats.noun(), Some("a float"));
        assert_eq!(lists.kinds_returned(), "a list, or None");
        let numbers =
            SeenResults { kinds: vec![ValueKind::Integer, ValueKind::Float], fractions: false, values: Vec::new() };
        assert_eq!(numbers.kinds_returned(), "an integer or a float");
        assert_eq!(
            SeenResults { kinds: vec![ValueKind::Nothing], fractions: false, values: Vec::new() }.kinds_returned(),
            "None"
        );
        let integers = SeenResults { kinds: vec![ValueKind::Integer], fractions: false, values: Vec::new() };
        assert!(integers.contradiction("True if the cart is empty, as a boolean.").is_some());
        assert_eq!(integers.contradiction("The number of items, counted once (the int of it)."), None);
        let strings = SeenResults {
            kinds: vec![ValueKind::Text],
            fractions: false,
            values: vec!["''".into(), "'hello world'".into()],
        };
        assert!(strings.contradiction("The output of camel2under is 'camel_2_under'.").is_some(), "never returned");
        assert_eq!(strings.contradiction("A string, such as 'hello world' or \"\"."), None, "both returned");
        let floats_seen = SeenResults { values: vec!["2.4".into()], ..floats.clone() };
        assert_eq!(floats_seen.contradiction("A float such as '2.4'."), None);
        assert_eq!(strings.contradiction("The input word's plural form, as the users' style says."), None);
        assert_eq!(quoted_values("'a' or (\"b c\"), not it's 'd'x' 'e"), ["a", "b c", "d'x"]);
    }

    /// Renders with canned prose and returns the document after the insertion.
    fn apply(target: &Target, style: DocstringStyle) -> String {
        let facts = facts(target);
        let prose = Prose {
            summary: "Do the thing.".into(),
            parameters: facts.parameters.iter().map(|p| format!("The {}.", p.trim_start_matches('*'))).collect(),
            returns: facts.returns_value.then(|| "The result.".into()),
            raises: facts.raises.iter().map(|_| "If it is bad.".into()).collect(),
            errors: facts.returns_result.then(|| "If reading fails.".into()),
            panics: facts.can_panic.then(|| "If the input is empty.".into()),
            turned_down: Vec::new(),
        };
        let insertion = render(target, &facts, &prose, style);
        check(target, &facts, &insertion).unwrap();
        let mut text = target.rope.to_string();
        text.insert_str(insertion.offset, &insertion.text);
        text
    }

    const PYTHON: &str = "class Shop:\n    def price(self, base, rate=0.2, *extra, **options):\n        if base < 0:\n            raise ValueError(\"negative\")\n        def helper():\n            return 1\n        return base * (1 + rate)$0\n";

    #[test]
    fn python_google_numpy_and_rest() {
        let shop = target("shop.py", "python", PYTHON);
        expect_test::expect![[r#"
            class Shop:
                def price(self, base, rate=0.2, *extra, **options):
                    """Do the thing.

                    Args:
                        base: The base.
                        rate: The rate.
                        *extra: The extra.
                        **options: The options.

                    Returns:
                        The result.

                    Raises:
                        ValueError: If it is bad.
                    """
                    if base < 0:
                        raise ValueError("negative")
                    def helper():
                        return 1
                    return base * (1 + rate)
        "#]]
        .assert_eq(&apply(&shop, DocstringStyle::Google));
        let numpy = apply(&shop, DocstringStyle::Numpy);
        assert!(
            numpy.contains("        Parameters\n        ----------\n        base\n            The base.\n"),
            "{numpy}"
        );
        let rest = apply(&shop, DocstringStyle::Rest);
        assert!(rest.contains("        :param options: The options.\n        :returns: The result.\n        :raises ValueError: If it is bad.\n"), "{rest}");
    }

    #[test]
    fn a_whole_file_gets_one_edit_for_every_undocumented_item_and_nothing_else() {
        let source = "import os\n\n\ndef one(a):\n    return a\n\n\ndef two():\n    \"\"\"Documented.\"\"\"\n\n\nclass Three:\n    def four(self, b):\n        print(b)\n\n    def five(self):\n        return 5\n\n\nasync def six(url):\n    return await get(url)\n$0";
        let targets = crate::actions::undocumented_test_targets("/w/all.py", "python", &source.replace("$0", ""));
        let names: Vec<&str> = targets.iter().map(|t| t.scope.name.as_str()).collect();
        assert_eq!(names, ["one", "Three", "four", "five", "six"]);
        let mut seen = Vec::new();
        let mut canned = |target: &Target, facts: &Facts, index: usize| {
            seen.push(index);
            Ok(Prose {
                summary: format!("Describe {}.", target.scope.name),
                parameters: facts.parameters.iter().map(|p| format!("The {p}.")).collect(),
                returns: facts.returns_value.then(|| "The result.".into()),
                ..Prose::default()
            })
        };
        let insertions = document_all(&targets, DocstringStyle::Google, &mut canned).unwrap();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        let text = crate::actions::with_insertions(&source.replace("$0", ""), &insertions);
        expect_test::expect![[r#"
            import os


            def one(a):
                """Describe one.

                Args:
                    a: The a.

                Returns:
                    The result.
                """
                return a


            def two():
                """Documented."""


            class Three:
                """Describe Three."""
                def four(self, b):
                    """Describe four.

                    Args:
                        b: The b.
                    """
                    print(b)

                def five(self):
                    """Describe five.

                    Returns:
                        The result.
                    """
                    return 5


            async def six(url):
                """Describe six.

                Args:
                    url: The url.

                Returns:
                    The result.
                """
                return await get(url)
        "#]]
        .assert_eq(&text);
        // One failure means nothing at all.
        let mut failing = |target: &Target, _: &Facts, _: usize| {
            if target.scope.name == "five" {
                Err(ActionError::Rejected("no summary".into()))
            } else {
                Ok(Prose { summary: "Fine.".into(), ..Prose::default() })
            }
        };
        assert!(document_all(&targets, DocstringStyle::Google, &mut failing).is_err());
    }

    #[test]
    fn python_without_return_or_on_one_line() {
        let quiet = target("q.py", "python", "def log(message):\n    print(message)$0\n");
        assert_eq!(
            apply(&quiet, DocstringStyle::Google),
            "def log(message):\n    \"\"\"Do the thing.\n\n    Args:\n        message: The message.\n    \"\"\"\n    print(message)\n"
        );
        let one_line = target("o.py", "python", "def one(): return 1$0\n");
        assert_eq!(
            apply(&one_line, DocstringStyle::Google),
            "def one(): \n    \"\"\"Do the thing.\n\n    Returns:\n        The result.\n    \"\"\"\n    return 1\n"
        );
    }

    #[test]
    fn rust_doc_goes_above_attributes_with_errors_and_panics() {
        let item = target(
            "lib.rs",
            "rust",
            "impl Store {\n    #[inline]\n    pub fn load(&self, key: &str) -> Result<u8, Error> {\n        let v = self.map.get(key).unwrap();$0\n        Ok(*v)\n    }\n}\n",
        );
        expect_test::expect![[r#"
            impl Store {
                /// Do the thing.
                ///
                /// # Errors
                ///
                /// If reading fails.
                ///
                /// # Panics
                ///
                /// If the input is empty.
                #[inline]
                pub fn load(&self, key: &str) -> Result<u8, Error> {
                    let v = self.map.get(key).unwrap();
                    Ok(*v)
                }
            }
        "#]]
        .assert_eq(&apply(&item, DocstringStyle::Google));
    }

    #[test]
    fn javadoc_with_params_return_and_throws() {
        let java = target(
            "Cart.java",
            "java",
            "class Cart {\n    @Override\n    public int add(String item, int count) throws IOException {\n        if (count < 0) {\n            throw new IllegalArgumentException(\"count\");\n        }\n        return count;$0\n    }\n}\n",
        );
        assert_eq!(
            apply(&java, DocstringStyle::Google),
            "class Cart {\n    /**\n     * Do the thing.\n     *\n     * @param item The item.\n     * @param count The count.\n     * @return The result.\n     * @throws IOException If it is bad.\n     * @throws IllegalArgumentException If it is bad.\n     */\n    @Override\n    public int add(String item, int count) throws IOException {\n        if (count < 0) {\n            throw new IllegalArgumentException(\"count\");\n        }\n        return count;\n    }\n}\n"
        );
        let void =
            target("Cart.java", "java", "class Cart {\n    void clear() {\n        items.clear();$0\n    }\n}\n");
        assert_eq!(
            apply(&void, DocstringStyle::Google),
            "class Cart {\n    /**\n     * Do the thing.\n     */\n    void clear() {\n        items.clear();\n    }\n}\n"
        );
    }

    #[test]
    fn doxygen_for_c_and_cpp() {
        let c = target(
            "sum.c",
            "c",
            "#include <stdio.h>\n\nstatic int sum(const int *values, size_t count) {\n    return count;$0\n}\n",
        );
        assert_eq!(
            apply(&c, DocstringStyle::Google),
            "#include <stdio.h>\n\n/**\n * @brief Do the thing.\n *\n * @param values The values.\n * @param count The count.\n * @return The result.\n */\nstatic int sum(const int *values, size_t count) {\n    return count;\n}\n"
        );
        let cpp = target(
            "cart.cpp",
            "cpp",
            "template <typename T>\nT checked(T value) {\n    if (value < 0) throw std::invalid_argument(\"negative\");\n    return value;$0\n}\n",
        );
        assert_eq!(
            apply(&cpp, DocstringStyle::Google),
            "/**\n * @brief Do the thing.\n *\n * @param value The value.\n * @return The result.\n * @throws std::invalid_argument If it is bad.\n */\ntemplate <typename T>\nT checked(T value) {\n    if (value < 0) throw std::invalid_argument(\"negative\");\n    return value;\n}\n"
        );
    }

    #[test]
    fn jsdoc_and_go_comments() {
        let js = target("a.ts", "typescript", "export function add(a: number, b = 1) {\n  return a + b;$0\n}\n");
        assert_eq!(
            apply(&js, DocstringStyle::Google),
            "/**\n * Do the thing.\n *\n * @param a - The a.\n * @param b - The b.\n * @returns The result.\n */\nexport function add(a: number, b = 1) {\n  return a + b;\n}\n"
        );
        let go = target("m.go", "go", "package m\n\nfunc Sum(a, b int) int {\n\treturn a + b$0\n}\n");
        assert_eq!(
            apply(&go, DocstringStyle::Google),
            "package m\n\n// Sum does the thing.\nfunc Sum(a, b int) int {\n\treturn a + b\n}\n"
        );
    }
}
