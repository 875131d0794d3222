//! `workspace/didChangeWatchedFiles`: files created, changed or deleted outside the editor
//! (a `git checkout`, a formatter, another tool) reach the workspace index. nib registers for
//! them with `client/registerCapability` once the client says it is `initialized`, where the
//! client supports dynamic registration.

use ls_types::{DidChangeWatchedFilesParams, FileChangeType};
use serde_json::json;

use crate::document::file_uri_to_path;
use crate::index::Settings;
use crate::lsp::server::{PendingReply, Server};

/// The source files the index reads, as one glob for the client's file watcher.
const WATCHED_GLOB: &str = "**/*.{py,pyi,rs,js,mjs,cjs,jsx,ts,mts,cts,tsx,go}";

pub fn handle(server: &mut Server, params: DidChangeWatchedFilesParams) {
    for change in params.changes {
        if let Some(path) = file_uri_to_path(change.uri.as_str()) {
            server.index.file_event(&path, change.typ == FileChangeType::DELETED);
        }
    }
}

/// Asks the client to report changes to source files, when the index is on and the client
/// can register watchers dynamically.
pub fn register(server: &mut Server) {
    if !server.client.watched_files_registration || !server.config.context.workspace {
        return;
    }
    let registration = json!({
        "registrations": [{
            "id": "nib-watched-files",
            "method": "workspace/didChangeWatchedFiles",
            "registerOptions": { "watchers": [{ "globPattern": WATCHED_GLOB }] },
        }],
    });
    server.request_client("client/registerCapability", registration, PendingReply::Ignore);
}

/// (Re)starts the workspace index with the current folders and `nib.context.*` settings.
pub fn configure_index(server: &mut Server) {
    let settings = Settings { enabled: server.config.context.workspace, max_files: server.config.context.max_files };
    server.index.configure(&server.workspace_folders, &settings);
    // Open buffers are the live text of their files: the new index takes them again.
    for document in server.documents.values() {
        if let Some(snapshot) = crate::index::Snapshot::text_only(document) {
            server.index.buffer(snapshot, 0, false);
        }
    }
}
