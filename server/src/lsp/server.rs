//! The main loop. One thread owns all server state (documents, configuration, lifecycle) and
//! handles messages one at a time, so state is never shared and never locked; a reader thread
//! feeds it frames from stdin, a writer thread drains replies to stdout. Inference runs on the
//! engine's own thread and file I/O and subprocesses on the worker pool; their results come
//! back to the main loop as [`Message`]s, which it applies like any other message.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use ls_types::MessageType;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::handlers;
use super::handlers::inline_completion::CompletionState;
use super::jsonrpc::{self, Incoming, RequestId, ResponseError, code};
use super::transport::{Frame, MessageReader, write_frame};
use crate::config::Config;
use crate::document::Document;
use crate::engine::{CancelToken, EngineHandle};
use crate::index::IndexHandle;
use crate::pool::WorkerPool;
use crate::position::PositionEncoding;

/// Work handed back to the main loop, typically the result of inference or of pool work:
/// it runs there with the server's state, like a handler.
pub type Message = Box<dyn FnOnce(&mut Server) + Send>;

/// Posts [`Message`]s to the main loop from any thread.
#[derive(Clone)]
pub struct MainLoop(Sender<Message>);

impl MainLoop {
    /// Runs `work` on the main loop after the messages already waiting. Dropped (with
    /// whatever `Responder` it holds, which then answers with an error) once the server exits.
    pub fn post(&self, work: impl FnOnce(&mut Server) + Send + 'static) {
        let _ = self.0.send(Box::new(work));
    }
}

/// Frames read ahead of the main loop.
const FRAME_QUEUE: usize = 16;

/// The longest `exit` waits for the engine, the pool and the last replies to be written.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Threads of the worker pool: file reads and subprocesses rarely overlap more than this.
const POOL_THREADS: usize = 2;

/// Answers one request exactly once. Dropping it unanswered (a panic, a forgotten path, an
/// engine that died) sends an internal error, so no request ever waits forever.
pub struct Responder {
    id: Option<RequestId>,
    output: Sender<Value>,
}

impl Responder {
    pub fn id(&self) -> &RequestId {
        self.id.as_ref().expect("responder already used")
    }

    /// Answers with a reply typed by `ls_types` (or any serializable value).
    pub fn reply<T: serde::Serialize>(self, result: Result<T, ResponseError>) {
        self.respond(result.map(|value| serde_json::to_value(value).expect("LSP types serialize")));
    }

    pub fn respond(mut self, result: Result<Value, ResponseError>) {
        if let Some(id) = self.id.take() {
            let _ = self.output.send(jsonrpc::response(Some(&id), result));
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let error = ResponseError::new(code::INTERNAL_ERROR, "the request failed before it could be answered");
            let _ = self.output.send(jsonrpc::response(Some(&id), Err(error)));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Uninitialized,
    Running,
    ShutDown,
}

/// What to do with the reply to a request nib sent to the client.
pub enum PendingReply {
    /// `workspace/configuration` for the `nib` section.
    Configuration,
    /// Replies nib has no use for (`window/workDoneProgress/create`, `workspace/applyEdit`).
    Ignore,
}

/// What the client said it can do, reduced to what nib acts on.
#[derive(Clone, Debug, Default)]
pub struct ClientSupport {
    pub configuration_request: bool,
    pub work_done_progress: bool,
    pub code_action_resolve: bool,
    pub apply_edit: bool,
    pub inline_completion: bool,
    /// `workspace/didChangeWatchedFiles` may be registered with `client/registerCapability`.
    pub watched_files_registration: bool,
    /// `workspace.workspaceEdit`: versioned changes, file creation.
    pub edit: super::workspace_edit::EditSupport,
}

pub struct Server {
    pub output: Sender<Value>,
    pub documents: HashMap<String, Document>,
    pub encoding: PositionEncoding,
    pub config: Config,
    pub client: ClientSupport,
    pub workspace_folders: Vec<PathBuf>,
    pub engine: EngineHandle,
    /// Where file I/O and subprocesses run (never on this thread or the engine's).
    pub pool: WorkerPool,
    /// How engine and pool threads hand results back to this loop.
    pub main_loop: MainLoop,
    /// Cancellation tokens of requests still running on the engine, for `$/cancelRequest`.
    pub in_flight: HashMap<RequestId, CancelToken>,
    pub completions: CompletionState,
    /// The workspace index's thread, for completion context from the whole repository.
    pub index: IndexHandle,
    /// `$/progress` tokens of running code actions and how to cancel them.
    pub progress_tokens: Vec<(String, CancelToken)>,
    /// Explicit requests waiting for the model to finish loading.
    pub waiting_for_model: super::model_wait::Waiting,
    /// What **Generate unit tests** runs tests with, as `nib/status` reports it (null until
    /// found: `engine_event::refresh_verification`).
    pub verification: serde_json::Value,
    next_progress_id: u64,
    lifecycle: Lifecycle,
    next_request_id: i64,
    pending_replies: HashMap<RequestId, PendingReply>,
}

/// Runs the server over the given streams until `exit` or the end of the input. Returns the
/// process exit code: 0 after a proper `shutdown`/`exit` or when the client closes the stream,
/// 1 on `exit` without `shutdown` (as the spec asks).
pub fn run(input: impl BufRead + Send + 'static, output: impl Write + Send + 'static) -> i32 {
    // Bounded: while the main loop is busy the reader waits, and the client's writes with it,
    // instead of frames (up to 64 MiB each) piling up in memory.
    let (incoming_sender, incoming) = crossbeam_channel::bounded::<Frame>(FRAME_QUEUE);
    let (output_sender, output_receiver) = crossbeam_channel::unbounded::<Value>();
    std::thread::Builder::new()
        .name("nib-reader".into())
        .spawn(move || {
            let mut reader = MessageReader::new(input);
            loop {
                let frame = reader.read_frame().unwrap_or(Frame::Eof);
                let end = frame == Frame::Eof;
                if incoming_sender.send(frame).is_err() || end {
                    return;
                }
            }
        })
        .expect("spawn reader thread");
    let writer = std::thread::Builder::new()
        .name("nib-writer".into())
        .spawn(move || {
            let mut output = output;
            for message in output_receiver {
                let body = serde_json::to_vec(&message).expect("JSON values always serialize");
                if write_frame(&mut output, &body).is_err() {
                    return; // The client is gone; the reader will see the end of input.
                }
            }
        })
        .expect("spawn writer thread");

    let (messages_sender, messages) = crossbeam_channel::unbounded::<Message>();
    // The engine's events reach the main loop like results, in order with them.
    let engine_events = MainLoop(messages_sender.clone());
    let engine = EngineHandle::start(move |event| {
        engine_events.post(move |server| handlers::engine_event::handle(server, event));
    });
    // A new answer of the workspace index may change the prompt head: the main loop re-warms.
    let index_answers = MainLoop(messages_sender.clone());
    let index = IndexHandle::start(Box::new(move |key| {
        let key = key.clone();
        index_answers.post(move |server| super::prewarm::index_answered(server, &key));
    }));
    let mut server = Server {
        output: output_sender,
        documents: HashMap::new(),
        encoding: PositionEncoding::default(),
        config: Config::default(),
        client: ClientSupport::default(),
        workspace_folders: Vec::new(),
        engine,
        pool: WorkerPool::start(POOL_THREADS),
        main_loop: MainLoop(messages_sender),
        in_flight: HashMap::new(),
        completions: CompletionState::default(),
        index,
        progress_tokens: Vec::new(),
        waiting_for_model: Default::default(),
        verification: serde_json::Value::Null,
        next_progress_id: 0,
        lifecycle: Lifecycle::Uninitialized,
        next_request_id: 0,
        pending_replies: HashMap::new(),
    };
    let exit_code = server.main_loop(&incoming, &messages);
    // Leave within EXIT_WAIT whatever still runs (a generation that does not notice its
    // cancellation, a remote request holding a reply): the process ends when `run` returns.
    server.cancel_everything();
    let deadline = Instant::now() + EXIT_WAIT;
    server.engine.stop_by(deadline);
    server.pool.stop_by(deadline);
    drop(server);
    drop(messages);
    crate::pool::join_by(writer, deadline);
    exit_code
}

#[cfg(test)]
impl Server {
    /// A server without streams, past `initialize`, on `engine` and with `folders` as its
    /// workspace, for handler tests. What it writes arrives on the first receiver; what its
    /// engine and pool post to the main loop on the second, for the test to run in turn.
    pub(crate) fn for_tests(
        engine: EngineHandle,
        folders: Vec<PathBuf>,
    ) -> (Server, Receiver<Value>, Receiver<Message>) {
        let (output, written) = crossbeam_channel::unbounded();
        let (messages_sender, messages) = crossbeam_channel::unbounded::<Message>();
        let client = ClientSupport {
            work_done_progress: true,
            code_action_resolve: true,
            edit: super::workspace_edit::EditSupport { document_changes: true, create_files: true },
            ..ClientSupport::default()
        };
        let server = Server {
            output,
            documents: HashMap::new(),
            encoding: PositionEncoding::default(),
            config: Config::default(),
            client,
            workspace_folders: folders,
            engine,
            pool: WorkerPool::start(POOL_THREADS),
            main_loop: MainLoop(messages_sender),
            in_flight: HashMap::new(),
            completions: CompletionState::default(),
            index: IndexHandle::start(Box::new(|_| {})),
            progress_tokens: Vec::new(),
            waiting_for_model: Default::default(),
            verification: Value::Null,
            next_progress_id: 0,
            lifecycle: Lifecycle::Running,
            next_request_id: 0,
            pending_replies: HashMap::new(),
        };
        (server, written, messages)
    }

    /// Handles a request as if it had come from the client.
    pub(crate) fn request_for_tests(&mut self, id: i64, method: &str, params: Value) {
        let request = Incoming::Request { id: RequestId::Number(id), method: method.into(), params };
        assert!(self.handle_message(request).is_none());
    }
}

impl Server {
    fn main_loop(&mut self, incoming: &Receiver<Frame>, messages: &Receiver<Message>) -> i32 {
        loop {
            // The typing-pause pre-warm's timer; no thread sleeps for it.
            let pause = match &self.completions.pause {
                Some(pause) => crossbeam_channel::at(pause.at()),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(pause) -> _ => {
                    self.guarded("a typing pause", super::prewarm::pause_elapsed);
                }
                recv(incoming) -> frame => match frame {
                    Ok(Frame::Body(body)) => {
                        if let Some(exit_code) = self.handle_message(Incoming::parse(&body)) {
                            return exit_code;
                        }
                    }
                    Ok(Frame::Malformed(why)) => {
                        tracing::warn!("malformed message: {why}");
                        let error = ResponseError::new(code::PARSE_ERROR, why);
                        self.send(jsonrpc::response(None, Err(error)));
                    }
                    Ok(Frame::Eof) | Err(_) => {
                        tracing::info!("input closed; exiting");
                        return 0;
                    }
                },
                recv(messages) -> message => {
                    if let Ok(message) = message {
                        self.guarded("a result", message);
                    }
                }
            }
            if incoming.is_empty() {
                self.guarded("a pre-warm", super::prewarm::when_idle);
            }
        }
    }

    /// Runs `work`, turning a panic into a log line: one bad request never takes the server down.
    fn guarded(&mut self, what: &str, work: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| work(self))).is_err() {
            self.log(MessageType::ERROR, format!("internal error while handling {what}; the server carries on"));
        }
    }

    /// Handles one message; returns an exit code when the server must stop.
    fn handle_message(&mut self, message: Incoming) -> Option<i32> {
        match message {
            Incoming::Invalid { id, error } => {
                tracing::warn!("invalid message: {}", error.message);
                self.send(jsonrpc::response(id.as_ref(), Err(error)));
            }
            Incoming::Response { id, result } => {
                if let Some(pending) = self.pending_replies.remove(&id) {
                    self.guarded("a client reply", |server| handlers::client_reply(server, pending, result));
                }
            }
            Incoming::Notification { method, params } => {
                if method == "exit" {
                    return Some(if self.lifecycle == Lifecycle::ShutDown { 0 } else { 1 });
                }
                if self.lifecycle == Lifecycle::Running {
                    self.guarded(&method.clone(), |server| handlers::notification(server, &method, params));
                }
            }
            Incoming::Request { id, method, params } => {
                let responder = Responder { id: Some(id), output: self.output.clone() };
                match (self.lifecycle, method.as_str()) {
                    (Lifecycle::Uninitialized, "initialize") => {
                        let result = parse_params(params).map(|params| handlers::initialize::handle(self, params));
                        if result.is_ok() {
                            self.lifecycle = Lifecycle::Running;
                        }
                        responder.reply(result);
                    }
                    (Lifecycle::Uninitialized, _) => responder.respond(Err(ResponseError::new(
                        code::SERVER_NOT_INITIALIZED,
                        "the server is not initialized",
                    ))),
                    (_, "initialize") => responder
                        .respond(Err(ResponseError::new(code::INVALID_REQUEST, "the server is already initialized"))),
                    (Lifecycle::ShutDown, _) => {
                        responder.respond(Err(ResponseError::new(code::INVALID_REQUEST, "the server is shutting down")))
                    }
                    (Lifecycle::Running, "shutdown") => {
                        self.lifecycle = Lifecycle::ShutDown;
                        self.cancel_everything();
                        responder.respond(Ok(Value::Null));
                    }
                    (Lifecycle::Running, _) => {
                        self.guarded(&method.clone(), move |server| {
                            handlers::request(server, responder, &method, params)
                        });
                    }
                }
            }
        }
        None
    }

    /// Cancels all work in flight: jobs, code actions (their generations, planning and
    /// progress) and the running completion. Their requests are answered `RequestCancelled`.
    fn cancel_everything(&mut self) {
        self.engine.cancel_all();
        for token in self.in_flight.values().chain(self.progress_tokens.iter().map(|(_, token)| token)) {
            token.cancel();
        }
        if let Some(current) = self.completions.current.take() {
            current.cancel();
        }
    }

    /// After `shutdown`: nothing may be started or applied any more (no `workspace/applyEdit`).
    pub fn shutting_down(&self) -> bool {
        self.lifecycle == Lifecycle::ShutDown
    }

    /// Registers a request's token so `$/cancelRequest` can reach it; forgets finished ones.
    pub fn track(&mut self, id: &RequestId, token: &CancelToken) {
        self.in_flight.retain(|_, token| !token.is_finished());
        self.in_flight.insert(id.clone(), token.clone());
    }

    pub fn next_progress_id(&mut self) -> u64 {
        self.next_progress_id += 1;
        self.next_progress_id
    }

    pub fn send(&self, message: Value) {
        // The writer only goes away when the client is gone; nothing is left to tell then.
        let _ = self.output.send(message);
    }

    pub fn notify(&self, method: &str, params: Value) {
        self.send(jsonrpc::notification(method, params));
    }

    /// Sends a notification that `ls_types` types.
    pub fn notify_typed<N: ls_types::notification::Notification>(&self, params: N::Params) {
        self.notify(N::METHOD, serde_json::to_value(params).expect("LSP types serialize"));
    }

    /// Reports work-done progress under `token` (`$/progress`).
    pub fn progress(&self, token: &str, value: ls_types::WorkDoneProgress) {
        self.notify_typed::<ls_types::notification::Progress>(ls_types::ProgressParams {
            token: ls_types::NumberOrString::String(token.to_string()),
            value: ls_types::ProgressParamsValue::WorkDone(value),
        });
    }

    /// Asks the client to create the progress `token` (`window/workDoneProgress/create`).
    pub fn create_progress(&mut self, token: &str) {
        let params =
            ls_types::WorkDoneProgressCreateParams { token: ls_types::NumberOrString::String(token.to_string()) };
        let params = serde_json::to_value(params).expect("LSP types serialize");
        self.request_client("window/workDoneProgress/create", params, PendingReply::Ignore);
    }

    /// Sends a request to the client; its reply is routed by `pending`.
    pub fn request_client(&mut self, method: &str, params: Value, pending: PendingReply) {
        self.next_request_id += 1;
        let id = RequestId::String(format!("nib-{}", self.next_request_id));
        self.send(jsonrpc::request(&id, method, params));
        self.pending_replies.insert(id, pending);
    }

    /// Logs to stderr and to the client's log (`window/logMessage`).
    pub fn log(&self, level: MessageType, message: impl Into<String>) {
        let message = message.into();
        match level {
            MessageType::ERROR => tracing::error!("{message}"),
            MessageType::WARNING => tracing::warn!("{message}"),
            _ => tracing::info!("{message}"),
        }
        self.notify_typed::<ls_types::notification::LogMessage>(ls_types::LogMessageParams { typ: level, message });
    }

    /// Logs and shows a message to the user (`window/showMessage`).
    pub fn show(&self, level: MessageType, message: impl Into<String>) {
        let message = message.into();
        self.log(level, message.clone());
        let message = format!("nib: {message}");
        self.notify_typed::<ls_types::notification::ShowMessage>(ls_types::ShowMessageParams { typ: level, message });
    }
}

/// Deserializes request parameters, answering bad ones with `InvalidParams`.
pub fn parse_params<P: DeserializeOwned>(params: Value) -> Result<P, ResponseError> {
    serde_json::from_value(params).map_err(|error| ResponseError::invalid_params(format!("invalid params: {error}")))
}
