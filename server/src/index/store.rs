//! The workspace index's data: per file, its chunks (tree-sitter top-level items, with line
//! windows where an item is too big) and their identifier counts for BM25, and a symbol table
//! of definitions by name (from the grammars' tags queries). Text is not kept: chunks and
//! definitions are byte ranges, read back from the file when retrieved; identifiers are kept as
//! 64-bit hashes, and a posting is 4 bytes (chunk id and count), which keeps memory to about
//! 4 bytes per distinct identifier per chunk plus 24 bytes per distinct identifier.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ropey::Rope;
use tree_sitter::{Parser, Query, QueryCursor, StreamingIterator, Tree};

use crate::syntax::{self, Language};

/// A top-level item longer than this is split into windows of this many lines.
pub(crate) const CHUNK_MAX_LINES: usize = 40;
/// Consecutive small items are grouped into one chunk up to this many lines.
const CHUNK_GROUP_LINES: usize = 24;
/// How deep in the tree definitions are looked for (module › class › body › decorated › def).
const DEFINITION_MAX_DEPTH: u32 = 5;
/// Identifiers shorter than this carry no meaning worth retrieving on (`i`, `x`).
const MIN_TERM_LENGTH: usize = 2;

pub(crate) type FileId = u32;
pub(crate) type TermId = u32;
/// A posting: the chunk id in the high 24 bits, the identifier's count in it (at most 255) in
/// the low 8.
pub(crate) type Posting = u32;

/// Chunk ids must fit a posting's 24 bits.
const MAX_CHUNKS: usize = 1 << 24;

pub(crate) fn posting_chunk(posting: Posting) -> u32 {
    posting >> 8
}

pub(crate) fn posting_count(posting: Posting) -> u16 {
    (posting & 0xff) as u16
}

/// FNV-1a: a stable hash standing for an identifier in the index.
pub(crate) fn term_hash(word: &str) -> u64 {
    word.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

/// A run of whole lines of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) file: FileId,
    pub(crate) bytes: Range<u32>,
    pub(crate) lines: Range<u32>,
    /// Identifier occurrences in the chunk (its BM25 length).
    pub(crate) length: u32,
}

/// A definition from the tags query: where its name is defined and its node's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Definition {
    pub(crate) file: FileId,
    pub(crate) bytes: Range<u32>,
    pub(crate) line: u32,
    /// Whether the definition starts a line (a module-level name, not a member).
    pub(crate) top_level: bool,
}

/// One indexed file.
#[derive(Clone, Debug)]
pub(crate) struct FileEntry {
    pub(crate) path: PathBuf,
    /// Ids of its chunks in `Index::chunks` (slots of removed files are reused).
    chunks: Vec<u32>,
    /// The names it defines.
    defined: Vec<TermId>,
    /// Every term in its chunks, once: the postings to clean when it is removed (sorted ids,
    /// as `encode_ids` packs them).
    terms: Vec<u8>,
}

/// A chunk as analysis finds it: bytes, lines, and identifier counts.
struct ChunkTerms {
    bytes: Range<usize>,
    lines: Range<usize>,
    terms: Vec<(u64, u16)>,
    /// Words in the chunk, keywords included.
    length: u32,
}

/// What analysing one file produced, before it is merged into the index.
pub(crate) struct Analysis {
    chunks: Vec<ChunkTerms>,
    /// Name, node bytes, line, whether it starts at column 0.
    definitions: Vec<(String, Range<usize>, usize, bool)>,
}

/// The index: files, chunks with BM25 postings, definitions by name.
#[derive(Default)]
pub(crate) struct Index {
    files: Vec<Option<FileEntry>>,
    file_ids: HashMap<PathBuf, FileId>,
    free_files: Vec<FileId>,
    chunks: Vec<Option<Chunk>>,
    free_chunks: Vec<u32>,
    /// Identifier hash → term id: ids in a table hashed by `term_hashes[id]` (4 bytes a slot
    /// where a map of hash to id takes 16).
    terms: hashbrown::HashTable<TermId>,
    /// Per term: its identifier's hash.
    term_hashes: Vec<u64>,
    /// Per term: its postings.
    postings: Vec<Vec<Posting>>,
    /// Per defined term: where it is defined.
    definitions: HashMap<TermId, Vec<Definition>>,
    live_chunks: usize,
    total_length: u64,
    /// Postings and definitions held, for the memory estimate.
    posting_entries: usize,
    definition_entries: usize,
}

/// Where analysis time goes, summed over files (`nib index` reports it).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Profile {
    pub(crate) files: usize,
    pub(crate) bytes: usize,
    pub(crate) read: Duration,
    pub(crate) parse: Duration,
    pub(crate) tags: Duration,
    pub(crate) terms: Duration,
}

impl Profile {
    pub(crate) fn add(&mut self, other: &Profile) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.read += other.read;
        self.parse += other.parse;
        self.tags += other.tags;
        self.terms += other.terms;
    }
}

/// What one analysing thread keeps between files: a parser per language (a parser's stacks
/// are reused across parses) and the tags queries, compiled once per language.
pub(crate) struct Analyzer {
    compiled: HashMap<Language, Option<Query>>,
    /// Per language: the hashes of its keywords, which are not indexed.
    keywords: HashMap<Language, std::collections::HashSet<u64>>,
    parsers: HashMap<Language, Parser>,
    pub(crate) profile: Profile,
}

impl Analyzer {
    pub(crate) fn new() -> Analyzer {
        Analyzer {
            compiled: HashMap::new(),
            keywords: HashMap::new(),
            parsers: HashMap::new(),
            profile: Profile::default(),
        }
    }

    fn query(&mut self, language: Language) -> Option<&Query> {
        self.compiled
            .entry(language)
            .or_insert_with(|| {
                let source = tags_query(language);
                // The queries ship with the grammars pinned in Cargo.toml; a failure is a build
                // defect, and the index then simply has no definitions for that language.
                Query::new(&language.grammar(), &source).ok()
            })
            .as_ref()
    }

    fn keywords(&mut self, language: Language) -> &std::collections::HashSet<u64> {
        self.keywords
            .entry(language)
            .or_insert_with(|| language.keywords().iter().map(|word| term_hash(word)).collect())
    }

    fn parse(&mut self, language: Language, text: &str) -> Option<Tree> {
        let started = Instant::now();
        let tree = self.parsers.entry(language).or_insert_with(|| language.parser()).parse(text, None);
        self.profile.parse += started.elapsed();
        tree
    }
}

/// The patterns of a tags query that capture definitions (`@definition.*`); references are
/// left out, which makes matching several times faster.
fn definition_patterns(query: &str) -> String {
    let mut patterns = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for line in query.lines() {
        let code = line.split(';').next().unwrap_or_default();
        let starts_form = depth == 0 && code.trim_start().starts_with(['(', '[']);
        if starts_form && !current.trim().is_empty() {
            patterns.push(std::mem::take(&mut current));
        }
        current.push_str(code);
        current.push('\n');
        for c in code.chars() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    patterns.push(current);
    patterns.into_iter().filter(|pattern| pattern.contains("@definition.")).collect::<Vec<_>>().join("\n")
}

fn tags_query(language: Language) -> String {
    definition_patterns(&full_tags_query(language))
}

fn full_tags_query(language: Language) -> String {
    language.spec().tags.join("\n")
}

/// Identifier-like words of `text` with their counts, in order of first appearance.
pub(crate) fn terms(text: &str) -> Vec<(String, u16)> {
    let mut counts: Vec<(String, u16)> = Vec::new();
    let mut positions: HashMap<&str, usize> = HashMap::new();
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if word.len() < MIN_TERM_LENGTH || word.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        match positions.get(word) {
            Some(&index) => counts[index].1 = counts[index].1.saturating_add(1),
            None => {
                positions.insert(word, counts.len());
                counts.push((word.to_string(), 1));
            }
        }
    }
    counts
}

/// `terms` as hashes, without allocating the words, and without `keywords`, which are in
/// nearly every chunk and so carry no weight in BM25 (their postings would be a third of the
/// index); returns the number of words, keywords included (the chunk's BM25 length).
fn term_hashes(text: &str, keywords: &std::collections::HashSet<u64>) -> (Vec<(u64, u16)>, u32) {
    let mut counts: Vec<(u64, u16)> = Vec::new();
    let mut positions: HashMap<u64, usize> = HashMap::new();
    let mut length = 0u32;
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if word.len() < MIN_TERM_LENGTH || word.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        length += 1;
        let hash = term_hash(word);
        if keywords.contains(&hash) {
            continue;
        }
        match positions.get(&hash) {
            Some(&index) => counts[index].1 = counts[index].1.saturating_add(1),
            None => {
                positions.insert(hash, counts.len());
                counts.push((hash, 1));
            }
        }
    }
    (counts, length)
}

/// Line ranges of the chunks of a parsed file: top-level items grouped while small, windows of
/// `CHUNK_MAX_LINES` where an item is too big.
fn chunk_lines(tree: &Tree, line_count: usize) -> Vec<Range<usize>> {
    let root = tree.root_node();
    let mut walker = root.walk();
    let items: Vec<Range<usize>> =
        root.children(&mut walker).map(|node| node.start_position().row..node.end_position().row + 1).collect();
    let mut chunks: Vec<Range<usize>> = Vec::new();
    let mut group: Option<Range<usize>> = None;
    for item in items {
        let item = item.start.min(line_count)..item.end.min(line_count);
        if item.is_empty() {
            continue;
        }
        if item.len() > CHUNK_MAX_LINES {
            chunks.extend(group.take());
            let mut start = item.start;
            while start < item.end {
                let end = (start + CHUNK_MAX_LINES).min(item.end);
                chunks.push(start..end);
                start = end;
            }
            continue;
        }
        group = match group.take() {
            Some(open) if item.end - open.start <= CHUNK_GROUP_LINES => Some(open.start..item.end),
            Some(open) => {
                chunks.push(open);
                Some(item)
            }
            None => Some(item),
        };
    }
    chunks.extend(group);
    chunks
}

/// Reads a file's chunks and definitions from its text and tree.
pub(crate) fn analyze(language: Language, text: &str, tree: &Tree, analyzer: &mut Analyzer) -> Analysis {
    let started = Instant::now();
    let line_starts: Vec<usize> =
        std::iter::once(0).chain(text.match_indices('\n').map(|(index, _)| index + 1)).collect();
    let line_count = line_starts.len();
    let byte_of_line = |line: usize| line_starts.get(line).copied().unwrap_or(text.len());
    let keywords = analyzer.keywords(language);
    let chunks = chunk_lines(tree, line_count)
        .into_iter()
        .map(|lines| {
            let bytes = byte_of_line(lines.start)..byte_of_line(lines.end);
            let (terms, length) = term_hashes(&text[bytes.clone()], keywords);
            ChunkTerms { bytes, lines, terms, length }
        })
        .collect();
    let tags_started = Instant::now();
    analyzer.profile.terms += tags_started - started;
    let mut definitions = Vec::new();
    if let Some(query) = analyzer.query(language) {
        let name_index = query.capture_index_for_name("name");
        let mut cursor = QueryCursor::new();
        // Definitions worth retrieving sit near the top: items, and members of classes, impls
        // and modules. Not descending into function bodies makes matching much cheaper.
        cursor.set_max_start_depth(Some(DEFINITION_MAX_DEPTH));
        let mut matches = cursor.matches(query, tree.root_node(), text.as_bytes());
        while let Some(found) = matches.next() {
            let mut name = None;
            let mut node = None;
            for capture in found.captures() {
                let capture_name = query.capture_names()[capture.index as usize];
                if Some(capture.index) == name_index {
                    name = Some(capture.node);
                } else if capture_name.starts_with("definition.") {
                    node = Some(capture.node);
                }
            }
            if let (Some(name), Some(node)) = (name, node) {
                let name_text = &text[name.byte_range()];
                if name_text.len() >= MIN_TERM_LENGTH {
                    let start = node.start_position();
                    definitions.push((name_text.to_string(), node.byte_range(), start.row, start.column == 0));
                }
            }
        }
    }
    analyzer.profile.tags += tags_started.elapsed();
    analyzer.profile.files += 1;
    analyzer.profile.bytes += text.len();
    Analysis { chunks, definitions }
}

/// Parses `text` and analyses it; `None` when it has no tree (too large).
pub(crate) fn analyze_text(language: Language, text: &str, analyzer: &mut Analyzer) -> Option<Analysis> {
    if text.len() > syntax::MAX_PARSE_BYTES {
        return None;
    }
    let tree = analyzer.parse(language, text)?;
    Some(analyze(language, text, &tree, analyzer))
}

/// Analyses an open buffer from its rope and tree.
pub(crate) fn analyze_rope(language: Language, rope: &Rope, tree: &Tree, analyzer: &mut Analyzer) -> Analysis {
    analyze(language, &rope.to_string(), tree, analyzer)
}

/// Appends to a posting list growing it by a quarter (not doubling): lists are most of the
/// index, and doubling leaves up to half of each unused.
fn push_posting(list: &mut Vec<Posting>, posting: Posting) {
    if list.len() == list.capacity() {
        list.reserve_exact((list.len() / 4).max(4));
    }
    list.push(posting);
}

/// Sorted ids packed as LEB128 varints of their gaps (a file's terms: about 2 bytes each).
fn encode_ids(sorted: &[u32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(sorted.len() * 2);
    let mut previous = 0u32;
    for &id in sorted {
        let mut gap = id - previous;
        previous = id;
        while gap >= 0x80 {
            bytes.push((gap as u8 & 0x7f) | 0x80);
            gap >>= 7;
        }
        bytes.push(gap as u8);
    }
    bytes.shrink_to_fit();
    bytes
}

/// The ids `encode_ids` packed.
fn decode_ids(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let mut at = 0;
    let mut previous = 0u32;
    std::iter::from_fn(move || {
        let mut gap = 0u32;
        let mut shift = 0;
        loop {
            let byte = *bytes.get(at)?;
            at += 1;
            gap |= u32::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                break;
            }
        }
        previous += gap;
        Some(previous)
    })
}

impl FileEntry {
    /// The names the file defines.
    pub(crate) fn defined(&self) -> &[TermId] {
        &self.defined
    }
}

impl Index {
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.file_ids.keys().cloned().collect()
    }

    /// The indexed files with their ids.
    pub(crate) fn files(&self) -> impl Iterator<Item = (FileId, &Path)> {
        self.file_ids.iter().map(|(path, id)| (*id, path.as_path()))
    }

    /// Chunk ids lie below this.
    pub(crate) fn chunk_slots(&self) -> usize {
        self.chunks.len()
    }

    pub(crate) fn file_count(&self) -> usize {
        self.file_ids.len()
    }

    pub(crate) fn chunk_count(&self) -> usize {
        self.live_chunks
    }

    /// Distinct identifiers, postings and definitions held (`nib index` reports them).
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (self.terms.len(), self.posting_entries, self.definition_entries)
    }

    pub(crate) fn file(&self, id: FileId) -> Option<&FileEntry> {
        self.files.get(id as usize).and_then(Option::as_ref)
    }

    pub(crate) fn file_id(&self, path: &Path) -> Option<FileId> {
        self.file_ids.get(path).copied()
    }

    pub(crate) fn chunk(&self, id: u32) -> Option<&Chunk> {
        self.chunks.get(id as usize).and_then(Option::as_ref)
    }

    pub(crate) fn term(&self, word: &str) -> Option<TermId> {
        let hash = term_hash(word);
        self.terms.find(hash, |&id| self.term_hashes[id as usize] == hash).copied()
    }

    pub(crate) fn postings(&self, term: TermId) -> &[Posting] {
        &self.postings[term as usize]
    }

    pub(crate) fn definitions(&self, term: TermId) -> &[Definition] {
        self.definitions.get(&term).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn average_chunk_length(&self) -> f64 {
        self.total_length as f64 / self.live_chunks.max(1) as f64
    }

    fn intern(&mut self, hash: u64) -> TermId {
        let hashes = &self.term_hashes;
        match self.terms.entry(hash, |&id| hashes[id as usize] == hash, |&id| hashes[id as usize]) {
            hashbrown::hash_table::Entry::Occupied(found) => *found.get(),
            hashbrown::hash_table::Entry::Vacant(slot) => {
                let id = self.postings.len() as TermId;
                slot.insert(id);
                self.term_hashes.push(hash);
                self.postings.push(Vec::new());
                id
            }
        }
    }

    /// Adds or replaces `path` with what `analysis` found in it.
    pub(crate) fn insert(&mut self, path: &Path, analysis: Analysis) {
        self.remove(path);
        let file = match self.free_files.pop() {
            Some(id) => id,
            None => {
                self.files.push(None);
                (self.files.len() - 1) as FileId
            }
        };
        let mut entry =
            FileEntry { path: path.to_path_buf(), chunks: Vec::new(), defined: Vec::new(), terms: Vec::new() };
        let mut file_terms = Vec::new();
        for ChunkTerms { bytes, lines, terms, length } in analysis.chunks {
            let chunk = Chunk {
                file,
                bytes: bytes.start as u32..bytes.end as u32,
                lines: lines.start as u32..lines.end as u32,
                length,
            };
            if self.chunks.len() >= MAX_CHUNKS && self.free_chunks.is_empty() {
                break;
            }
            let id = match self.free_chunks.pop() {
                Some(id) => {
                    self.chunks[id as usize] = Some(chunk);
                    id
                }
                None => {
                    self.chunks.push(Some(chunk));
                    (self.chunks.len() - 1) as u32
                }
            };
            for (hash, count) in terms {
                let term = self.intern(hash);
                push_posting(&mut self.postings[term as usize], id << 8 | u32::from(count.min(255)));
                self.posting_entries += 1;
                file_terms.push(term);
            }
            self.live_chunks += 1;
            self.total_length += u64::from(length);
            entry.chunks.push(id);
        }
        file_terms.sort_unstable();
        file_terms.dedup();
        entry.terms = encode_ids(&file_terms);
        for (name, bytes, line, top_level) in analysis.definitions {
            let term = self.intern(term_hash(&name));
            self.definition_entries += 1;
            self.definitions.entry(term).or_default().push(Definition {
                file,
                bytes: bytes.start as u32..bytes.end as u32,
                line: line as u32,
                top_level,
            });
            entry.defined.push(term);
        }
        self.files[file as usize] = Some(entry);
        self.file_ids.insert(path.to_path_buf(), file);
    }

    /// Forgets `path`, if indexed.
    pub(crate) fn remove(&mut self, path: &Path) {
        let Some(file) = self.file_ids.remove(path) else {
            return;
        };
        let Some(entry) = self.files[file as usize].take() else {
            return;
        };
        self.free_files.push(file);
        for &chunk_id in &entry.chunks {
            if let Some(chunk) = self.chunks[chunk_id as usize].take() {
                self.live_chunks -= 1;
                self.total_length -= u64::from(chunk.length);
            }
            self.free_chunks.push(chunk_id);
        }
        let removed: std::collections::HashSet<u32> = entry.chunks.iter().copied().collect();
        for term in decode_ids(&entry.terms) {
            let list = &mut self.postings[term as usize];
            let before = list.len();
            list.retain(|posting| !removed.contains(&posting_chunk(*posting)));
            self.posting_entries -= before - list.len();
        }
        for term in entry.defined {
            if let Some(definitions) = self.definitions.get_mut(&term) {
                let before = definitions.len();
                definitions.retain(|definition| definition.file != file);
                self.definition_entries -= before - definitions.len();
                if definitions.is_empty() {
                    self.definitions.remove(&term);
                }
            }
        }
    }

    /// Gives back the spare capacity of the posting lists (after the initial build).
    pub(crate) fn shrink(&mut self) {
        for list in &mut self.postings {
            list.shrink_to_fit();
        }
    }

    /// Approximate heap bytes held by the index, from counters (cheap enough to ask per file).
    pub(crate) fn heap_bytes(&self) -> usize {
        // Posting lists grow by doubling until `shrink`: count half a slot of slack per entry.
        let postings = self.posting_entries * 6 + self.postings.len() * 24;
        let definitions = self.definitions.len() * 48 + self.definition_entries * std::mem::size_of::<Definition>();
        let terms = self.terms.capacity() * 5 + self.term_hashes.capacity() * 8;
        let chunks = self.chunks.capacity() * std::mem::size_of::<Option<Chunk>>();
        let files = self.file_ids.len() * 200 + self.posting_entries / 8;
        postings + definitions + terms + chunks + files
    }
}

impl Index {
    /// Heap bytes per structure, from capacities (walks every list: for `nib index`, not per file).
    pub(crate) fn memory(&self) -> Vec<(&'static str, usize)> {
        let vec = |capacity: usize, item: usize| capacity * item;
        let postings_lists = self.postings.capacity() * 24;
        let postings: usize = self.postings.iter().map(|list| vec(list.capacity(), 4)).sum();
        let file_terms: usize = self.files.iter().flatten().map(|entry| vec(entry.terms.capacity(), 1)).sum();
        let file_chunks: usize = self.files.iter().flatten().map(|entry| vec(entry.chunks.capacity(), 4)).sum();
        let file_defined: usize = self.files.iter().flatten().map(|entry| vec(entry.defined.capacity(), 4)).sum();
        let paths: usize = self.files.iter().flatten().map(|entry| entry.path.capacity() * 2).sum();
        let definitions: usize =
            self.definitions.values().map(|list| vec(list.capacity(), std::mem::size_of::<Definition>())).sum();
        vec![
            ("terms map", self.terms.capacity() * 5 + self.term_hashes.capacity() * 8),
            ("posting list headers", postings_lists),
            ("postings", postings),
            ("chunks", self.chunks.capacity() * std::mem::size_of::<Option<Chunk>>()),
            ("file terms", file_terms),
            ("file chunks", file_chunks),
            ("file defined", file_defined),
            ("paths", paths),
            ("files", self.files.capacity() * std::mem::size_of::<Option<FileEntry>>()),
            ("definitions map", self.definitions.capacity() * 33),
            ("definition lists", self.definitions.len() * 16),
            ("definitions", definitions),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_ids_round_trip() {
        let ids = vec![0, 1, 2, 127, 128, 300, 16_383, 16_384, 1 << 21, u32::MAX];
        assert_eq!(decode_ids(&encode_ids(&ids)).collect::<Vec<_>>(), ids);
        assert!(decode_ids(&encode_ids(&[])).next().is_none());
    }
}
