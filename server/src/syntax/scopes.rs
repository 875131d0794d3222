//! Syntax queries over a parsed document: the function, method or class around a byte offset,
//! its signature and parameters, whether it already has documentation, and the file's imports.
//! Completion context, docstrings and test generation are all built on these.

use std::ops::Range;

use ropey::Rope;
use std::collections::HashMap;

use tree_sitter::{Node, QueryCursor, StreamingIterator, Tree};

use super::Language;
use super::languages::Blocks;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    Function,
    Method,
    Class,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Function => "function",
            ScopeKind::Method => "method",
            ScopeKind::Class => "class",
        }
    }
}

/// `*args`-style parameters, which docstrings and tests spell differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variadic {
    No,
    /// `*args`, `...rest`, `args ...T`
    Positional,
    /// `**kwargs`
    Keyword,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub annotation: Option<String>,
    pub default: Option<String>,
    pub variadic: Variadic,
}

/// A function, method or class, as the syntax tree describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub kind: ScopeKind,
    pub name: String,
    /// The definition node itself.
    pub range: Range<usize>,
    /// Where documentation attaches: includes decorators, attributes and `export`.
    pub anchor: Range<usize>,
    /// The body (block, declaration list, class body), when it has one.
    pub body: Option<Range<usize>>,
    /// The definition's header: from its start up to the body, whitespace-trimmed.
    pub signature: String,
    /// Parameters without the receiver (`self`, `cls`, `&self`, Go receivers).
    pub parameters: Vec<Parameter>,
    pub return_annotation: Option<String>,
    /// The existing docstring or doc comment, if any.
    pub doc: Option<Range<usize>>,
    pub is_async: bool,
}

fn text(rope: &Rope, node: Node) -> String {
    rope.byte_slice(node.start_byte()..node.end_byte()).to_string()
}

fn field_text(rope: &Rope, node: Node, field: &str) -> Option<String> {
    node.child_by_field_name(field).map(|child| text(rope, child))
}

/// The scopes the language's `scopes.scm` captures among the nodes that overlap `range`, by
/// node id. A node captured both as a function and as a method is a method.
fn scope_nodes(language: Language, tree: &Tree, range: Range<usize>) -> HashMap<usize, (Node<'_>, ScopeKind)> {
    let query = &language.queries().scopes;
    let mut cursor = QueryCursor::new();
    cursor.set_byte_range(range);
    let mut found: HashMap<usize, (Node, ScopeKind)> = HashMap::new();
    // No predicates: the query never reads the text.
    let mut matches = cursor.matches(query, tree.root_node(), &[] as &[u8]);
    while let Some(matched) = matches.next() {
        for capture in matched.captures() {
            let kind = match query.capture_names()[capture.index as usize] {
                "function" => ScopeKind::Function,
                "method" => ScopeKind::Method,
                _ => ScopeKind::Class,
            };
            let entry = found.entry(capture.node.id()).or_insert((capture.node, kind));
            if kind == ScopeKind::Method {
                entry.1 = kind;
            }
        }
    }
    found
}

/// The scopes among the nodes around `byte` (ending at it or starting after it).
fn scope_nodes_around(language: Language, tree: &Tree, byte: usize) -> HashMap<usize, (Node<'_>, ScopeKind)> {
    scope_nodes(language, tree, byte.saturating_sub(1)..byte + 1)
}

/// The node documentation attaches to: decorators, `export`, a `const` declaration.
fn anchor_node(language: Language, node: Node) -> Node {
    let mut anchor = node;
    match language {
        Language::Python => {
            if let Some(parent) = node.parent().filter(|p| p.kind() == "decorated_definition") {
                anchor = parent;
            }
        }
        Language::JavaScript | Language::TypeScript | Language::Tsx => {
            if node.kind() == "variable_declarator"
                && let Some(declaration) =
                    node.parent().filter(|p| matches!(p.kind(), "lexical_declaration" | "variable_declaration"))
            {
                anchor = declaration;
            }
            if let Some(export) = anchor.parent().filter(|p| p.kind() == "export_statement") {
                anchor = export;
            }
        }
        Language::Go => {
            if node.kind() == "type_spec"
                && let Some(declaration) = node.parent().filter(|p| p.kind() == "type_declaration")
            {
                anchor = declaration;
            }
        }
        // A C++ template's comment sits above `template <...>`.
        Language::Cpp => {
            if let Some(template) = node.parent().filter(|p| p.kind() == "template_declaration") {
                anchor = template;
            }
        }
        // Java's annotations are part of the declaration (its `modifiers`).
        Language::Rust | Language::Java | Language::C => {}
    }
    anchor
}

fn body_node(language: Language, node: Node) -> Option<Node> {
    match language {
        Language::JavaScript | Language::TypeScript | Language::Tsx if node.kind() == "variable_declarator" => {
            node.child_by_field_name("value").and_then(|value| value.child_by_field_name("body"))
        }
        Language::Go if node.kind() == "type_spec" => node.child_by_field_name("type"),
        Language::Rust if node.kind() == "impl_item" => node.child_by_field_name("body"),
        Language::Python
        | Language::Rust
        | Language::JavaScript
        | Language::TypeScript
        | Language::Tsx
        | Language::Go
        | Language::Java
        | Language::C
        | Language::Cpp => node.child_by_field_name("body"),
    }
}

fn scope_name(language: Language, rope: &Rope, node: Node) -> String {
    let name = match (language, node.kind()) {
        (Language::Rust, "impl_item") => {
            let type_name = field_text(rope, node, "type");
            match field_text(rope, node, "trait") {
                Some(trait_name) => type_name.map(|t| format!("{trait_name} for {t}")),
                None => type_name,
            }
        }
        (Language::C | Language::Cpp, "function_definition") => {
            function_declarator(node).and_then(|declarator| field_text(rope, declarator, "declarator"))
        }
        _ => field_text(rope, node, "name"),
    };
    name.unwrap_or_default()
}

fn is_async(language: Language, rope: &Rope, node: Node) -> bool {
    let header_end = body_node(language, node).map_or(node.end_byte(), |body| body.start_byte());
    let node = match (language, node.kind()) {
        (Language::JavaScript | Language::TypeScript | Language::Tsx, "variable_declarator") => {
            match node.child_by_field_name("value") {
                Some(value) => value,
                None => return false,
            }
        }
        _ => node,
    };
    let mut cursor = node.walk();

    node.children(&mut cursor).take_while(|child| child.start_byte() < header_end).any(|child| {
        child.kind() == "async" || (child.kind() == "function_modifiers" && text(rope, child).contains("async"))
    })
}

fn parameters_node(language: Language, node: Node) -> Option<Node> {
    match language {
        Language::JavaScript | Language::TypeScript | Language::Tsx if node.kind() == "variable_declarator" => {
            let value = node.child_by_field_name("value")?;
            // `x => x` has a single `parameter` field instead of a parameter list.
            value.child_by_field_name("parameters").or_else(|| value.child_by_field_name("parameter"))
        }
        Language::C | Language::Cpp if node.kind() == "function_definition" => {
            function_declarator(node)?.child_by_field_name("parameters")
        }
        Language::Python
        | Language::Rust
        | Language::JavaScript
        | Language::TypeScript
        | Language::Tsx
        | Language::Go
        | Language::Java
        | Language::C
        | Language::Cpp => node.child_by_field_name("parameters"),
    }
}

/// A C or C++ function definition's `function_declarator` (name and parameters), under the
/// pointer and reference declarators of its return type (`char *name(void)`).
fn function_declarator(definition: Node) -> Option<Node> {
    let mut declarator = definition.child_by_field_name("declarator")?;
    while declarator.kind() != "function_declarator" {
        declarator = declarator.child_by_field_name("declarator").or_else(|| declarator.named_child(0))?;
    }
    Some(declarator)
}

fn parameters(language: Language, rope: &Rope, node: Node, kind: ScopeKind) -> Vec<Parameter> {
    let Some(list) = parameters_node(language, node) else {
        return Vec::new();
    };
    if list.kind() == "identifier" {
        return vec![Parameter { name: text(rope, list), annotation: None, default: None, variadic: Variadic::No }];
    }
    let mut result = Vec::new();
    let mut cursor = list.walk();
    for child in list.named_children(&mut cursor) {
        match language {
            Language::Python => python_parameter(rope, child, &mut result),
            Language::Rust => rust_parameter(rope, child, &mut result),
            Language::JavaScript | Language::TypeScript | Language::Tsx => js_parameter(rope, child, &mut result),
            Language::Go => go_parameter(rope, child, &mut result),
            Language::Java => java_parameter(rope, child, &mut result),
            Language::C | Language::Cpp => c_parameter(rope, child, &mut result),
        }
    }
    // The receiver is implicit: docstrings and tests never list it. Only Python spells it
    // as an ordinary first parameter.
    let explicit_receiver = match language {
        Language::Python => result.first().is_some_and(|p| p.name == "self" || p.name == "cls"),
        Language::Rust
        | Language::JavaScript
        | Language::TypeScript
        | Language::Tsx
        | Language::Go
        | Language::Java
        | Language::C
        | Language::Cpp => false,
    };
    if explicit_receiver && kind == ScopeKind::Method {
        result.remove(0);
    }
    result
}

fn python_parameter(rope: &Rope, node: Node, out: &mut Vec<Parameter>) {
    let first_identifier = |n: Node| {
        let mut cursor = n.walk();

        n.named_children(&mut cursor).find(|c| c.kind() == "identifier").map(|c| text(rope, c))
    };
    let (name, variadic) = match node.kind() {
        "identifier" => (Some(text(rope, node)), Variadic::No),
        "list_splat_pattern" => (first_identifier(node), Variadic::Positional),
        "dictionary_splat_pattern" => (first_identifier(node), Variadic::Keyword),
        "typed_parameter" => {
            let mut cursor = node.walk();
            let inner = node.named_children(&mut cursor).next();
            match inner.map(|n| n.kind()) {
                Some("list_splat_pattern") => (inner.and_then(first_identifier), Variadic::Positional),
                Some("dictionary_splat_pattern") => (inner.and_then(first_identifier), Variadic::Keyword),
                _ => (first_identifier(node), Variadic::No),
            }
        }
        "default_parameter" | "typed_default_parameter" => (field_text(rope, node, "name"), Variadic::No),
        // `*`, `/` separators carry no name.
        _ => (None, Variadic::No),
    };
    if let Some(name) = name {
        out.push(Parameter {
            name,
            annotation: field_text(rope, node, "type"),
            default: field_text(rope, node, "value"),
            variadic,
        });
    }
}

fn rust_parameter(rope: &Rope, node: Node, out: &mut Vec<Parameter>) {
    match node.kind() {
        "parameter" => out.push(Parameter {
            name: field_text(rope, node, "pattern").unwrap_or_default(),
            annotation: field_text(rope, node, "type"),
            default: None,
            variadic: Variadic::No,
        }),
        "variadic_parameter" => out.push(Parameter {
            name: field_text(rope, node, "pattern").unwrap_or_else(|| "...".to_string()),
            annotation: None,
            default: None,
            variadic: Variadic::Positional,
        }),
        _ => {} // self_parameter, attributes
    }
}

fn js_parameter(rope: &Rope, node: Node, out: &mut Vec<Parameter>) {
    let (name, annotation, default, variadic) = match node.kind() {
        "identifier" | "object_pattern" | "array_pattern" => (text(rope, node), None, None, Variadic::No),
        "assignment_pattern" => {
            (field_text(rope, node, "left").unwrap_or_default(), None, field_text(rope, node, "right"), Variadic::No)
        }
        "rest_pattern" => {
            let name = text(rope, node).trim_start_matches("...").to_string();
            (name, None, None, Variadic::Positional)
        }
        "required_parameter" | "optional_parameter" => {
            let pattern = node.child_by_field_name("pattern");
            let variadic = pattern.is_some_and(|p| p.kind() == "rest_pattern");
            let name = pattern.map(|p| text(rope, p).trim_start_matches("...").to_string()).unwrap_or_default();
            if name == "this" {
                return;
            }
            let annotation = field_text(rope, node, "type").map(|t| t.trim_start_matches(':').trim().to_string());
            let variadic = if variadic { Variadic::Positional } else { Variadic::No };
            (name, annotation, field_text(rope, node, "value"), variadic)
        }
        _ => return,
    };
    out.push(Parameter { name, annotation, default, variadic });
}

fn go_parameter(rope: &Rope, node: Node, out: &mut Vec<Parameter>) {
    let variadic = match node.kind() {
        "parameter_declaration" => Variadic::No,
        "variadic_parameter_declaration" => Variadic::Positional,
        _ => return,
    };
    let annotation = field_text(rope, node, "type");
    let mut cursor = node.walk();
    for name in node.children_by_field_name("name", &mut cursor) {
        out.push(Parameter { name: text(rope, name), annotation: annotation.clone(), default: None, variadic });
    }
}

fn java_parameter(rope: &Rope, node: Node, out: &mut Vec<Parameter>) {
    let (name, variadic) = match node.kind() {
        "formal_parameter" => (field_text(rope, node, "name"), Variadic::No),
        // `String... rest`: the name sits in a variable declarator.
        "spread_parameter" => {
            let mut cursor = node.walk();
            let declarator = node.named_children(&mut cursor).find(|child| child.kind() == "variable_declarator");
            (declarator.and_then(|d| field_text(rope, d, "name")), Variadic::Positional)
        }
        _ => (None, Variadic::No), // receiver parameters, comments
    };
    let annotation = match node.kind() {
        "spread_parameter" => node.named_child(0).map(|type_node| text(rope, type_node)),
        _ => field_text(rope, node, "type"),
    };
    if let Some(name) = name {
        out.push(Parameter { name, annotation, default: None, variadic });
    }
}

fn c_parameter(rope: &Rope, node: Node, out: &mut Vec<Parameter>) {
    match node.kind() {
        "parameter_declaration" | "optional_parameter_declaration" => {
            // `const char *name`, `int name[]`, `std::string &name`: the name is the
            // declarator's innermost identifier. `(void)` declares none.
            let Some(declarator) = node.child_by_field_name("declarator") else { return };
            let Some(identifier) = innermost_identifier(declarator) else { return };
            // The type is the declaration without its name: `const char *`, `std::string &`.
            let before = rope.byte_slice(node.start_byte()..identifier.start_byte()).to_string();
            let after = rope.byte_slice(identifier.end_byte()..declarator.end_byte()).to_string();
            out.push(Parameter {
                name: text(rope, identifier),
                annotation: Some(format!("{}{}", before.trim_end(), after.trim()).trim().to_string()),
                default: field_text(rope, node, "default_value"),
                variadic: Variadic::No,
            });
        }
        "variadic_parameter" | "variadic_parameter_declaration" => out.push(Parameter {
            name: "...".to_string(),
            annotation: None,
            default: None,
            variadic: Variadic::Positional,
        }),
        _ => {}
    }
}

/// The first identifier in `node`'s subtree (itself included), depth first.
fn innermost_identifier(node: Node) -> Option<Node> {
    if node.kind() == "identifier" {
        return Some(node);
    }
    let mut cursor = node.walk();
    let children: Vec<Node> = node.named_children(&mut cursor).collect();
    children.into_iter().find_map(innermost_identifier)
}

/// A C or C++ function's return type as written: qualifiers, type and the declarator's `*`
/// or `&` (`const char *`), without storage classes (`static`).
fn c_return_type(rope: &Rope, definition: Node) -> Option<String> {
    let type_node = definition.child_by_field_name("type")?;
    let mut cursor = definition.walk();
    let start = definition
        .children(&mut cursor)
        .filter(|child| child.kind() == "type_qualifier")
        .map(|qualifier| qualifier.start_byte())
        .fold(type_node.start_byte(), usize::min);
    let end = function_declarator(definition)?.start_byte();
    Some(rope.byte_slice(start..end).to_string().trim().to_string())
}

fn return_annotation(language: Language, rope: &Rope, node: Node) -> Option<String> {
    let node = match node.kind() {
        "variable_declarator" => node.child_by_field_name("value")?,
        _ => node,
    };
    let field = match language {
        Language::C | Language::Cpp if node.kind() == "function_definition" => return c_return_type(rope, node),
        Language::Go => "result",
        Language::Java | Language::C | Language::Cpp => "type",
        Language::Python | Language::Rust | Language::JavaScript | Language::TypeScript | Language::Tsx => {
            "return_type"
        }
    };
    field_text(rope, node, field).map(|t| t.trim_start_matches(':').trim().to_string())
}

/// The existing docstring or doc comment, as the language's `docs.scm` recognises it: the
/// first statement of the body where documentation goes there (a Python docstring), else the
/// documentation directly above the anchor, over what may sit in between (Rust attributes).
fn existing_doc(language: Language, rope: &Rope, node: Node, anchor: Node) -> Option<Range<usize>> {
    let first_in_body = body_node(language, node).and_then(|body| body.named_child(0));
    if let Some(first) = first_in_body
        && doc_role(language, rope, first) == Some(DocRole::FirstInBody)
    {
        return Some(first.byte_range());
    }
    let mut previous = anchor.prev_sibling();
    while let Some(sibling) = previous {
        match doc_role(language, rope, sibling)? {
            DocRole::Above { adjacent } => {
                let attached = !adjacent || sibling.end_position().row + 1 >= anchor.start_position().row;
                return attached.then(|| sibling.byte_range());
            }
            DocRole::Between => previous = sibling.prev_sibling(),
            DocRole::FirstInBody => return None,
        }
    }
    None
}

/// What a node is to documentation, per the language's `docs.scm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DocRole {
    /// Documentation above an item; `adjacent`: only on the line directly above it.
    Above { adjacent: bool },
    /// Documentation as the first statement of the item's body.
    FirstInBody,
    /// May sit between documentation above an item and the item.
    Between,
}

/// `node`'s role, from the `docs.scm` patterns that match the node itself.
fn doc_role(language: Language, rope: &Rope, node: Node) -> Option<DocRole> {
    let query = &language.queries().docs;
    let mut cursor = QueryCursor::new();
    cursor.set_max_start_depth(Some(0));
    let node_text = |node: Node| rope.byte_slice(node.byte_range()).chunks().map(str::as_bytes);
    let mut matches = cursor.matches(query, node, node_text);
    let mut role = None;
    while let Some(matched) = matches.next() {
        let Some(capture) = matched.captures().iter().find(|capture| capture.node.id() == node.id()) else { continue };
        if query.capture_names()[capture.index as usize] != "doc" {
            role = Some(DocRole::Between);
            continue;
        }
        let setting =
            |key: &str| query.property_settings(matched.pattern_index).iter().find(|property| &*property.key == key);
        let place = setting("place").and_then(|property| property.value.as_deref());
        return Some(match place {
            Some("body") => DocRole::FirstInBody,
            _ => DocRole::Above { adjacent: setting("adjacent").is_some() },
        });
    }
    role
}

fn describe(language: Language, rope: &Rope, node: Node, kind: ScopeKind) -> Scope {
    let anchor = anchor_node(language, node);
    let body = body_node(language, node);
    let header_end = body.map_or(node.end_byte(), |b| b.start_byte());
    let signature = rope
        .byte_slice(node.start_byte()..header_end)
        .to_string()
        .trim()
        .trim_end_matches(['{', ':'])
        .trim_end()
        .to_string();
    Scope {
        kind,
        name: scope_name(language, rope, node),
        range: node.byte_range(),
        anchor: anchor.byte_range(),
        body: body.map(|b| b.byte_range()),
        signature,
        parameters: parameters(language, rope, node, kind),
        return_annotation: return_annotation(language, rope, node),
        doc: existing_doc(language, rope, node, anchor),
        is_async: is_async(language, rope, node),
    }
}

/// The innermost of `scopes` whose range holds `byte` (start ≤ byte ≤ end, so a cursor at the
/// very end of the last line of a body is still inside).
fn innermost_containing<'tree>(
    scopes: &HashMap<usize, (Node<'tree>, ScopeKind)>,
    tree: &'tree Tree,
    byte: usize,
) -> Option<(Node<'tree>, ScopeKind)> {
    let mut found = None;
    let mut node = tree.root_node();
    'descend: loop {
        let mut cursor = node.walk();
        for child in node.children(&mut cursor) {
            if child.start_byte() <= byte && byte <= child.end_byte() && child.end_byte() > child.start_byte() {
                if let Some(scope) = scopes.get(&child.id()) {
                    found = Some(*scope);
                }
                node = child;
                continue 'descend;
            }
        }
        return found;
    }
}

/// Python blocks end at their last statement, so a cursor on a blank line below it, indented
/// deeper than the `def`, is still inside: that is where a user types the next line of a body.
fn python_scope_by_indentation<'tree>(tree: &'tree Tree, rope: &Rope, byte: usize) -> Option<(Node<'tree>, ScopeKind)> {
    let line = rope.byte_to_line(byte);
    let line_start = rope.line_to_byte(line);
    let before_cursor = rope.byte_slice(line_start..byte).to_string();
    if !before_cursor.chars().all(|c| c == ' ' || c == '\t') {
        return None;
    }
    let cursor_column = before_cursor.len();
    // The last non-blank line above the cursor.
    let previous = (0..line).rev().find(|&l| !rope.line(l).chars().all(char::is_whitespace))?;
    let previous_end = rope.line_to_byte(previous) + rope.line(previous).to_string().trim_end().len();
    let last_byte = previous_end.saturating_sub(1);
    let scopes = scope_nodes_around(Language::Python, tree, last_byte);
    let (mut node, mut kind) = innermost_containing(&scopes, tree, last_byte)?;
    loop {
        let anchor = anchor_node(Language::Python, node);
        if anchor.start_position().column < cursor_column {
            return Some((node, kind));
        }
        let mut parent = anchor.parent();
        let outer = loop {
            let candidate = parent?;
            if let Some(outer) = scopes.get(&candidate.id()) {
                break *outer;
            }
            parent = candidate.parent();
        };
        (node, kind) = outer;
    }
}

/// The innermost function, method or class around `byte`.
pub fn scope_at(language: Language, tree: &Tree, rope: &Rope, byte: usize) -> Option<Scope> {
    let byte = byte.min(rope.len_bytes());
    let mut found = innermost_containing(&scope_nodes_around(language, tree, byte), tree, byte);
    if let Blocks::Indentation = language.spec().blocks
        && let Some(by_indent) = python_scope_by_indentation(tree, rope, byte)
    {
        // Prefer the deeper of the two.
        let deeper = found.is_none_or(|(node, _)| {
            by_indent.0.start_byte() >= node.start_byte() && by_indent.0.end_byte() <= node.end_byte()
        });
        if deeper {
            found = Some(by_indent);
        }
    }
    found.map(|(node, kind)| describe(language, rope, node, kind))
}

/// The functions, methods and classes whose node holds `byte` (its end included), outer first.
pub fn scopes_around(language: Language, tree: &Tree, rope: &Rope, byte: usize) -> Vec<Scope> {
    let mut found: Vec<(Node, ScopeKind)> = scope_nodes_around(language, tree, byte)
        .into_values()
        .filter(|(node, _)| node.start_byte() <= byte && byte <= node.end_byte())
        .collect();
    found.sort_by_key(|(node, _)| (node.start_byte(), std::cmp::Reverse(node.end_byte())));
    found.into_iter().map(|(node, kind)| describe(language, rope, node, kind)).collect()
}

/// Every function, method and class in the file, in document order (outer before inner).
pub fn all_scopes(language: Language, tree: &Tree, rope: &Rope) -> Vec<Scope> {
    let mut scopes: Vec<(Node, ScopeKind)> = scope_nodes(language, tree, 0..usize::MAX).into_values().collect();
    scopes.sort_by_key(|(node, _)| (node.start_byte(), std::cmp::Reverse(node.end_byte())));
    scopes.into_iter().map(|(node, kind)| describe(language, rope, node, kind)).collect()
}

/// The file's top-level import statements (the language's `imports.scm`), in document order.
pub fn imports(language: Language, tree: &Tree) -> Vec<Range<usize>> {
    let query = &language.queries().imports;
    let root = tree.root_node();
    let mut cursor = QueryCursor::new();
    // Only the root's children are kept: the cursor need not walk the rest of the tree (in a
    // 10k-line file that walk took tens of milliseconds per completion).
    cursor.set_max_start_depth(Some(1));
    let mut matches = cursor.matches(query, root, &[] as &[u8]);
    let mut found = Vec::new();
    while let Some(matched) = matches.next() {
        let statements = matched.captures().iter().map(|capture| capture.node);
        found.extend(statements.filter(|node| node.parent() == Some(root)).map(without_line_end));
    }
    found.sort_by_key(|range| range.start);
    found.dedup();
    found
}

/// A statement's range without the line end some grammars make part of it (`#include`).
fn without_line_end(node: Node) -> Range<usize> {
    let ends_a_line = node.end_position().column == 0 && node.end_position().row > node.start_position().row;
    let last = node.named_child(node.named_child_count().saturating_sub(1) as _);
    let end = last.filter(|_| ends_a_line).map_or(node.end_byte(), |last| last.end_byte());
    node.start_byte()..end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parse;

    /// Parses `source` with a `$0` cursor marker and returns the scope there.
    fn scope(language: Language, source: &str) -> Option<(Scope, String)> {
        let byte = source.find("$0").expect("cursor marker");
        let text = source.replacen("$0", "", 1);
        let rope = Rope::from_str(&text);
        let tree = parse(&mut language.parser(), &rope, None).unwrap();
        scope_at(language, &tree, &rope, byte).map(|s| (s, text))
    }

    fn summary(language: Language, source: &str) -> String {
        match scope(language, source) {
            None => "none".to_string(),
            Some((s, text)) => {
                let params: Vec<String> = s
                    .parameters
                    .iter()
                    .map(|p| {
                        let stars = match p.variadic {
                            Variadic::No => "",
                            Variadic::Positional => "*",
                            Variadic::Keyword => "**",
                        };
                        match &p.annotation {
                            Some(a) => format!("{stars}{}: {a}", p.name),
                            None => format!("{stars}{}", p.name),
                        }
                    })
                    .collect();
                format!(
                    "{} {} ({}) -> {:?} | sig: {} | doc: {} | async: {}",
                    s.kind.as_str(),
                    s.name,
                    params.join(", "),
                    s.return_annotation,
                    s.signature,
                    s.doc.map_or("none".to_string(), |r| text[r].to_string()),
                    s.is_async
                )
            }
        }
    }

    #[test]
    fn python_scopes() {
        let py = Language::Python;
        let src = "class Cart:\n    def add(self, item: str, qty: int = 1, *rest, **opts) -> None:\n        self.items.append(item)$0\n";
        expect_test::expect![[r#"method add (item: str, qty: int, *rest, **opts) -> Some("None") | sig: def add(self, item: str, qty: int = 1, *rest, **opts) -> None | doc: none | async: false"#]]
            .assert_eq(&summary(py, src));
        // End-of-line pitfall: the cursor after the last character of a body.
        let src = "def f(x):\n    return x$0\n\nprint(1)\n";
        assert!(summary(py, src).starts_with("function f (x)"));
        // Blank line inside a body, below its last statement.
        let src = "class A:\n    def g(self):\n        y = 1\n\n        $0\n\nz = 2\n";
        assert!(summary(py, src).starts_with("method g ()"), "{}", summary(py, src));
        // Dedented back to class level.
        let src = "class A:\n    def g(self):\n        y = 1\n\n    $0\n";
        assert!(summary(py, src).starts_with("class A"), "{}", summary(py, src));
        let src = "x = 1$0\n";
        assert_eq!(summary(py, src), "none");
        let src = "@cache\nasync def fetch(url):\n    \"\"\"Fetch it.\"\"\"\n    return await get(url)$0\n";
        expect_test::expect![[
            r#"function fetch (url) -> None | sig: async def fetch(url) | doc: """Fetch it.""" | async: true"#
        ]]
        .assert_eq(&summary(py, src));
    }

    #[test]
    fn rust_scopes() {
        let rs = Language::Rust;
        let src = "struct S;\nimpl S {\n    /// Doc.\n    #[inline]\n    pub async fn go(&self, a: u8, b: &str) -> Result<(), E> {\n        $0\n    }\n}\n";
        expect_test::expect![[r#"method go (a: u8, b: &str) -> Some("Result<(), E>") | sig: pub async fn go(&self, a: u8, b: &str) -> Result<(), E> | doc: /// Doc.
 | async: true"#]]
        .assert_eq(&summary(rs, src));
        let src = "fn free(x: i32) -> i32 { x$0 }\n";
        assert!(summary(rs, src).starts_with("function free (x: i32)"));
    }

    #[test]
    fn javascript_and_typescript_scopes() {
        let src = "/** Adds. */\nexport function add(a, b = 2, ...rest) { return a$0 + b; }\n";
        expect_test::expect![[r#"function add (a, b, *rest) -> None | sig: function add(a, b = 2, ...rest) | doc: /** Adds. */ | async: false"#]]
            .assert_eq(&summary(Language::JavaScript, src));
        let src = "const mul = async (x: number, y?: number): Promise<number> => {\n  return x$0 * y;\n};\n";
        expect_test::expect![[r#"function mul (x: number, y: number) -> Some("Promise<number>") | sig: mul = async (x: number, y?: number): Promise<number> => | doc: none | async: true"#]]
            .assert_eq(&summary(Language::TypeScript, src));
        let src = "class K {\n  run(n: number) {\n    $0\n  }\n}\n";
        assert!(summary(Language::Tsx, src).starts_with("method run (n: number)"));
    }

    #[test]
    fn go_scopes() {
        let src = "package p\n\n// Sum adds.\nfunc (r *R) Sum(a, b int, rest ...int) int {\n\treturn a$0\n}\n";
        expect_test::expect![[r#"method Sum (a: int, b: int, *rest: int) -> Some("int") | sig: func (r *R) Sum(a, b int, rest ...int) int | doc: // Sum adds. | async: false"#]]
            .assert_eq(&summary(Language::Go, src));
    }

    /// Java, C and C++: kind, name, parameters, return type, signature, existing doc.
    #[test]
    fn java_c_and_cpp_scopes() {
        let cases: &[(Language, &str)] = &[
            (
                Language::Java,
                "class Cart {\n    /** Adds. */\n    @Override\n    public int add(String item, int... counts) throws IOException {\n        return 1$0;\n    }\n}\n",
            ),
            (Language::Java, "public class Cart {\n    Cart(int size) {\n        $0\n    }\n}\n"),
            (Language::Java, "/** A cart. */\nrecord Cart(int size) {$0}\n"),
            (
                Language::C,
                "/** Sums. */\nstatic const char *name_of(const struct item *item, int count, ...) {\n    return item->name$0;\n}\n",
            ),
            (Language::C, "int main(void) {\n    return 0$0;\n}\n"),
            (Language::C, "struct point {\n    int x;$0\n};\n"),
            (
                Language::Cpp,
                "/// A cart.\nclass Cart {\n  public:\n    /// Adds.\n    template <typename T>\n    int add(const std::string &item, int count = 1) {\n        return count$0;\n    }\n};\n",
            ),
            (Language::Cpp, "/// Totals.\nint Cart::total() const {\n    return 0$0;\n}\n"),
        ];
        let summaries: Vec<String> =
            cases.iter().map(|(language, source)| format!("{language:?}: {}", summary(*language, source))).collect();
        expect_test::expect![[r#"
            Java: method add (item: String, *counts: int) -> Some("int") | sig: @Override
                public int add(String item, int... counts) throws IOException | doc: /** Adds. */ | async: false
            Java: method Cart (size: int) -> None | sig: Cart(int size) | doc: none | async: false
            Java: class Cart (size: int) -> None | sig: record Cart(int size) | doc: /** A cart. */ | async: false
            C: function name_of (item: const struct item *, count: int, *...) -> Some("const char *") | sig: static const char *name_of(const struct item *item, int count, ...) | doc: /** Sums. */ | async: false
            C: function main () -> Some("int") | sig: int main(void) | doc: none | async: false
            C: class point () -> None | sig: struct point | doc: none | async: false
            Cpp: method add (item: const std::string &, count: int) -> Some("int") | sig: int add(const std::string &item, int count = 1) | doc: /// Adds. | async: false
            Cpp: function Cart::total () -> Some("int") | sig: int Cart::total() const | doc: /// Totals. | async: false"#]].assert_eq(&summaries.join("\n"));
    }

    #[test]
    fn java_c_and_cpp_imports_and_methods() {
        let cases: &[(Language, &str, &[&str], &[&str])] = &[
            (
                Language::Java,
                "package p;\nimport java.util.List;\nimport static java.lang.Math.max;\nclass A {\n    interface B { void run(); }\n    int f() { return 1; }\n}\n",
                &["import java.util.List;", "import static java.lang.Math.max;"],
                &["class A", "class B", "method run", "method f"],
            ),
            (
                Language::C,
                "#include <stdio.h>\n#include \"cart.h\"\nstruct s { int x; };\nint f(void) { return 0; }\n",
                &["#include <stdio.h>", "#include \"cart.h\""],
                &["class s", "function f"],
            ),
            (
                Language::Cpp,
                "#include <string>\nusing std::string;\nnamespace n {\nclass C {\n    int get() const { return 1; }\n};\n}\n",
                &["#include <string>", "using std::string;"],
                &["class C", "method get"],
            ),
        ];
        for (language, text, expected_imports, expected_scopes) in cases {
            let rope = Rope::from_str(text);
            let tree = parse(&mut language.parser(), &rope, None).unwrap();
            let found: Vec<&str> = imports(*language, &tree).into_iter().map(|r| &text[r]).collect();
            assert_eq!(found, *expected_imports, "{language:?}");
            let names: Vec<String> = all_scopes(*language, &tree, &rope)
                .into_iter()
                .map(|s| format!("{} {}", s.kind.as_str(), s.name))
                .collect();
            assert_eq!(names, *expected_scopes, "{language:?}");
        }
    }

    #[test]
    fn imports_and_all_scopes() {
        let text =
            "import os\nfrom a import b\n\ndef f():\n    import json\n\nclass C:\n    def m(self):\n        pass\n";
        let rope = Rope::from_str(text);
        let tree = parse(&mut Language::Python.parser(), &rope, None).unwrap();
        let imports: Vec<&str> = imports(Language::Python, &tree).into_iter().map(|r| &text[r]).collect();
        assert_eq!(imports, ["import os", "from a import b"]);
        let names: Vec<String> = all_scopes(Language::Python, &tree, &rope)
            .into_iter()
            .map(|s| format!("{} {}", s.kind.as_str(), s.name))
            .collect();
        assert_eq!(names, ["function f", "class C", "method m"]);
    }

    /// Which documentation each language recognises, and where: the docstring first in a
    /// Python body, doc comments right above the item (over Rust attributes, a `#[doc]`
    /// attribute itself), Go comments only on the line directly above; plain comments are not
    /// documentation.
    #[test]
    fn existing_documentation_per_language() {
        let table: &[(Language, &str)] = &[
            (Language::Python, "def f():\n    \"\"\"Doc.\"\"\"\n    return 1$0\n"),
            (Language::Python, "def f():\n    \"Doc \" \"joined.\"\n    return 1$0\n"),
            (Language::Python, "def f():\n    # A comment.\n    \"\"\"Not first.\"\"\"\n    return 1$0\n"),
            (Language::Python, "# Above.\ndef f():\n    return 1$0\n"),
            (Language::Python, "class C:\n    \"\"\"A class.\"\"\"\n    x = 1$0\n"),
            (Language::Rust, "/// Doc.\n#[inline]\n#[must_use]\nfn f() -> u8 {\n    1$0\n}\n"),
            (Language::Rust, "/** Block doc. */\nfn f() -> u8 {\n    1$0\n}\n"),
            (Language::Rust, "/// Outer.\n#[doc = \"Attribute.\"]\n#[inline]\nfn f() -> u8 {\n    1$0\n}\n"),
            (Language::Rust, "// Plain.\nfn f() -> u8 {\n    1$0\n}\n"),
            (Language::Rust, "/// Doc.\n\n\nfn f() -> u8 {\n    1$0\n}\n"),
            (Language::Go, "package m\n\n// F does.\nfunc F() int {\n\treturn 1$0\n}\n"),
            (Language::Go, "package m\n\n// Detached.\n\nfunc F() int {\n\treturn 1$0\n}\n"),
            (Language::JavaScript, "/** Doc. */\nexport function f() {\n  return 1;$0\n}\n"),
            (Language::JavaScript, "/* Plain. */\nfunction f() {\n  return 1;$0\n}\n"),
            (Language::TypeScript, "/** Doc. */\nconst f = (): number => {\n  return 1;$0\n};\n"),
            (
                Language::Java,
                "class A {\n    /** Doc. */\n    @Override\n    int f() {\n        return 1;$0\n    }\n}\n",
            ),
            (Language::Java, "class A {\n    // Plain.\n    int f() {\n        return 1;$0\n    }\n}\n"),
            (Language::C, "/*! Doc. */\nint f(void) {\n    return 1;$0\n}\n"),
            (Language::C, "//! Doc.\nint f(void) {\n    return 1;$0\n}\n"),
            (Language::C, "/* Plain. */\nint f(void) {\n    return 1;$0\n}\n"),
            (Language::Cpp, "/// Doc.\ntemplate <typename T>\nT f(T x) {\n    return x;$0\n}\n"),
        ];
        let found: Vec<String> = table
            .iter()
            .map(|(language, source)| {
                let (scope, text) = scope(*language, source).expect("a scope");
                format!("{language:?} {}: {:?}", scope.name, scope.doc.map(|range| &text[range]))
            })
            .collect();
        expect_test::expect![[r##"
            Python f: Some("\"\"\"Doc.\"\"\"")
            Python f: Some("\"Doc \" \"joined.\"")
            Python f: Some("\"\"\"Not first.\"\"\"")
            Python f: None
            Python C: Some("\"\"\"A class.\"\"\"")
            Rust f: Some("/// Doc.\n")
            Rust f: Some("/** Block doc. */")
            Rust f: Some("#[doc = \"Attribute.\"]")
            Rust f: None
            Rust f: Some("/// Doc.\n")
            Go F: Some("// F does.")
            Go F: None
            JavaScript f: Some("/** Doc. */")
            JavaScript f: None
            TypeScript f: Some("/** Doc. */")
            Java f: Some("/** Doc. */")
            Java f: None
            C f: Some("/*! Doc. */")
            C f: Some("//! Doc.")
            C f: None
            Cpp f: Some("/// Doc.")"##]]
        .assert_eq(&found.join("\n"));
    }
}
