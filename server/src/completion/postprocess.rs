//! Turning raw model output into ghost text that belongs at the cursor: no stray leading
//! whitespace, one line mid-line, a block's worth of lines at a block start, never text the
//! buffer already has after the cursor, no brackets the user already closed, no loops.
//!
//! `process` is also run after every generated token, and generation stops as soon as it says
//! the completion is complete: the model never decodes tokens that would be cut anyway.

use super::balance;
use crate::syntax::Language;
use crate::syntax::languages::Blocks;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    SingleLine,
    MultiLine,
}

/// The text around the cursor that post-processing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Surroundings {
    pub language: Option<Language>,
    /// The cursor line's text before the cursor.
    pub line_prefix: String,
    /// The cursor line's text after the cursor (no line terminator).
    pub line_suffix: String,
    /// The first non-blank line below the cursor line.
    pub next_line: Option<String>,
    /// Whether the cursor sits inside a function, method or class.
    pub in_scope: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Processed {
    pub text: String,
    /// True once more tokens could not change the result.
    pub complete: bool,
}

/// Line starts that begin a new top-level item, per language (`syntax::languages`): a
/// multi-line completion stops before them.
pub fn stop_strings(language: Option<Language>) -> &'static [&'static str] {
    language.map_or(&[], |language| language.spec().top_level_starts)
}

fn block_opener(language: Option<Language>) -> &'static [char] {
    match language.map(|language| language.spec().blocks) {
        Some(Blocks::Indentation) => &[':'],
        Some(Blocks::Braces { .. }) => &['{', '('],
        None => &[':', '{'],
    }
}

fn indentation(line: &str) -> usize {
    line.chars().take_while(|c| *c == ' ' || *c == '\t').map(|c| if c == '\t' { 4 } else { 1 }).sum()
}

fn trimmed_starts_with_closer(line: &str) -> bool {
    line.trim_start().starts_with([')', ']', '}'])
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// Whether the rest of the line leaves room for a completion: only closing brackets, quotes
/// and separators may follow the cursor. Completing in front of real code would push it aside.
pub fn rest_of_line_allows_completion(surroundings: &Surroundings) -> bool {
    surroundings.line_suffix.chars().all(|c| c.is_whitespace() || ")]}\"'`;,:".contains(c))
}

/// Single line mid-line; a block at an empty line inside a block or after a block opener.
pub fn decide_mode(surroundings: &Surroundings) -> Mode {
    let rest_is_closers = rest_of_line_allows_completion(surroundings);
    if is_blank(&surroundings.line_prefix) && is_blank(&surroundings.line_suffix) {
        return if surroundings.in_scope { Mode::MultiLine } else { Mode::SingleLine };
    }
    let trimmed = surroundings.line_prefix.trim_end();
    if rest_is_closers && trimmed.ends_with(block_opener(surroundings.language)) {
        return Mode::MultiLine;
    }
    Mode::SingleLine
}

/// Closers in the completion that close brackets opened before the cursor: when the line
/// already has that closer after the cursor, the completion must stop before it.
fn cut_at_preclosed_bracket(text: &str, line_suffix: &str) -> Option<usize> {
    let after = line_suffix.trim_start();
    let mut stack = Vec::new();
    let mut quote: Option<char> = None;
    for (index, c) in text.char_indices() {
        if let Some(open) = quote {
            if c == open {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let opener = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.last() == Some(&opener) {
                    stack.pop();
                } else if after.starts_with(c) {
                    return Some(index);
                }
            }
            '\n' => quote = None,
            _ => {}
        }
    }
    None
}

/// Removes the end of `text` that repeats the start of the rest of the line.
fn strip_suffix_overlap(text: &mut String, line_suffix: &str) {
    let rest = line_suffix.trim_end();
    if rest.is_empty() {
        return;
    }
    let last_line_start = text.rfind('\n').map_or(0, |i| i + 1);
    let last_line = &text[last_line_start..];
    for length in (1..=rest.len().min(last_line.len())).rev() {
        if rest.is_char_boundary(length) && last_line.ends_with(&rest[..length]) {
            // Never strip a closer the completion needs for its own brackets.
            let kept = &text[..text.len() - length];
            if unclosed_openers(kept) == unclosed_openers(text) {
                text.truncate(text.len() - length);
            }
            return;
        }
    }
}

/// Brackets opened in `text` and not closed in it.
fn unclosed_openers(text: &str) -> usize {
    let mut depth: usize = 0;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth
}

pub fn process(raw: &str, surroundings: &Surroundings, mode: Mode) -> Processed {
    let mut text = raw.replace("\r\n", "\n");
    let mut complete = false;

    // Stray leading whitespace: the cursor already has the space or indentation before it.
    if surroundings.line_prefix.ends_with([' ', '\t']) {
        let trimmed = text.trim_start_matches([' ', '\t']).len();
        text.drain(..text.len() - trimmed);
    }

    match mode {
        Mode::SingleLine => {
            if let Some(newline) = text.find('\n') {
                text.truncate(newline);
                complete = true;
            }
        }
        Mode::MultiLine => complete |= cut_block(&mut text, surroundings),
    }

    if let Some(cut) = cut_at_preclosed_bracket(&text, &surroundings.line_suffix) {
        text.truncate(cut);
        complete = true;
    }
    strip_suffix_overlap(&mut text, &surroundings.line_suffix);
    let kept = text.trim_end().len();
    if mode == Mode::MultiLine || complete {
        text.truncate(kept);
    }
    Processed { text, complete }
}

/// Multi-line: ends the completion where its block ends. Returns whether it cut anything.
fn cut_block(text: &mut String, surroundings: &Surroundings) -> bool {
    let prefix_is_blank = is_blank(&surroundings.line_prefix);
    // The cursor's block: at a blank line, its indentation; after an opener, deeper than the
    // opener's line.
    let base = if prefix_is_blank {
        indentation(&surroundings.line_prefix)
    } else {
        indentation(&surroundings.line_prefix) + 1
    };
    let next_line = surroundings.next_line.as_deref().map(str::trim).filter(|line| !line.is_empty());
    let mut offset = 0;
    let mut previous_nonblank: Option<&str> = None;
    // Lines seen so far: a line coming back a third time is a loop even when other lines
    // sit between its repeats (`a`, `b`, `a`, `b`, `a`).
    let mut seen: Vec<&str> = Vec::new();
    let mut saw_blank = false;
    let mut has_content = false;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches('\n');
        let is_last = offset + line.len() == text.len();
        // The first line continues the cursor line; its own indentation is the cursor's.
        let indent = if index == 0 { if prefix_is_blank { base } else { usize::MAX } } else { indentation(content) };
        if !is_blank(content) {
            let dedented = index > 0 && indent < base;
            // A closer that ends a block the completion opened is its own, even when the line
            // below the cursor is the same `}`.
            let closes_own_block =
                trimmed_starts_with_closer(content) && balance::leaves_open(&text[..offset], surroundings.language);
            let repeats_below = next_line == Some(content.trim()) && !closes_own_block;
            let trimmed = content.trim();
            let repeats_above = (previous_nonblank == Some(trimmed) && trimmed.len() > 2)
                || (trimmed.len() > 3 && seen.iter().filter(|line| **line == trimmed).count() >= 2);
            // At top level, one paragraph: a new unindented item after a blank line ends it.
            let new_top_level_item = base == 0 && saw_blank && indent == 0 && has_content;
            let complete_line = !is_last || text.ends_with('\n');
            if (dedented || repeats_below || repeats_above || new_top_level_item) && (complete_line || dedented) {
                text.truncate(offset);
                return true;
            }
            previous_nonblank = Some(content.trim());
            seen.push(content.trim());
            has_content = true;
            saw_blank = false;
        } else if index > 0 {
            saw_blank = true;
        }
        offset += line.len();
    }
    let stops = stop_strings(surroundings.language);
    if let Some(cut) = stops.iter().filter_map(|stop| text.find(stop)).min() {
        text.truncate(cut);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$0` marks the cursor in `around`; returns the processed completion of `raw`.
    fn check(language: Language, around: &str, in_scope: bool, raw: &str) -> (Mode, Processed) {
        let cursor = around.find("$0").unwrap();
        let text = around.replacen("$0", "", 1);
        let line_start = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[cursor..].find('\n').map_or(text.len(), |i| cursor + i);
        let next_line = text[line_end..].lines().find(|line| !line.trim().is_empty()).map(str::to_string);
        let surroundings = Surroundings {
            language: Some(language),
            line_prefix: text[line_start..cursor].to_string(),
            line_suffix: text[cursor..line_end].to_string(),
            next_line,
            in_scope,
        };
        let mode = decide_mode(&surroundings);
        (mode, process(raw, &surroundings, mode))
    }

    fn text(language: Language, around: &str, in_scope: bool, raw: &str) -> String {
        check(language, around, in_scope, raw).1.text
    }

    #[test]
    fn single_line_mid_line_stops_at_the_newline() {
        let (mode, result) = check(Language::Python, "x = compute($0", false, "a, b)\nprint(x)\n");
        assert_eq!(mode, Mode::SingleLine);
        assert_eq!(result, Processed { text: "a, b)".into(), complete: true });
        // Not complete until a newline (or a cut) shows up.
        assert!(!check(Language::Python, "x = comp$0", false, "ute(").1.complete);
    }

    #[test]
    fn stray_leading_whitespace_is_stripped() {
        assert_eq!(text(Language::Python, "x = $0", false, "  42\n"), "42");
        assert_eq!(text(Language::Python, "def f():\n    $0", true, "    return 1\n"), "return 1");
    }

    #[test]
    fn text_repeating_the_rest_of_the_line_is_cut() {
        assert_eq!(text(Language::Python, "print($0)", false, "'hi')\n"), "'hi'");
        assert_eq!(text(Language::Rust, "let v = vec![$0];", false, "1, 2];\n"), "1, 2");
        assert_eq!(text(Language::Python, "foo($0)", false, ")\n"), "");
    }

    #[test]
    fn only_brackets_the_completion_opened_are_closed() {
        // The completion's own `(...)` stays; the `)` the line already has is not repeated.
        assert_eq!(text(Language::Python, "f(g($0))", false, "x), y)\n"), "x");
        assert_eq!(text(Language::JavaScript, "call(a, $0)", false, "b(c))"), "b(c)");
        // Without a closer after the cursor the completion may close the bracket itself.
        assert_eq!(text(Language::Python, "print(x$0", false, ")\n"), ")");
        // Brackets inside strings do not count.
        assert_eq!(text(Language::Python, "s = f($0)", false, "\")\")\n"), "\")\"");
    }

    #[test]
    fn multi_line_at_a_blank_line_in_a_block_stops_at_its_end() {
        let around = "def f(items):\n    total = 0\n    $0\n\nprint(f([1]))\n";
        let raw = "for item in items:\n        total += item\n    return total\n\ndef g():\n    pass\n";
        let (mode, result) = check(Language::Python, around, true, raw);
        assert_eq!(mode, Mode::MultiLine);
        assert_eq!(result.text, "for item in items:\n        total += item\n    return total");
        assert!(result.complete);
    }

    #[test]
    fn multi_line_after_a_block_opener() {
        let around = "def add(a, b):$0\n";
        let raw = "\n    return a + b\n\n\nclass X:\n";
        let (mode, result) = check(Language::Python, around, true, raw);
        assert_eq!(mode, Mode::MultiLine);
        assert_eq!(result.text, "\n    return a + b");
        let around = "fn main() {$0}\n";
        let raw = "\n    println!(\"hi\");\n}\n\nfn other() {}\n";
        assert_eq!(text(Language::Rust, around, true, raw), "\n    println!(\"hi\");");
    }

    #[test]
    fn a_line_equal_to_the_next_line_below_is_cut() {
        let around = "def f():\n    $0\n    return x\n";
        let raw = "x = load()\n    return x\n";
        assert_eq!(text(Language::Python, around, true, raw), "x = load()");
    }

    #[test]
    fn repetition_loops_are_cut() {
        let around = "def f():\n    $0\n";
        let raw = "log('a')\n    log('a')\n    log('a')\n";
        assert_eq!(text(Language::Python, around, true, raw), "log('a')");
    }

    #[test]
    fn loops_over_several_lines_are_cut_at_the_third_round() {
        let around = "def f(items):\n    $0\n";
        let raw = "for a in items:\n        log(a)\n    for a in items:\n        log(a)\n    for a in items:\n        log(a)\n";
        assert_eq!(
            text(Language::Python, around, true, raw),
            "for a in items:\n        log(a)\n    for a in items:\n        log(a)"
        );
    }

    #[test]
    fn top_level_blank_line_is_single_line_and_language_stops_apply() {
        assert_eq!(check(Language::Python, "x = 1\n$0\n", false, "").0, Mode::SingleLine);
        let around = "def f():\n    $0";
        let raw = "return 1\n\nif __name__ == '__main__':\n    f()\n";
        assert_eq!(text(Language::Python, around, true, raw), "return 1");
        let around = "package p\nfunc f() {$0\n";
        assert_eq!(text(Language::Go, around, true, "\n\treturn\n}\nfunc g() {}\n"), "\n\treturn");
    }

    #[test]
    fn no_completion_in_front_of_code() {
        let surroundings = |suffix: &str| Surroundings {
            language: Some(Language::Python),
            line_prefix: "x = ".into(),
            line_suffix: suffix.into(),
            next_line: None,
            in_scope: false,
        };
        assert!(rest_of_line_allows_completion(&surroundings("")));
        assert!(rest_of_line_allows_completion(&surroundings(")]  ")));
        assert!(rest_of_line_allows_completion(&surroundings("\");")));
        assert!(!rest_of_line_allows_completion(&surroundings("foo(1)")));
    }

    #[test]
    fn incomplete_output_is_not_complete() {
        let around = "def f():\n    $0\n";
        let partial = check(Language::Python, around, true, "x = 1\n    y = ");
        assert_eq!(partial.1, Processed { text: "x = 1\n    y =".into(), complete: false });
    }
}
