//! The classes of the objects that the code near the cursor reaches by attribute, where the
//! file says so for certain: `self`/`this` inside a class (its base classes), `self.attr`
//! assigned a constructor call (or an annotated parameter) in the class, a local assigned a
//! constructor call, a parameter with a type annotation. Their method signatures are a
//! retrieval source: the names `obj.` chooses from, which a lookup by name cannot find.

use std::collections::HashSet;

use super::retrieve::{
    Cursor, Snippet, Texts, cut_line, defines_private_name, fit_lines, imported_modules, nearest_lines, resolve,
    shared_subwords,
};
use super::store::{FileId, Index};
use crate::syntax::scopes::{self, Scope, ScopeKind};

/// Type names that wrap the type whose methods are called (`Optional[Foo]`, `Box<Foo>`).
const WRAPPERS: &[&str] = &["Optional", "Box", "Arc", "Rc", "RefCell", "Mutex", "Final", "ClassVar", "Annotated"];
/// Containers and abstract types: a receiver of one of these is not an object of the project.
const NOT_CLASSES: &[&str] = &[
    "List", "Dict", "Set", "Tuple", "Type", "Callable", "Iterable", "Iterator", "Sequence", "Mapping", "Any", "Union",
    "Vec", "Option", "Result", "HashMap", "String", "Self", "None", "Array", "Map", "Promise", "Record", "Partial",
];
/// Receivers looked at per request, nearest first.
const MAX_RECEIVERS: usize = 6;

/// How the code names an object: `self`, `self.attr`, or a plain name.
#[derive(Debug, PartialEq, Eq)]
enum Receiver {
    This,
    Attribute(String),
    Local(String),
}

/// The receivers used by attribute near the cursor (`x.` `self.attr.` `self.`), nearest first.
fn receivers(cursor: &Cursor) -> Vec<Receiver> {
    let mut found: Vec<Receiver> = Vec::new();
    for number in nearest_lines(cursor) {
        let text = cursor.rope.line(number).to_string();
        // Right to left: `self.repo.` is about `self.repo` before it is about `self`.
        for (at, _) in text.rmatch_indices('.') {
            let before = &text[..at];
            let start = before.trim_end_matches(|c: char| c.is_alphanumeric() || c == '_' || c == '.').len();
            let chain: Vec<&str> = before[start..].split('.').collect();
            if chain.iter().any(|part| part.is_empty() || part.starts_with(|c: char| c.is_ascii_digit())) {
                continue;
            }
            let receiver = match chain.as_slice() {
                ["self" | "this"] => Receiver::This,
                ["self" | "this", attribute] => Receiver::Attribute(attribute.to_string()),
                [name] => Receiver::Local(name.to_string()),
                _ => continue,
            };
            if !found.contains(&receiver) {
                found.push(receiver);
            }
        }
    }
    found.truncate(MAX_RECEIVERS);
    found
}

/// The class an annotation names (`Foo`, `Optional[Foo]`, `"Foo"`, `&mut Foo`, `mod.Foo`,
/// `Foo | None`), when it names one certainly: a capitalised name that is not a container.
fn annotated_class(annotation: &str) -> Option<String> {
    let mut text = annotation.trim().trim_matches(|c| c == '"' || c == '\'');
    text = text.split('|').map(str::trim).find(|part| *part != "None" && *part != "null" && *part != "undefined")?;
    loop {
        text = text.trim_start_matches(['&', '*', ' ']).trim_start_matches("mut ").trim_start();
        let name_end = text.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).unwrap_or(text.len());
        let name = text[..name_end].rsplit('.').next().unwrap_or_default();
        let rest = &text[name_end..];
        if WRAPPERS.contains(&name) && rest.starts_with(['[', '<']) {
            text = rest[1..].trim_end_matches([']', '>']);
            continue;
        }
        let is_class = name.starts_with(|c: char| c.is_ascii_uppercase()) && !NOT_CLASSES.contains(&name);
        let plain = rest.trim().is_empty();
        return (is_class && plain).then(|| name.to_string());
    }
}

/// What the last assignment to `target` in `text` (`x = Foo(...)`, `x: Foo = ...`,
/// `const x = new Foo(...)`, `let x = Foo::new(...)`, `x := &Foo{...}`) makes it: the class, or
/// the plain name assigned (`self.config = config`), to be looked up as a parameter.
fn assigned(text: &str, target: &str) -> Option<Assigned> {
    let mut last = None;
    for (at, _) in text.match_indices(target) {
        let preceded = text[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
        let rest = &text[at + target.len()..];
        if preceded || rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let line = rest.split('\n').next().unwrap_or_default().trim_start();
        if let Some(annotation) = line.strip_prefix(':').filter(|after| !after.starts_with('=')) {
            let annotation = annotation.split(['=', ',', ')', ';']).next().unwrap_or_default();
            if let Some(class) = annotated_class(annotation) {
                last = Some(Assigned::Class(class));
                continue;
            }
        }
        let Some(value) = line.strip_prefix(":=").or_else(|| line.strip_prefix('=').filter(|v| !v.starts_with('=')))
        else {
            continue;
        };
        let value = value.trim_start();
        let value = value.strip_prefix("new ").or_else(|| value.strip_prefix('&')).unwrap_or(value).trim_start();
        let name_end = value.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).unwrap_or(value.len());
        let name = &value[..name_end];
        let after = &value[name_end..];
        let class = name.rsplit('.').next().unwrap_or_default();
        if class.starts_with(|c: char| c.is_ascii_uppercase()) && after.starts_with(['(', '{', ':']) {
            last = Some(Assigned::Class(class.to_string()));
        } else if !name.is_empty() && !name.contains('.') && after.trim().trim_end_matches(';').is_empty() {
            last = Some(Assigned::Name(name.to_string(), at));
        }
    }
    last
}

enum Assigned {
    Class(String),
    /// A plain name, and where the assignment is.
    Name(String, usize),
}

/// The annotated class of parameter `name` of `scope`.
fn parameter_class(scope: &Scope, name: &str) -> Option<String> {
    scope.parameters.iter().find(|parameter| parameter.name == name)?.annotation.as_deref().and_then(annotated_class)
}

/// The base classes a class signature names (`class A(Base, mod.Other):`, `class A extends B`).
fn base_classes(signature: &str) -> Vec<String> {
    let list = match (signature.find('('), signature.find(" extends ")) {
        (Some(open), _) => signature[open + 1..].split(')').next().unwrap_or_default(),
        (None, Some(at)) => signature[at + " extends ".len()..].split([' ', '{']).next().unwrap_or_default(),
        (None, None) => "",
    };
    list.split(',').filter(|base| !base.contains('=')).filter_map(annotated_class).collect()
}

/// The classes of the receivers near the cursor, nearest first, without repeats.
pub(super) fn receiver_classes(cursor: &Cursor) -> Vec<String> {
    let Some(tree) = cursor.tree else { return Vec::new() };
    let rope = cursor.rope;
    let at = cursor.cursor.min(rope.len_bytes());
    let receivers = receivers(cursor);
    if receivers.is_empty() {
        return Vec::new();
    }
    // Innermost last; the cursor at a scope's very end (`self.repo.|` as its last text) is in it.
    let around = scopes::scopes_around(cursor.language, tree, rope, at);
    let function = around.iter().rfind(|scope| matches!(scope.kind, ScopeKind::Function | ScopeKind::Method));
    let class = around.iter().rfind(|scope| scope.kind == ScopeKind::Class);
    let text = |range: std::ops::Range<usize>| rope.byte_slice(range).to_string();
    let mut classes: Vec<String> = Vec::new();
    for receiver in receivers {
        let found: Vec<String> = match receiver {
            Receiver::This => class.map(|class| base_classes(&class.signature)).unwrap_or_default(),
            Receiver::Local(name) => {
                let start = function.map_or(0, |function| function.range.start);
                let from_parameter = function.and_then(|function| parameter_class(function, &name));
                match assigned(&text(start..at), &name) {
                    Some(Assigned::Class(class)) => vec![class],
                    _ => from_parameter.into_iter().collect(),
                }
            }
            Receiver::Attribute(attribute) => {
                let Some(class) = class else { continue };
                let class_text = text(class.range.clone());
                let in_class = |offset: usize| class.range.start + offset;
                let resolved = ["self.", "this.", ""].iter().find_map(|owner| {
                    match assigned(&class_text, &format!("{owner}{attribute}"))? {
                        Assigned::Class(class) => Some(class),
                        Assigned::Name(name, offset) => {
                            scopes::scopes_around(cursor.language, tree, rope, in_class(offset))
                                .iter()
                                .rfind(|scope| scope.kind == ScopeKind::Method)
                                .and_then(|method| parameter_class(method, &name))
                        }
                    }
                });
                resolved.into_iter().collect()
            }
        };
        for class in found {
            if !classes.contains(&class) {
                classes.push(class);
            }
        }
    }
    classes
}

/// The method signatures of the classes of the receivers near the cursor, one snippet per
/// class: its first line, then each public method's first line as the file indents it (cut at
/// the member line length), in file order; where they do not all fit, those sharing word parts
/// with the code around the cursor first.
pub(super) fn methods(
    index: &Index,
    cursor: &Cursor,
    texts: &mut dyn Texts,
    budget: usize,
    taken: &[Snippet],
    query_subwords: &HashSet<String>,
) -> Vec<Snippet> {
    let current = cursor.path.and_then(|path| index.file_id(path));
    let modules = imported_modules(cursor);
    let mut snippets: Vec<Snippet> = Vec::new();
    let mut spent = 0;
    for name in receiver_classes(cursor) {
        let Some(term) = index.term(&name) else { continue };
        let Some(class) = resolve(index, index.definitions(term), current, &modules) else { continue };
        let Some(file) = index.file(class.file) else { continue };
        let Some(text) = texts.text(&file.path) else { continue };
        let Some(header) = text.get(class.bytes.start as usize..).and_then(|rest| rest.lines().next()) else {
            continue;
        };
        let shown = |line: u32| {
            taken.iter().chain(&snippets).any(|s| s.path == file.path && s.lines.contains(&(line as usize)))
        };
        let mut entries = class_methods(index, class.file, class.bytes.clone(), &text)
            .into_iter()
            .filter(|(line, _)| !shown(*line))
            .map(|(line, signature)| (shared_subwords(&signature, query_subwords), line, signature))
            .collect::<Vec<_>>();
        entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let room = budget.saturating_sub(spent + header.len() + 1);
        let (kept, size) = fit_lines(entries.into_iter().map(|(_, line, signature)| (line, signature)), room);
        if kept.is_empty() {
            continue;
        }
        spent += header.len() + 1 + size;
        let last = kept[kept.len() - 1].0 as usize;
        let lines = std::iter::once(cut_line(header.trim_end())).chain(kept.into_iter().map(|(_, line)| line));
        snippets.push(Snippet {
            kind: "methods",
            path: file.path.clone(),
            lines: class.line as usize..last + 1,
            detail: name,
            text: lines.collect::<Vec<_>>().join("\n"),
        });
    }
    snippets
}

/// The public methods defined inside `class` (bytes of `file`): (line, first line as indented).
fn class_methods(index: &Index, file: FileId, class: std::ops::Range<u32>, text: &str) -> Vec<(u32, String)> {
    let Some(entry) = index.file(file) else { return Vec::new() };
    let mut methods: Vec<(u32, String)> = entry
        .defined()
        .iter()
        .flat_map(|&term| index.definitions(term).iter().filter(|d| d.file == file))
        .filter(|d| d.bytes.start > class.start && d.bytes.end <= class.end)
        .filter_map(|d| {
            let line_start = text.get(..d.bytes.start as usize)?.rfind('\n').map_or(0, |at| at + 1);
            let line = text.get(line_start..)?.lines().next()?.trim_end();
            let first = line.trim_start();
            let is_method = !first.is_empty() && !defines_private_name(first) && first.contains('(');
            is_method.then(|| (d.line, cut_line(line)))
        })
        .collect();
    methods.sort();
    methods.dedup();
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_name_a_class_only_when_certain() {
        let cases = [
            ("Foo", Some("Foo")),
            ("Optional[Foo]", Some("Foo")),
            ("\"Foo\"", Some("Foo")),
            ("mod.Foo | None", Some("Foo")),
            ("&mut Parser", Some("Parser")),
            ("Box<Node>", Some("Node")),
            ("list[Foo]", None),
            ("List[Foo]", None),
            ("str", None),
            ("Callable[[], Foo]", None),
        ];
        for (annotation, class) in cases {
            assert_eq!(annotated_class(annotation).as_deref(), class, "{annotation}");
        }
    }

    #[test]
    fn assignments_give_the_class_of_the_last_constructor_call() {
        let class = |text: &str, target: &str| match assigned(text, target) {
            Some(Assigned::Class(class)) => Some(class),
            _ => None,
        };
        assert_eq!(class("x = Foo(1)\ny = x\n", "x").as_deref(), Some("Foo"));
        assert_eq!(class("x = Foo()\nx = bar.Baz()\n", "x").as_deref(), Some("Baz"));
        assert_eq!(class("const x = new Foo(1);", "x").as_deref(), Some("Foo"));
        assert_eq!(class("let x = Foo::new();", "x").as_deref(), Some("Foo"));
        assert_eq!(class("x := &Foo{a: 1}", "x").as_deref(), Some("Foo"));
        assert_eq!(class("x: Foo = make()", "x").as_deref(), Some("Foo"));
        assert_eq!(class("self.repo = Repo(path)", "self.repo").as_deref(), Some("Repo"));
        assert_eq!(class("x = foo(1)", "x"), None, "a function's result is not certain");
        assert_eq!(class("xx = Foo()\nx == Foo()", "x"), None);
        assert!(
            matches!(assigned("self.config = config\n", "self.config"), Some(Assigned::Name(name, 0)) if name == "config")
        );
    }

    #[test]
    fn base_classes_come_from_the_signature() {
        assert_eq!(base_classes("class A(Base, mod.Other, metaclass=Meta)"), ["Base", "Other"]);
        assert_eq!(base_classes("class A extends Base"), ["Base"]);
        assert!(base_classes("class A").is_empty());
    }
}
