//! Block balance: a multi-line completion never leaves open a bracket, string or block it
//! opened itself. A block it opened and filled is closed with the line the language and the
//! opener's indentation call for (`}`, `};`, `});`); anything else it left open (a call cut
//! mid-arguments, a block with no body yet, a Python `if x:` with nothing under it) is cut
//! before the line that opened it.
//!
//! This works on text only; `completion::Prepared::finish` then checks each candidate against
//! the parser, so a closing line that does not parse is never shown either.

use crate::syntax::Language;
use crate::syntax::languages::{Apostrophe, Blocks};

/// Something the completion opened and did not close: a bracket, or a string or block comment
/// still running at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Opener {
    /// `(`, `[`, `{`, or `"` for a string or comment that never ends.
    bracket: char,
    /// Byte offset in the completion.
    at: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lexical {
    Code,
    LineComment,
    BlockComment,
    Text { quote: u8, triple: bool },
}

/// How `language` delimits blocks; text in a language nib does not know is read like Python.
fn blocks(language: Option<Language>) -> Blocks {
    language.map_or(Blocks::Indentation, |language| language.spec().blocks)
}

fn is_python(language: Option<Language>) -> bool {
    matches!(blocks(language), Blocks::Indentation)
}

/// Whether `language` spells blocks with braces (every language nib knows but Python).
fn has_braces(language: Option<Language>) -> bool {
    !is_python(language)
}

/// Rust's `'` starts a char literal (`'{'`, `'\n'`) or a lifetime (`'a`): the length of the
/// literal at `at`, or `None` for a lifetime.
fn rust_char_literal_length(text: &str, at: usize) -> Option<usize> {
    let rest = &text[at + 1..];
    if let Some(escaped) = rest.strip_prefix('\\') {
        return escaped.find('\'').filter(|end| *end <= 10).map(|end| end + 3);
    }
    let first = rest.chars().next()?;
    rest[first.len_utf8()..].starts_with('\'').then(|| first.len_utf8() + 2)
}

/// The brackets, strings and block comments `text` leaves open, outermost first. Closers of
/// brackets opened before the completion are ignored: they are the cursor's context, not the
/// completion's.
fn unclosed(text: &str, language: Option<Language>) -> Vec<Opener> {
    let python = is_python(language);
    let char_literals = language.is_some_and(|language| language.spec().apostrophe == Apostrophe::CharLiteral);
    let bytes = text.as_bytes();
    let mut stack: Vec<Opener> = Vec::new();
    let mut state = Lexical::Code;
    let mut state_start = 0;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        let next = bytes.get(at + 1).copied();
        match state {
            Lexical::Code => match byte {
                b'#' if python => state = Lexical::LineComment,
                b'/' if !python && next == Some(b'/') => state = Lexical::LineComment,
                b'/' if !python && next == Some(b'*') => {
                    (state, state_start) = (Lexical::BlockComment, at);
                    at += 2;
                    continue;
                }
                b'\'' if char_literals => {
                    at += rust_char_literal_length(text, at).unwrap_or(1);
                    continue;
                }
                b'"' | b'\'' | b'`' if byte != b'`' || !python => {
                    let triple = python && bytes[at..].starts_with(&[byte; 3]);
                    (state, state_start) = (Lexical::Text { quote: byte, triple }, at);
                    at += if triple { 3 } else { 1 };
                    continue;
                }
                b'(' | b'[' | b'{' => stack.push(Opener { bracket: byte as char, at }),
                b')' | b']' | b'}' => {
                    let opener = match byte {
                        b')' => '(',
                        b']' => '[',
                        _ => '{',
                    };
                    if stack.last().is_some_and(|open| open.bracket == opener) {
                        stack.pop();
                    }
                }
                _ => {}
            },
            Lexical::LineComment if byte == b'\n' => state = Lexical::Code,
            Lexical::BlockComment if byte == b'*' && next == Some(b'/') => {
                state = Lexical::Code;
                at += 2;
                continue;
            }
            Lexical::Text { .. } if byte == b'\\' => {
                at += 2;
                continue;
            }
            Lexical::Text { quote, triple: true } if bytes[at..].starts_with(&[quote; 3]) => {
                state = Lexical::Code;
                at += 3;
                continue;
            }
            // A plain string ends at its quote, or (unterminated) at the end of its line;
            // template literals may span lines.
            Lexical::Text { quote, triple: false } if byte == quote || (byte == b'\n' && quote != b'`') => {
                state = Lexical::Code;
            }
            _ => {}
        }
        at += 1;
    }
    if matches!(state, Lexical::BlockComment | Lexical::Text { .. }) {
        let position = stack.partition_point(|open| open.at < state_start);
        stack.insert(position, Opener { bracket: '"', at: state_start });
    }
    stack
}

/// Whether `text` leaves open a bracket it opened, so a closer that follows may be its own.
pub(crate) fn leaves_open(text: &str, language: Option<Language>) -> bool {
    unclosed(text, language).iter().any(|opener| opener.bracket != '"')
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |newline| newline + 1)
}

fn line_end(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |newline| at + newline)
}

/// Whether the opener at `at` is the last code on its line (a comment may follow).
fn ends_its_line(text: &str, at: usize, language: Option<Language>) -> bool {
    let rest = text[at + 1..line_end(text, at)].trim();
    let comment = language.map_or("#", |language| language.spec().line_comment);
    rest.is_empty() || rest.starts_with(comment)
}

/// Whether a non-blank line follows the line of `at`.
fn has_body(text: &str, at: usize) -> bool {
    text[line_end(text, at)..].lines().any(|line| !line.trim().is_empty())
}

/// Removes the line holding `at` and everything after it.
fn cut_before_line(text: &mut String, at: usize) {
    text.truncate(line_start(text, at));
    text.truncate(text.trim_end().len());
}

/// The whitespace a line of the completion starts with. The first line continues the cursor
/// line, so its indentation is the cursor line's.
fn leading_whitespace<'a>(text: &'a str, at: usize, line_prefix: &'a str) -> &'a str {
    let start = line_start(text, at);
    let line = if start == 0 { line_prefix } else { &text[start..] };
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

/// What follows the closing brackets: Go's `go func() {` and `defer func() {` call the literal
/// (`}()`); elsewhere an assignment (`let x = match y {`, `const f = () => {`) or a call
/// (`run(() => {`) ends its statement with `;`.
fn statement_end(line: &str, openers: &[char], language: Option<Language>) -> &'static str {
    let code = line.trim_start();
    match blocks(language) {
        Blocks::Indentation => return "",
        Blocks::Braces { semicolons: false } => {
            let deferred = ["go func", "defer func"].iter().any(|start| code.starts_with(start));
            return if deferred && openers == ['{'] { "()" } else { "" };
        }
        Blocks::Braces { semicolons: true } => {}
    }
    let code = code.split("//").next().unwrap_or_default();
    // An `=` inside parentheses (`for (int i = 0; ...) {`) does not make the line a statement.
    let mut depth = 0usize;
    let assigns = code.char_indices().any(|(index, c)| {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        let before = code[..index].chars().next_back();
        let after = code[index + 1..].chars().next();
        depth == 0 && c == '=' && !matches!(before, Some('=' | '!' | '<' | '>')) && !matches!(after, Some('=' | '>'))
    });
    if assigns || openers.contains(&'(') { ";" } else { "" }
}

/// The closing lines for `open` (all of them brace blocks opened at line ends, or brackets
/// before such a brace on the same line), innermost first: one line per opener line, at that
/// line's indentation.
fn closing_lines(text: &str, open: &[Opener], line_prefix: &str, language: Option<Language>) -> String {
    let mut closing = String::new();
    let mut index = open.len();
    while index > 0 {
        let start = line_start(text, open[index - 1].at);
        let first_on_line = open[..index].partition_point(|opener| opener.at < start);
        let brackets: Vec<char> = open[first_on_line..index].iter().map(|opener| opener.bracket).collect();
        let closers: String = brackets
            .iter()
            .rev()
            .map(|bracket| match bracket {
                '(' => ')',
                '[' => ']',
                _ => '}',
            })
            .collect();
        let full_line = if start == 0 { format!("{line_prefix}{}", line_of(text, 0)) } else { line_of(text, start) };
        let end = statement_end(&full_line, &brackets, language);
        let indent = leading_whitespace(text, open[index - 1].at, line_prefix);
        closing.push_str(&format!("\n{indent}{closers}{end}"));
        index = first_on_line;
    }
    closing
}

fn line_of(text: &str, start: usize) -> String {
    text[start..line_end(text, start)].to_string()
}

/// Makes `text` (a multi-line completion inserted after `line_prefix`) leave nothing open that
/// it opened: brace blocks that have a body are closed; everything else that is open is cut
/// before the line that opened it. Text that opens nothing is returned unchanged.
pub fn balance(text: &str, line_prefix: &str, language: Option<Language>) -> String {
    let mut text = text.trim_end().to_string();
    loop {
        let open = unclosed(&text, language);
        let Some(innermost) = open.last() else {
            return cut_bodiless_python_block(text, language);
        };
        // The innermost block has no body yet: nothing to close, the opener goes.
        if innermost.bracket == '{' && !has_body(&text, innermost.at) {
            cut_before_line(&mut text, innermost.at);
            continue;
        }
        // Closable: on every line that opens something, the last opener is a brace block at the
        // line's end (brackets before it close on the same closing line: `run(() => {`).
        let first_unclosable = open.iter().find(|opener| !line_closable(&text, &open, opener.at, language));
        let Some(unclosable) = first_unclosable else {
            let closing = closing_lines(&text, &open, line_prefix, language);
            text.push_str(&closing);
            return text;
        };
        let at = unclosable.at;
        cut_before_line(&mut text, at);
    }
}

/// Whether the openers on the line of `at` can be closed by one closing line.
fn line_closable(text: &str, open: &[Opener], at: usize, language: Option<Language>) -> bool {
    let start = line_start(text, at);
    let on_line: Vec<&Opener> = open.iter().filter(|opener| line_start(text, opener.at) == start).collect();
    has_braces(language)
        && on_line.iter().all(|opener| opener.bracket != '"')
        && on_line.last().is_some_and(|last| last.bracket == '{' && ends_its_line(text, last.at, language))
}

/// Python: a last line that opens a block (`if ready:`) with nothing under it goes.
fn cut_bodiless_python_block(mut text: String, language: Option<Language>) -> String {
    if !is_python(language) {
        return text;
    }
    loop {
        let last_line = &text[line_start(&text, text.len())..];
        let code = last_line.split('#').next().unwrap_or_default().trim_end();
        if !code.ends_with(':') || code.trim().is_empty() {
            return text;
        }
        let at = text.len() - last_line.len();
        if at == 0 {
            return String::new();
        }
        cut_before_line(&mut text, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (language, text before the cursor on its line, raw completion, expected).
    type Case = (Language, &'static str, &'static str, &'static str);

    /// Completions that open blocks, brackets and strings, and what is shown of them.
    const BLOCK_CASES: &[Case] = &[
        // The two examples: the block is closed at the opener's indentation.
        (
            Language::Rust,
            "        ",
            "if self.items.is_empty() {\n            self.items.pop();",
            "if self.items.is_empty() {\n            self.items.pop();\n        }",
        ),
        (
            Language::JavaScript,
            "  ",
            "if (value > high) {\n    return high;",
            "if (value > high) {\n    return high;\n  }",
        ),
        (
            Language::TypeScript,
            "  ",
            "for (const x of xs) {\n    total += x;\n",
            "for (const x of xs) {\n    total += x;\n  }",
        ),
        (Language::Tsx, "    ", "if (!ok) {\n      return <p/>;", "if (!ok) {\n      return <p/>;\n    }"),
        // Go indents with tabs: the closing line copies the opener's whitespace.
        (Language::Go, "\t", "for _, v := range xs {\n\t\tsum += v", "for _, v := range xs {\n\t\tsum += v\n\t}"),
        // Nested blocks close innermost first, each at its own indentation.
        (
            Language::Rust,
            "    ",
            "for x in xs {\n        if x > 0 {\n            n += 1;",
            "for x in xs {\n        if x > 0 {\n            n += 1;\n        }\n    }",
        ),
        // An assignment or a call around the block needs the statement's end too.
        (Language::Rust, "    ", "let y = match x {\n        1 => 2,", "let y = match x {\n        1 => 2,\n    };"),
        (
            Language::JavaScript,
            "  ",
            "items.forEach((item) => {\n    total += item;",
            "items.forEach((item) => {\n    total += item;\n  });",
        ),
        (Language::Go, "\t", "go func() {\n\t\tdone <- true", "go func() {\n\t\tdone <- true\n\t}()"),
        (
            Language::Java,
            "        ",
            "for (int i = 0; i < n; i++) {\n            char c = '{';\n            sum += i;",
            "for (int i = 0; i < n; i++) {\n            char c = '{';\n            sum += i;\n        }",
        ),
        (
            Language::Java,
            "        ",
            "Runnable r = () -> {\n            run();",
            "Runnable r = () -> {\n            run();\n        };",
        ),
        (
            Language::JavaScript,
            "  ",
            "for (let i = 0; i < n; i++) {\n    sum += i;",
            "for (let i = 0; i < n; i++) {\n    sum += i;\n  }",
        ),
        (Language::C, "    ", "if (n > 0) {\n        /* { */ n--;", "if (n > 0) {\n        /* { */ n--;\n    }"),
        (
            Language::Cpp,
            "    ",
            "auto f = [&](int x) {\n        return x;",
            "auto f = [&](int x) {\n        return x;\n    };",
        ),
        // A block inside a call left open mid-arguments: cut at the unclosable line only.
        (Language::JavaScript, "  ", "let n = 0;\n  items.forEach((x) => {\n    foo(x,", "let n = 0;"),
        // A block without a body yet is cut before its opener.
        (Language::Rust, "    ", "let n = 1;\n    if n > 0 {", "let n = 1;"),
        (Language::JavaScript, "  ", "if (value > high) {", ""),
        (Language::Go, "\t", "x := 1\n\tfor {\n\n", "x := 1"),
        // A call or list left open mid-arguments is cut before its line.
        (Language::Rust, "    ", "let a = 1;\n    foo(a,\n        b,", "let a = 1;"),
        (Language::JavaScript, "  ", "const xs = [\n    1,\n    2,", ""),
        (Language::Python, "    ", "total = 0\n    print(total,\n          end=", "total = 0"),
        // Python: a block opener with nothing under it goes.
        (Language::Python, "    ", "x = 1\n    if x:", "x = 1"),
        (Language::Python, "    ", "for a in b:\n        if a:  # check", ""),
        (Language::Python, "    ", "if x:\n        return 1", "if x:\n        return 1"),
        // An unterminated string or docstring is cut before its start.
        (Language::Python, "    ", "x = 1\n    \"\"\"Doc\n    more", "x = 1"),
        (Language::Rust, "    ", "let a = 1;\n    /* note", "let a = 1;"),
        // Brackets inside strings, comments and char literals do not count.
        (Language::Rust, "    ", "let c = '{';\n    let s = \"(\"; // [", "let c = '{';\n    let s = \"(\"; // ["),
        (
            Language::Rust,
            "    ",
            "fn f<'a>(x: &'a str) {\n        x.len();",
            "fn f<'a>(x: &'a str) {\n        x.len();\n    }",
        ),
        (Language::Python, "    ", "s = '{'  # (\n    return s", "s = '{'  # (\n    return s"),
        // Closers of brackets opened before the completion are the cursor's business.
        (Language::Rust, "", "\n    x + 1\n}", "\n    x + 1\n}"),
        // Balanced text is left alone.
        (Language::Go, "\t", "if x {\n\t\treturn 1\n\t}\n\treturn 0", "if x {\n\t\treturn 1\n\t}\n\treturn 0"),
    ];

    #[test]
    fn blocks_the_completion_opened_are_closed_or_cut() {
        for (language, line_prefix, raw, expected) in BLOCK_CASES {
            assert_eq!(balance(raw, line_prefix, Some(*language)), *expected, "{language:?}: {raw:?}");
        }
    }

    #[test]
    fn a_block_opened_on_the_cursor_line_takes_its_indentation() {
        // The cursor after `match x ` on a line indented by 4: the completion opens the block on
        // the cursor's line.
        assert_eq!(
            balance("{\n        1 => 2,", "    let y = match x ", Some(Language::Rust)),
            "{\n        1 => 2,\n    };"
        );
    }
}
