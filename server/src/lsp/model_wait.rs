//! Explicit requests that arrive while the model is still loading (a completion the user
//! invoked, a code action) wait for it instead of failing: they are parked here and resumed
//! when the engine reports the model ready or failed. The wait is bounded by
//! `nib.requestTimeoutMs` and cancellable (`$/cancelRequest`, `shutdown`); the model-load
//! `$/progress` shows what is being waited for. Automatic completions do not wait (they answer
//! empty), so typing never queues work behind a load.

use std::time::{Duration, Instant};

use crate::engine::{CancelToken, ModelState};
use crate::lsp::jsonrpc::ResponseError;
use crate::lsp::server::{Responder, Server};

/// How often a parked request's watcher checks for cancellation and its deadline.
const TICK: Duration = Duration::from_millis(20);

/// Re-runs a parked request once the model settled.
type Resume = Box<dyn FnOnce(&mut Server, Responder) + Send>;

/// The requests waiting for the model, owned by the main loop.
#[derive(Default)]
pub struct Waiting {
    entries: Vec<Entry>,
    next_id: u64,
}

struct Entry {
    id: u64,
    token: CancelToken,
    responder: Responder,
    resume: Resume,
}

/// Whether a request that needs the model must wait for it now.
pub fn model_is_loading(server: &Server) -> bool {
    matches!(server.engine.status().state, ModelState::Loading { .. } | ModelState::Unloaded)
}

/// Parks `responder` until the model is ready or failed, then calls `resume` with it on the
/// main loop; answers it with an error if that takes longer than `nib.requestTimeoutMs` or the
/// request is cancelled first.
pub fn park(server: &mut Server, responder: Responder, resume: impl FnOnce(&mut Server, Responder) + Send + 'static) {
    let token = CancelToken::default();
    server.track(responder.id(), &token);
    let waiting = &mut server.waiting_for_model;
    waiting.next_id += 1;
    let id = waiting.next_id;
    waiting.entries.push(Entry { id, token: token.clone(), responder, resume: Box::new(resume) });
    let timeout = Duration::from_millis(server.config.request_timeout_ms);
    let main_loop = server.main_loop.clone();
    let watcher = move || {
        let deadline = Instant::now() + timeout;
        while !token.is_finished() {
            if token.is_cancelled() || Instant::now() >= deadline {
                return main_loop.post(move |server| give_up(server, id, timeout));
            }
            std::thread::sleep(TICK);
        }
    };
    if let Err(error) = std::thread::Builder::new().name("nib-wait".into()).spawn(watcher) {
        // Without a watcher the wait is still ended by the model settling; only the bound is lost.
        tracing::error!("cannot start a thread to bound a wait for the model: {error}");
    }
}

/// The model is ready or failed: every parked request runs again (and gets its answer now).
pub fn resume_all(server: &mut Server) {
    for entry in std::mem::take(&mut server.waiting_for_model.entries) {
        entry.token.finish();
        (entry.resume)(server, entry.responder);
    }
}

/// Ends the wait of request `id` (cancelled or out of time), if it still waits.
fn give_up(server: &mut Server, id: u64, timeout: Duration) {
    let entries = &mut server.waiting_for_model.entries;
    let Some(index) = entries.iter().position(|entry| entry.id == id) else { return };
    let entry = entries.swap_remove(index);
    entry.token.finish();
    let answer = if entry.token.is_cancelled() {
        ResponseError::cancelled()
    } else {
        ResponseError::request_failed(format!(
            "the model is still loading after {} ms (nib.requestTimeoutMs); try again once it is ready",
            timeout.as_millis()
        ))
    };
    entry.responder.respond(Err(answer));
}
