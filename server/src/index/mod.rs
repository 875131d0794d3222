//! The workspace index: a background thread (`nib-index`) that walks the workspace folders,
//! indexes their source files (`store`), keeps them current from saves, watched-file events
//! and the live text of open buffers, keeps the ring of recent regions (`ring`) and answers
//! retrieval queries (`retrieve`) for the completion pipeline.
//!
//! The main loop only sends it messages (documents travel as O(1) rope and tree clones) and
//! reads its answers from a shared slot; it never waits for the index. A completion whose
//! scope has no answer yet uses the file's previous answer and asks for a new one, which the
//! next request finds (the edit that led to it usually asked already: `prefetch`). Each new
//! answer is also announced through the `Answered` callback given to `IndexHandle::start`, so
//! the main loop can re-warm the KV cache for the new prompt head.

mod imports;
mod receivers;
pub mod retrieve;
pub(crate) mod ring;
pub(crate) mod store;
pub(crate) mod walk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ropey::Rope;
use tree_sitter::Tree;

pub use retrieve::Snippet;
use ring::{Reason, Ring};
use store::{Analyzer, Index};

use crate::syntax::{Language, scopes};

/// The index stops taking files once its postings and tables hold this much.
const MAX_HEAP_BYTES: usize = 48 * 1024 * 1024;
/// Files indexed between two looks at the message queue during the initial walk.
const FILES_PER_SLICE: usize = 16;
/// Threads that parse files during the initial walk (the index thread and one scoped thread):
/// the machines nib targets have two cores, and the walk should finish in seconds.
const ANALYSIS_THREADS: usize = 2;
/// An open buffer is re-indexed from its live text once it has not changed for this long.
const BUFFER_QUIET: Duration = Duration::from_millis(750);

/// What the index may do, from `nib.context.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub max_files: usize,
}

/// Which retrieval a completion needs: the file and the scope around the cursor (or, outside
/// any scope, its 32-line block). Typing inside a scope keeps the key, so the retrieved text
/// at the head of the prompt stays byte-identical and the KV cache keeps hitting.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub uri: String,
    pub scope: String,
}

impl Key {
    pub fn at(uri: &str, language: Option<Language>, rope: &Rope, tree: Option<&Tree>, cursor: usize) -> Key {
        let cursor = cursor.min(rope.len_bytes());
        let scope = match (language, tree) {
            (Some(language), Some(tree)) => scopes::scope_at(language, tree, rope, cursor)
                .map(|scope| format!("{}@{}", scope.name, rope.byte_to_line(scope.anchor.start.min(rope.len_bytes())))),
            _ => None,
        };
        let scope = scope.unwrap_or_else(|| format!("lines@{}", rope.byte_to_line(cursor) / 32));
        Key { uri: uri.to_string(), scope }
    }
}

/// The answer to a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retrieved {
    pub key: Key,
    pub snippets: Vec<Snippet>,
}

/// The index's state for `nib/inspect` and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// `off`, `indexing` or `ready`.
    pub state: &'static str,
    pub files: usize,
    pub chunks: usize,
    pub heap_bytes: usize,
    /// Time the initial walk and indexing took.
    pub build_ms: u64,
    /// Files left out because the file cap or the memory cap was reached.
    pub capped: bool,
}

/// A document as the index sees it (clones of the main loop's rope and tree).
#[derive(Clone)]
pub struct Snapshot {
    pub uri: String,
    pub path: Option<PathBuf>,
    pub language: Language,
    pub rope: Rope,
    pub tree: Option<Tree>,
}

impl Snapshot {
    /// The document's current text and tree (O(1) clones; parses if an edit is pending);
    /// `None` for a language nib lacks.
    pub fn of(document: &crate::document::Document) -> Option<Snapshot> {
        Some(Snapshot { tree: document.tree().cloned(), ..Snapshot::text_only(document)? })
    }

    /// The document's current text only: the index thread parses it when it needs a tree, so
    /// an edit costs the main loop no parse.
    pub fn text_only(document: &crate::document::Document) -> Option<Snapshot> {
        Some(Snapshot {
            uri: document.uri.clone(),
            path: document.path.clone(),
            language: document.language?,
            rope: document.rope.clone(),
            tree: None,
        })
    }

    /// Parses the text if the snapshot came without a tree.
    fn ensure_tree(&mut self) {
        if self.tree.is_none() {
            self.tree = crate::syntax::parse(&mut self.language.parser(), &self.rope, None);
        }
    }
}

enum Message {
    Configure {
        folders: Vec<PathBuf>,
        settings: Settings,
    },
    /// An open buffer's live text; `line` is where it was edited or viewed.
    Buffer {
        snapshot: Snapshot,
        line: usize,
        reason: Reason,
    },
    Closed {
        path: PathBuf,
    },
    /// A file was saved, created or changed on disk.
    Changed(PathBuf),
    Deleted(PathBuf),
    Query {
        key: Key,
        snapshot: Snapshot,
        cursor: usize,
        budget: usize,
    },
    /// A query whose key the index thread works out (the snapshot may have no tree yet).
    Prefetch {
        snapshot: Snapshot,
        cursor: usize,
        budget: usize,
    },
}

/// Called on the index thread with the key of each new answer (the main loop posts itself a
/// message from it).
pub type Answered = Box<dyn Fn(&Key) + Send>;

/// The main loop's side of the index.
pub struct IndexHandle {
    sender: Sender<Message>,
    answers: Arc<Mutex<HashMap<String, Arc<Retrieved>>>>,
    status: Arc<Mutex<Status>>,
    /// The last key asked for, so a burst of requests in one scope asks once (main loop only).
    asked: std::cell::RefCell<Option<Key>>,
}

impl IndexHandle {
    /// Starts the index thread (idle until `configure`); `answered` hears of every new answer.
    pub fn start(answered: Answered) -> IndexHandle {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let answers: Arc<Mutex<HashMap<String, Arc<Retrieved>>>> = Arc::default();
        let status = Arc::new(Mutex::new(Status { state: "off", ..Status::default() }));
        let worker = Worker::new(receiver, Arc::clone(&answers), Arc::clone(&status), answered);
        std::thread::Builder::new()
            .name("nib-index".into())
            .spawn(move || worker.run())
            .expect("spawn the index thread");
        IndexHandle { sender, answers, status, asked: std::cell::RefCell::new(None) }
    }

    /// (Re)starts indexing `folders` with `settings`; disabled settings drop the index.
    pub fn configure(&self, folders: &[PathBuf], settings: &Settings) {
        // The new index answers nothing yet: every key is worth asking again.
        self.asked.borrow_mut().take();
        let _ = self.sender.send(Message::Configure { folders: folders.to_vec(), settings: settings.clone() });
    }

    /// An open buffer's text changed (or it was opened) around `line`.
    pub fn buffer(&self, snapshot: Snapshot, line: usize, edited: bool) {
        let reason = if edited { Reason::Edited } else { Reason::Viewed };
        let _ = self.sender.send(Message::Buffer { snapshot, line, reason });
    }

    pub fn closed(&self, path: &Path) {
        let _ = self.sender.send(Message::Closed { path: path.to_path_buf() });
    }

    /// A file changed on disk (saved, created, changed) or was deleted.
    pub fn file_event(&self, path: &Path, deleted: bool) {
        let path = path.to_path_buf();
        let _ = self.sender.send(if deleted { Message::Deleted(path) } else { Message::Changed(path) });
    }

    /// The answer for `key`, or the file's latest answer for another scope when `key` has none
    /// yet (then `key` is asked for). `None` when the file has no answer at all.
    pub fn retrieved(
        &self,
        key: &Key,
        snapshot: impl FnOnce() -> Snapshot,
        cursor: usize,
        budget: usize,
    ) -> Option<Arc<Retrieved>> {
        let latest = self.answers.lock().unwrap_or_else(|e| e.into_inner()).get(&key.uri).cloned();
        if latest.as_ref().is_none_or(|answer| answer.key != *key) {
            self.ask(key, snapshot, cursor, budget);
        }
        latest
    }

    /// Asks ahead of the completion request that will need it for the scope at `cursor` of a
    /// text-only snapshot: the index thread parses it, works out the key and answers unless it
    /// already has that key's answer.
    pub fn prefetch(&self, snapshot: Snapshot, cursor: usize, budget: usize) {
        let _ = self.sender.send(Message::Prefetch { snapshot, cursor, budget });
    }

    fn ask(&self, key: &Key, snapshot: impl FnOnce() -> Snapshot, cursor: usize, budget: usize) {
        let mut asked = self.asked.borrow_mut();
        if asked.as_ref() == Some(key) {
            return;
        }
        *asked = Some(key.clone());
        let _ = self.sender.send(Message::Query { key: key.clone(), snapshot: snapshot(), cursor, budget });
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the index's latest answer for `key`'s document is for `key`.
    pub fn has_answer_for(&self, key: &Key) -> bool {
        self.answers.lock().unwrap_or_else(|e| e.into_inner()).get(&key.uri).is_some_and(|answer| answer.key == *key)
    }
}

/// Snippet text from open buffers first, else from the file (read once per query).
struct FileTexts<'a> {
    open: &'a HashMap<PathBuf, Rope>,
    read: HashMap<PathBuf, Option<String>>,
}

impl retrieve::Texts for FileTexts<'_> {
    fn text(&mut self, path: &Path) -> Option<String> {
        if let Some(rope) = self.open.get(path) {
            return Some(rope.to_string());
        }
        self.read
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                let size = std::fs::metadata(path).ok()?.len();
                (size <= walk::MAX_FILE_BYTES).then(|| std::fs::read_to_string(path).ok()).flatten()
            })
            .clone()
    }
}

/// Reads a file and analyses it, unless it is too large, binary or generated.
fn read_and_analyze(path: &Path, language: Language, analyzer: &mut Analyzer) -> Option<store::Analysis> {
    let started = Instant::now();
    let bytes = std::fs::read(path).ok();
    analyzer.profile.read += started.elapsed();
    let bytes = bytes?;
    if bytes.len() as u64 > walk::MAX_FILE_BYTES || walk::check_contents(&bytes).is_err() {
        return None;
    }
    store::analyze_text(language, &String::from_utf8_lossy(&bytes), analyzer)
}

/// Reads and analyses `files` with every analyser at once: the first on this thread, the others
/// on scoped threads (parsing is the expensive part of indexing). Each takes the next file when
/// done with one, so a large file does not leave the others idle; results in the order of
/// `files`.
fn analyze_files(files: &[walk::Found], workers: &mut [Analyzer]) -> Vec<Option<store::Analysis>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<store::Analysis>>> = files.iter().map(|_| Mutex::new(None)).collect();
    let work = |analyzer: &mut Analyzer| {
        loop {
            let at = next.fetch_add(1, Ordering::Relaxed);
            let Some(found) = files.get(at) else { break };
            // A file that makes the parser panic is left out, not the index.
            let analysis = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                read_and_analyze(&found.path, found.language, analyzer)
            }));
            *results[at].lock().unwrap_or_else(|e| e.into_inner()) = analysis.ok().flatten();
        }
    };
    let Some((first, others)) = workers.split_first_mut() else { return Vec::new() };
    std::thread::scope(|scope| {
        for analyzer in others {
            scope.spawn(|| work(analyzer));
        }
        work(first);
    });
    results.into_iter().map(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner())).collect()
}

/// Hands the allocator's free pages back to the system. Indexing frees most of what it
/// allocates (file text, trees, each file's analysis) on several threads; without this, their
/// free pages stay resident between allocations.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it is safe to call any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The index thread's state. It alone touches the index.
pub(crate) struct Workspace {
    pub(crate) index: Index,
    /// Parsers and compiled tags queries, one set per analysing thread (one once the initial
    /// walk is indexed: updates come a file at a time).
    workers: Vec<Analyzer>,
    /// Analysis time of the analysers let go after a walk.
    retired: store::Profile,
    pub(crate) ring: Ring,
    open: HashMap<PathBuf, Rope>,
    settings: Settings,
    /// Files the initial walk found and has not indexed yet.
    queue: Vec<walk::Found>,
    folders: Vec<PathBuf>,
    capped: bool,
}

impl Workspace {
    pub(crate) fn new(settings: Settings) -> Workspace {
        Workspace {
            index: Index::default(),
            workers: (0..ANALYSIS_THREADS).map(|_| Analyzer::new()).collect(),
            retired: store::Profile::default(),
            ring: Ring::default(),
            open: HashMap::new(),
            settings,
            queue: Vec::new(),
            folders: Vec::new(),
            capped: false,
        }
    }

    /// Walks `folders` and queues their files (`index_queued` indexes them).
    pub(crate) fn start_walk(&mut self, folders: &[PathBuf]) {
        self.folders = folders.to_vec();
        self.workers.resize_with(ANALYSIS_THREADS, Analyzer::new);
        let mut found = Vec::new();
        for folder in folders {
            found.extend(walk::walk(folder, self.settings.max_files.saturating_sub(found.len()) + 1));
        }
        self.capped = found.len() > self.settings.max_files;
        found.truncate(self.settings.max_files);
        found.reverse(); // popped from the end: folder order
        self.queue = found;
    }

    /// Indexes up to `count` queued files; returns whether the queue is now empty.
    pub(crate) fn index_queued(&mut self, count: usize) -> bool {
        if self.index.heap_bytes() > MAX_HEAP_BYTES {
            self.capped = true;
            self.queue.clear();
        }
        let mut batch = Vec::new();
        while batch.len() < count
            && let Some(found) = self.queue.pop()
        {
            if !self.open.contains_key(&found.path) {
                batch.push(found);
            }
        }
        let analyses = analyze_files(&batch, &mut self.workers);
        for (found, analysis) in batch.iter().zip(analyses) {
            match analysis {
                Some(analysis) => self.index.insert(&found.path, analysis),
                None => self.index.remove(&found.path),
            }
        }
        if self.queue.is_empty() {
            self.index.shrink();
            // The other analysers' parsers keep their stacks and trees' memory: let them go.
            for analyzer in self.workers.drain(1..) {
                self.retired.add(&analyzer.profile);
            }
        }
        release_free_memory();
        self.queue.is_empty()
    }

    /// Reads and indexes one file from disk (forgetting it if it can no longer be indexed).
    pub(crate) fn index_file(&mut self, path: &Path, language: Language) {
        match read_and_analyze(path, language, &mut self.workers[0]) {
            Some(analysis) => self.index.insert(path, analysis),
            None => self.index.remove(path),
        }
    }

    /// Takes an open buffer: its live text is indexed and preferred over the file.
    pub(crate) fn open_buffer(&mut self, snapshot: &Snapshot) {
        if let Some(path) = &snapshot.path {
            self.open.insert(path.clone(), snapshot.rope.clone());
            self.index_buffer(snapshot);
        }
    }

    /// Paths of the indexed files, sorted.
    pub(crate) fn indexed_paths(&self) -> Vec<PathBuf> {
        let mut paths = self.index.paths();
        paths.sort();
        paths
    }

    fn index_buffer(&mut self, snapshot: &Snapshot) {
        let Some(path) = &snapshot.path else { return };
        let parsed;
        let tree = match &snapshot.tree {
            Some(tree) => tree,
            None => match crate::syntax::parse(&mut snapshot.language.parser(), &snapshot.rope, None) {
                Some(tree) => {
                    parsed = tree;
                    &parsed
                }
                None => return,
            },
        };
        let analysis = store::analyze_rope(snapshot.language, &snapshot.rope, tree, &mut self.workers[0]);
        self.index.insert(path, analysis);
    }

    /// A file event from the editor: re-read it when the walk would have taken it.
    fn file_changed(&mut self, path: &Path) {
        if self.open.contains_key(path) {
            return; // The live text wins over the disk.
        }
        let inside = self.folders.iter().find(|folder| path.starts_with(folder));
        let language = std::fs::metadata(path).ok().and_then(|meta| walk::classify(path, meta.len()).ok());
        match (inside, language) {
            (Some(folder), Some(language)) if walk::is_indexable(folder, path) => {
                if self.index.file_id(path).is_some() || self.index.file_count() < self.settings.max_files {
                    self.index_file(path, language);
                }
            }
            _ => self.index.remove(path),
        }
    }

    /// Retrieves for `cursor` in `snapshot` within `budget` bytes.
    pub(crate) fn query(&mut self, snapshot: &Snapshot, cursor: usize, budget: usize) -> Vec<Snippet> {
        let mut texts = FileTexts { open: &self.open, read: HashMap::new() };
        let cursor = retrieve::Cursor {
            path: snapshot.path.as_deref(),
            language: snapshot.language,
            rope: &snapshot.rope,
            tree: snapshot.tree.as_ref(),
            cursor,
        };
        retrieve::retrieve(&self.index, &cursor, &self.ring, &mut texts, budget)
    }

    /// Where the analysing threads spent their time so far.
    pub(crate) fn profile(&self) -> store::Profile {
        let mut total = self.retired;
        for analyzer in &self.workers {
            total.add(&analyzer.profile);
        }
        total
    }

    pub(crate) fn status(&self, state: &'static str, build_ms: u64) -> Status {
        Status {
            state,
            files: self.index.file_count(),
            chunks: self.index.chunk_count(),
            heap_bytes: self.index.heap_bytes(),
            build_ms,
            capped: self.capped,
        }
    }
}

/// The thread: messages first, then a slice of indexing work, then quiet buffers.
struct Worker {
    receiver: Receiver<Message>,
    answers: Arc<Mutex<HashMap<String, Arc<Retrieved>>>>,
    status: Arc<Mutex<Status>>,
    answered: Answered,
    workspace: Option<Workspace>,
    /// Open buffers changed since they were last indexed, with the time of the last change.
    dirty: HashMap<PathBuf, (Snapshot, Instant)>,
    /// The last query per document, re-run once the initial walk is done.
    last_queries: HashMap<String, (Key, Snapshot, usize, usize)>,
    build_started: Instant,
}

impl Worker {
    fn new(
        receiver: Receiver<Message>,
        answers: Arc<Mutex<HashMap<String, Arc<Retrieved>>>>,
        status: Arc<Mutex<Status>>,
        answered: Answered,
    ) -> Worker {
        Worker {
            receiver,
            answers,
            status,
            answered,
            workspace: None,
            dirty: HashMap::new(),
            last_queries: HashMap::new(),
            build_started: Instant::now(),
        }
    }

    fn run(mut self) {
        loop {
            let busy = self.workspace.as_ref().is_some_and(|workspace| !workspace.queue.is_empty());
            let wait = if busy {
                Duration::ZERO
            } else if self.dirty.is_empty() {
                Duration::from_secs(3600)
            } else {
                BUFFER_QUIET
            };
            match self.receiver.recv_timeout(wait) {
                // A bug hit by one message must not end the index: later messages still work.
                Ok(message) => {
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(message))).is_err() {
                        tracing::error!("the workspace index failed on a message; it carries on");
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if !self.receiver.is_empty() {
                continue; // Messages (queries above all) before more indexing.
            }
            self.index_slice();
            self.index_quiet_buffers();
        }
    }

    fn publish(&self, state: &'static str) {
        let Some(workspace) = &self.workspace else { return };
        let build_ms = self.build_started.elapsed().as_millis() as u64;
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let build_ms = if state == "ready" && status.state == "ready" { status.build_ms } else { build_ms };
        *status = workspace.status(state, build_ms);
    }

    /// Publishes the counts after an incremental change (the state stays what it was).
    fn publish_current(&self) {
        let building = self.workspace.as_ref().is_some_and(|workspace| !workspace.queue.is_empty());
        if self.workspace.is_some() {
            self.publish(if building { "indexing" } else { "ready" });
        }
    }

    fn index_slice(&mut self) {
        let Some(workspace) = &mut self.workspace else { return };
        if workspace.queue.is_empty() {
            return;
        }
        if workspace.index_queued(FILES_PER_SLICE) {
            self.publish("ready");
            let status = self.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            tracing::info!(
                files = status.files,
                chunks = status.chunks,
                heap_kb = status.heap_bytes / 1024,
                build_ms = status.build_ms,
                capped = status.capped,
                "workspace indexed"
            );
            // Answers given while the index was incomplete are refreshed once.
            let pending: Vec<_> = self.last_queries.drain().map(|(_, query)| query).collect();
            for (key, snapshot, cursor, budget) in pending {
                self.answer(key, snapshot, cursor, budget);
            }
        }
    }

    fn index_quiet_buffers(&mut self) {
        let Some(workspace) = &mut self.workspace else { return };
        let quiet: Vec<PathBuf> = self
            .dirty
            .iter()
            .filter(|(_, (_, changed))| changed.elapsed() >= BUFFER_QUIET)
            .map(|(path, _)| path.clone())
            .collect();
        let changed = !quiet.is_empty();
        for path in quiet {
            if let Some((snapshot, _)) = self.dirty.remove(&path) {
                workspace.index_buffer(&snapshot);
            }
        }
        if changed {
            self.publish_current();
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Configure { folders, settings } => {
                self.answers.lock().unwrap_or_else(|e| e.into_inner()).clear();
                if !settings.enabled {
                    self.workspace = None;
                    *self.status.lock().unwrap_or_else(|e| e.into_inner()) =
                        Status { state: "off", ..Status::default() };
                    return;
                }
                let open = self.workspace.take().map(|workspace| workspace.open).unwrap_or_default();
                let mut workspace = Workspace::new(settings);
                workspace.open = open;
                self.build_started = Instant::now();
                workspace.start_walk(&folders);
                self.workspace = Some(workspace);
                self.publish("indexing");
            }
            Message::Buffer { snapshot, line, reason } => {
                let Some(workspace) = &mut self.workspace else { return };
                let Some(path) = snapshot.path.clone() else { return };
                workspace.ring.record(&path, &snapshot.rope, line, reason);
                workspace.open.insert(path.clone(), snapshot.rope.clone());
                self.dirty.insert(path, (snapshot, Instant::now()));
            }
            Message::Closed { path } => {
                let Some(workspace) = &mut self.workspace else { return };
                workspace.open.remove(&path);
                self.dirty.remove(&path);
                // The file on disk is what the workspace has now (or nothing, if it was never saved).
                workspace.file_changed(&path);
            }
            Message::Changed(path) => {
                let Some(workspace) = &mut self.workspace else { return };
                // A saved buffer: its live text is what was saved, indexed now.
                match self.dirty.remove(&path) {
                    Some((snapshot, _)) => workspace.index_buffer(&snapshot),
                    None => workspace.file_changed(&path),
                }
            }
            Message::Deleted(path) => {
                let Some(workspace) = &mut self.workspace else { return };
                if !workspace.open.contains_key(&path) {
                    workspace.index.remove(&path);
                    workspace.ring.forget(&path);
                }
            }
            Message::Query { key, snapshot, cursor, budget } => return self.answer(key, snapshot, cursor, budget),
            Message::Prefetch { mut snapshot, cursor, budget } => {
                snapshot.ensure_tree();
                let key =
                    Key::at(&snapshot.uri, Some(snapshot.language), &snapshot.rope, snapshot.tree.as_ref(), cursor);
                let answered =
                    self.answers.lock().unwrap_or_else(|e| e.into_inner()).get(&key.uri).is_some_and(|a| a.key == key);
                if !answered {
                    self.answer(key, snapshot, cursor, budget);
                }
                return;
            }
        }
        self.publish_current();
    }

    fn answer(&mut self, key: Key, snapshot: Snapshot, cursor: usize, budget: usize) {
        let Some(workspace) = &mut self.workspace else { return };
        // A buffer waiting to be re-indexed is indexed now: the query may look at its neighbours.
        if let Some(path) = &snapshot.path
            && let Some((dirty, _)) = self.dirty.remove(path)
        {
            workspace.index_buffer(&dirty);
        }
        let started = Instant::now();
        let snippets = workspace.query(&snapshot, cursor, budget);
        tracing::debug!(
            uri = key.uri,
            scope = key.scope,
            snippets = snippets.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "retrieved"
        );
        let building = !workspace.queue.is_empty();
        let uri = key.uri.clone();
        let answer = Arc::new(Retrieved { key: key.clone(), snippets });
        self.answers.lock().unwrap_or_else(|e| e.into_inner()).insert(uri.clone(), answer);
        (self.answered)(&key);
        if building {
            self.last_queries.insert(uri, (key, snapshot, cursor, budget));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Document, path_to_file_uri};

    /// A scratch workspace with `files`, indexed completely.
    fn workspace(name: &str, files: &[(&str, &str)]) -> (PathBuf, Workspace) {
        let root = std::env::temp_dir().join(format!("nib-index-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let mut workspace = Workspace::new(Settings { enabled: true, max_files: 100 });
        workspace.start_walk(std::slice::from_ref(&root));
        while !workspace.index_queued(4) {}
        (root, workspace)
    }

    /// Retrieves at `$0` in `source`, opened as `path` of the workspace.
    fn retrieve_at(workspace: &mut Workspace, root: &Path, path: &str, source: &str) -> Vec<Snippet> {
        let cursor = source.find("$0").unwrap();
        let text = source.replacen("$0", "", 1);
        let path = root.join(path);
        let document = Document::new(path_to_file_uri(&path), String::new(), 1, &text);
        let snapshot = Snapshot::of(&document).unwrap();
        workspace.open_buffer(&snapshot);
        workspace.query(&snapshot, cursor, 2000)
    }

    fn summary(snippets: &[Snippet], root: &Path) -> Vec<String> {
        snippets
            .iter()
            .map(|s| {
                format!(
                    "{} {} {}",
                    s.kind,
                    s.path.strip_prefix(root).unwrap().display(),
                    s.text.lines().next().unwrap()
                )
            })
            .collect()
    }

    const SHAPES: &str = "class Circle:\n    \"\"\"A circle.\"\"\"\n\n    def __init__(self, radius):\n        self.radius = radius\n\n    def area(self):\n        return 3.14159 * self.radius ** 2\n\n\ndef perimeter_of_polygon(sides, length):\n    return sides * length\n";

    #[test]
    fn definitions_of_names_near_the_cursor_and_imports_come_from_other_files() {
        let (root, mut workspace) = workspace(
            "definitions",
            &[
                ("geometry/shapes.py", SHAPES),
                (
                    "geometry/units.py",
                    "METERS_PER_FOOT = 0.3048\n\ndef to_meters(feet):\n    return feet * METERS_PER_FOOT\n",
                ),
                ("node_modules/x/shapes.js", "class Circle {}\n"),
            ],
        );
        assert_eq!(workspace.index.file_count(), 2, "vendor folders are not indexed");
        let source = "from geometry.shapes import Circle\nfrom geometry.units import to_meters\n\ndef report(r):\n    c = Circle(to_meters(r))\n    $0\n";
        let snippets = retrieve_at(&mut workspace, &root, "app.py", source);
        let found = summary(&snippets, &root);
        assert!(found.contains(&"definition geometry/shapes.py class Circle:".to_string()), "{found:?}");
        assert!(found.contains(&"definition geometry/units.py def to_meters(feet):".to_string()), "{found:?}");
        // Nearest name first: `to_meters` is used on the cursor's line before `Circle`? Both on
        // the line above; the order is stable between calls either way.
        let again = retrieve_at(&mut workspace, &root, "app.py", source);
        assert_eq!(again, snippets, "the same cursor retrieves the same text");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_import_line_lists_the_members_of_its_module_names_the_file_uses_first() {
        let many: String = (0..40).map(|n| format!("def helper_number_{n}(x):\n    return x\n\n")).collect();
        let parser = format!("{many}def parse_marker(source):\n    return source\n\n\ndef _private():\n    pass\n");
        let (root, mut workspace) = workspace("import-line", &[("pkg/_parser.py", parser.as_str())]);
        // The module named on the cursor's import line is listed, although the file uses
        // nothing of it by attribute.
        let source = "from ._parser import $0\n\n\ndef marker(text):\n    return text\n";
        let snippets = retrieve_at(&mut workspace, &root, "pkg/markers.py", source);
        let members: Vec<&Snippet> = snippets.iter().filter(|s| s.kind == "members").collect();
        assert_eq!(members.len(), 1, "{:?}", summary(&snippets, &root));
        assert_eq!(members[0].path, root.join("pkg/_parser.py"));
        assert!(!members[0].text.contains("_private"), "{}", members[0].text);
        // The file calls `_parse_marker`, bound by the import being written: the module's
        // `parse_marker` is shown although it is defined last, after more names than fit.
        let source = "from ._parser import $0\n\n\ndef marker(text):\n    return _parse_marker(text)\n";
        let snippets = retrieve_at(&mut workspace, &root, "pkg/markers.py", source);
        let found = summary(&snippets, &root);
        assert!(
            snippets.iter().any(|s| s.text.lines().any(|line| line.starts_with("def parse_marker(source):"))),
            "{found:?}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn names_the_file_uses_without_binding_them_are_looked_up() {
        let (root, mut workspace) = workspace(
            "unbound",
            &[
                ("pkg/_types.py", "def is_prepared(request):\n    return request.ready\n"),
                ("pkg/other.py", "class Cookie:\n    def is_ready(self):\n        pass\n"),
            ],
        );
        // An import is being written at the top; `_is_prepared` (the private alias of
        // `is_prepared`) is used far below, out of the names near the cursor. Attributes
        // (`jar.is_ready`) and names the file binds (`request`) are not looked up.
        let filler = "\n".repeat(30);
        let source = format!(
            "import os\n$0\n{filler}def send(request, jar):\n    jar.is_ready()\n    assert _is_prepared(request)\n"
        );
        let snippets = retrieve_at(&mut workspace, &root, "pkg/cookies.py", &source);
        let found = summary(&snippets, &root);
        assert!(found.contains(&"definition pkg/_types.py def is_prepared(request):".to_string()), "{found:?}");
        assert!(!found.iter().any(|line| line.contains("other.py")), "{found:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The import lines retrieved at `$0` of `source`, opened as `path` of the workspace.
    fn import_lines(workspace: &mut Workspace, root: &Path, path: &str, source: &str) -> Vec<String> {
        let snippets = retrieve_at(workspace, root, path, source);
        snippets.into_iter().filter(|s| s.kind == "import").map(|s| s.text).collect()
    }

    const TYPES: &str = "def is_prepared(request):\n    return True\n\n\nclass Request:\n    pass\n";

    #[test]
    fn import_lines_name_only_unbound_names_the_index_defines_at_top_level() {
        let (root, mut workspace) = workspace(
            "import-lines",
            &[
                ("pkg/__init__.py", ""),
                ("pkg/_types.py", TYPES),
                ("pkg/core.py", "class Parameter:\n    def value(self):\n        pass\n\nLIMIT = 3\nrows = []\n"),
                ("pkg/compat.py", "def urljoin(a, b):\n    return a + b\n"),
            ],
        );
        // Used without binding: `_is_prepared` (`is_prepared`, imported under a private
        // alias), `Request`, `CoreParameter` (`core`'s `Parameter`; a parameter's default value
        // is a use). Not proposed: a name nothing defines (`missing`), builtins (`len`), a
        // method name (`value`), names the file binds by tuple assignment, loop or `with`
        // (`LIMIT`, `rows`), and what it imports.
        let source = "from .compat import urljoin\n$0\n\n\ndef send(request, kind=CoreParameter):\n    LIMIT, count = 1, 2\n    for rows in range(LIMIT):\n        missing(rows)\n    with open(urljoin('a', 'b')) as value:\n        value.read()\n    p: Request = kind()\n    return _is_prepared(request) and len(p)\n";
        let lines = import_lines(&mut workspace, &root, "pkg/session.py", source);
        assert_eq!(
            lines,
            [
                "from .core import Parameter as CoreParameter",
                "from ._types import Request, is_prepared as _is_prepared"
            ]
        );
        // A module defining both `is_prepared` and `_is_prepared`: the public name, aliased.
        let both = format!("{TYPES}\n\ndef _is_prepared(r):\n    pass\n");
        std::fs::write(root.join("pkg/_types.py"), both).unwrap();
        workspace.index_file(&root.join("pkg/_types.py"), Language::Python);
        let lines = import_lines(&mut workspace, &root, "pkg/session.py", source);
        assert_eq!(lines[1], "from ._types import Request, is_prepared as _is_prepared");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn import_lines_follow_the_files_style() {
        let types = format!("{TYPES}\n\nLIMIT_A = 1\n");
        let (root, mut workspace) = workspace(
            "import-style",
            &[
                ("pkg/__init__.py", ""),
                ("pkg/_types.py", types.as_str()),
                ("pkg/sub/__init__.py", ""),
                ("pkg/compat.py", "def urljoin(a, b):\n    return a + b\n"),
            ],
        );
        let body = "\n\ndef send(request):\n    return _is_prepared(Request(urljoin('a', 'b')), LIMIT_A)\n";
        // No `from` import to follow, inside a package: relative; names in order of first use.
        let plain = format!("import os\n$0\n{body}");
        let lines = import_lines(&mut workspace, &root, "pkg/sub/client.py", &plain);
        assert_eq!(
            lines,
            ["from .._types import is_prepared as _is_prepared, Request, LIMIT_A", "from ..compat import urljoin"]
        );
        // Absolute imports of its own package: absolute.
        let absolute = format!("from pkg.compat import urljoin\n$0\n{body}");
        let lines = import_lines(&mut workspace, &root, "pkg/sub/client.py", &absolute);
        assert_eq!(lines, ["from pkg._types import is_prepared as _is_prepared, Request, LIMIT_A"]);
        // Relative imports, from a subpackage; a file whose name lists are sorted the way isort
        // and Ruff sort them (constants, classes, the rest) gets its names sorted so.
        let relative =
            format!("from ..compat import urljoin\nfrom . import SKIP_B, SKIPPABLE, Base, apply\n$0\n{body}");
        let lines = import_lines(&mut workspace, &root, "pkg/sub/client.py", &relative);
        assert_eq!(lines, ["from .._types import LIMIT_A, Request, is_prepared as _is_prepared"]);
        // Both ways, mostly absolute: the absolute form first, then the relative one (for an
        // import line typed relative).
        let mixed = format!("from pkg.compat import urljoin\nfrom pkg import compat\nfrom . import x\n$0\n{body}");
        let lines = import_lines(&mut workspace, &root, "pkg/sub/client.py", &mixed);
        assert_eq!(
            lines,
            [
                "from pkg._types import is_prepared as _is_prepared, Request, LIMIT_A",
                "from .._types import is_prepared as _is_prepared, Request, LIMIT_A"
            ]
        );
        // Plainly sorted lists: plain order.
        let plain_sorted = format!("from ..compat import urljoin\nfrom . import B, a, C\n$0\n{body}");
        let lines = import_lines(&mut workspace, &root, "pkg/sub/client.py", &plain_sorted);
        assert_eq!(
            lines,
            ["from .._types import is_prepared as _is_prepared, Request, LIMIT_A"],
            "B, a, C is unsorted"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_import_line_when_every_used_name_is_bound_or_a_star_import_may_bind_it() {
        let (root, mut workspace) = workspace("import-none", &[("pkg/__init__.py", ""), ("pkg/_types.py", TYPES)]);
        let bound = "from ._types import Request, is_prepared as _is_prepared\n$0\n\ndef send(request):\n    return _is_prepared(Request())\n";
        assert!(import_lines(&mut workspace, &root, "pkg/session.py", bound).is_empty());
        let star = "from .compat import *\n$0\n\ndef send(request):\n    return _is_prepared(Request())\n";
        assert!(import_lines(&mut workspace, &root, "pkg/session.py", star).is_empty());
        // A name defined in the file itself is not imported.
        let own = "import os\n$0\n\nclass Request:\n    pass\n\ndef send():\n    return Request()\n";
        assert!(import_lines(&mut workspace, &root, "pkg/session.py", own).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn keywords_are_not_indexed_and_file_terms_round_trip() {
        let (root, workspace) =
            workspace("keywords", &[("a.rs", "pub fn lookup_table(x: u32) -> u32 {\n    let y = x;\n    y\n}\n")]);
        assert!(workspace.index.term("lookup_table").is_some());
        assert!(workspace.index.term("pub").is_none() && workspace.index.term("let").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn members_of_modules_used_by_attribute_are_listed_without_private_names() {
        let (root, mut workspace) = workspace(
            "members",
            &[
                (
                    "pkg/types.py",
                    "class IntRange:\n    def __init__(self, min=None):\n        self.min = min\n\n\nclass Choice:\n    pass\n\n\ndef _private_helper():\n    pass\n",
                ),
                ("other/types.py", "class Unrelated:\n    pass\n"),
            ],
        );
        // `types.IntRange` appears nowhere in the file: only the module's members can show it.
        let source = "from . import types\n\ndef option():\n    kind = types.Choice()\n    $0\n";
        let snippets = retrieve_at(&mut workspace, &root, "pkg/core.py", source);
        let members: Vec<&Snippet> = snippets.iter().filter(|s| s.kind == "members").collect();
        assert_eq!(members.len(), 1, "{:?}", summary(&snippets, &root));
        assert_eq!(members[0].path, root.join("pkg/types.py"), "the module next to the file");
        assert!(members[0].text.contains("class IntRange:"), "{}", members[0].text);
        assert!(!members[0].text.contains("_private_helper"), "{}", members[0].text);
        assert!(!members[0].text.contains("__init__"), "members are top-level: {}", members[0].text);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn methods_of_the_classes_of_receivers_near_the_cursor_are_listed() {
        let repo = "class Repo:\n    \"\"\"A repository.\"\"\"\n\n    def __init__(self, path):\n        self.path = path\n\n    def commit(self, message):\n        pass\n\n    def _private(self):\n        pass\n\n    def push(self, remote=\"origin\"):\n        pass\n";
        // Longer than a definition's head, so their later methods are not shown already.
        let base = "class Base:\n    \"\"\"A base.\"\"\"\n\n    def __init__(self):\n        self.lines = []\n        self.level = 0\n\n    def log(self, text):\n        self.lines.append(text)\n\n    def warn(self, text):\n        self.log(text)\n";
        let config = "class Config:\n    \"\"\"Settings.\"\"\"\n\n    def __init__(self):\n        self.values = {}\n        self.path = None\n\n    def value(self, key):\n        return self.values[key]\n";
        let (root, mut workspace) =
            workspace("methods", &[("pkg/repo.py", repo), ("pkg/base.py", base), ("pkg/config.py", config)]);
        let source = "from pkg.repo import Repo\nfrom pkg.base import Base\n\n\nclass App(Base):\n    def __init__(self, path, config: Config):\n        self.repo = Repo(path)\n        self.config = config\n\n    def run(self):\n        self.log(\"run\")\n        self.config.path\n        self.repo.$0\n";
        let snippets = retrieve_at(&mut workspace, &root, "app.py", source);
        let methods: Vec<&Snippet> = snippets.iter().filter(|s| s.kind == "methods").collect();
        let classes: Vec<&str> = methods.iter().map(|s| s.detail.as_str()).collect();
        // Nearest receiver first: `self.repo` (a constructor call in `__init__`), `self` (the
        // base class), `self.config` (an annotated parameter assigned in `__init__`).
        assert_eq!(classes, ["Repo", "Base", "Config"], "{:?}", summary(&snippets, &root));
        assert_eq!(methods[1].text, "class Base:\n    def warn(self, text):", "`log` is shown whole already");
        let repo_methods = &methods[0].text;
        assert!(repo_methods.starts_with("class Repo:\n    def commit(self, message):\n"), "{repo_methods}");
        assert!(repo_methods.contains("    def push(self, remote=\"origin\"):"), "{repo_methods}");
        assert!(!repo_methods.contains("_private") && !repo_methods.contains("__init__"), "{repo_methods}");
        // A local assigned a constructor call, and a parameter's annotation.
        let source =
            "from pkg.repo import Repo\n\ndef main(config: Config):\n    r = Repo(\".\")\n    r.commit(config.$0)\n";
        let snippets = retrieve_at(&mut workspace, &root, "main.py", source);
        let classes: Vec<&str> = snippets.iter().filter(|s| s.kind == "methods").map(|s| s.detail.as_str()).collect();
        assert_eq!(classes, ["Config", "Repo"], "{:?}", summary(&snippets, &root));
        // A receiver whose class is not certain gets nothing.
        let source = "def main(repo):\n    repo.$0\n";
        let snippets = retrieve_at(&mut workspace, &root, "other.py", source);
        assert!(snippets.iter().all(|s| s.kind != "methods"), "{:?}", summary(&snippets, &root));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn similar_chunks_rank_by_shared_identifiers() {
        let (root, mut workspace) = workspace(
            "similar",
            &[
                (
                    "billing.py",
                    "def invoice_total(order_lines, tax_rate):\n    subtotal = sum(line.price * line.quantity for line in order_lines)\n    return subtotal * (1 + tax_rate)\n",
                ),
                ("weather.py", "def forecast(city):\n    return fetch_temperature(city) + humidity(city)\n"),
            ],
        );
        let source = "def refund(order_lines, tax_rate):\n    subtotal = sum(line.price * line.quantity for line in order_lines)\n    $0\n";
        let snippets = retrieve_at(&mut workspace, &root, "refunds.py", source);
        let similar: Vec<&Snippet> = snippets.iter().filter(|s| s.kind == "similar").collect();
        assert_eq!(similar.len(), 1, "{:?}", summary(&snippets, &root));
        assert_eq!(similar[0].path, root.join("billing.py"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn updates_replace_and_remove_what_a_file_contributed() {
        let (root, mut workspace) = workspace("updates", &[("a.py", "def alpha_helper():\n    return 1\n")]);
        let source = "x = alpha_helper()\n$0\n";
        let found = summary(&retrieve_at(&mut workspace, &root, "main.py", source), &root);
        assert!(found.iter().any(|s| s.starts_with("definition a.py def alpha_helper")), "{found:?}");
        // The file changes on disk: the old definition goes, the new one is found.
        std::fs::write(root.join("a.py"), "def beta_helper():\n    return 2\n").unwrap();
        workspace.file_changed(&root.join("a.py"));
        let found = summary(
            &retrieve_at(&mut workspace, &root, "main.py", "x = beta_helper()\ny = alpha_helper()\n$0\n"),
            &root,
        );
        assert_eq!(found.iter().filter(|s| s.starts_with("definition")).count(), 1, "{found:?}");
        assert!(found.iter().any(|s| s.starts_with("definition a.py def beta_helper")), "{found:?}");
        // Deleted: nothing is left of it.
        std::fs::remove_file(root.join("a.py")).unwrap();
        workspace.file_changed(&root.join("a.py"));
        assert!(workspace.index.file_id(&root.join("a.py")).is_none());
        let found = retrieve_at(&mut workspace, &root, "main.py", "x = beta_helper()\n$0\n");
        assert!(found.iter().all(|s| s.kind != "definition"), "{:?}", summary(&found, &root));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn every_language_yields_chunks_and_definitions() {
        let (root, workspace) = workspace(
            "languages",
            &[
                ("lib.rs", "pub struct Meter(f64);\n\npub fn convert_units(x: f64) -> Meter {\n    Meter(x)\n}\n"),
                ("util.js", "export function convertUnits(x) {\n  return x * 2;\n}\n"),
                (
                    "util.ts",
                    "export interface Shape { area(): number }\nexport function convertShape(s: Shape): number {\n  return s.area();\n}\n",
                ),
                ("view.tsx", "export function Panel() {\n  return <div/>;\n}\n"),
                ("conv.go", "package conv\n\nfunc ConvertUnits(x float64) float64 {\n\treturn x * 2\n}\n"),
            ],
        );
        assert_eq!(workspace.index.file_count(), 5);
        for name in ["Meter", "convert_units", "convertUnits", "Shape", "convertShape", "Panel", "ConvertUnits"] {
            let term = workspace.index.term(name).unwrap_or_else(|| panic!("{name} is indexed"));
            assert!(!workspace.index.definitions(term).is_empty(), "{name} has a definition");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
