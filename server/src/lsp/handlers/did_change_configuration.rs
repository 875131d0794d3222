//! `workspace/didChangeConfiguration`: new settings, pushed in the notification or pulled with
//! `workspace/configuration` when the notification carries none.

use ls_types::{ConfigurationItem, ConfigurationParams, MessageType};
use serde_json::Value;

use crate::config;
use crate::lsp::server::{PendingReply, Server};

#[derive(serde::Deserialize)]
pub struct Params {
    #[serde(default)]
    settings: Value,
}

pub fn handle(server: &mut Server, params: Params) {
    let has_nib_settings = match &params.settings {
        Value::Object(map) => !map.is_empty(),
        _ => false,
    };
    if has_nib_settings {
        apply(server, &params.settings);
    } else if server.client.configuration_request {
        server.request_client(
            "workspace/configuration",
            serde_json::to_value(ConfigurationParams {
                items: vec![ConfigurationItem { scope_uri: None, section: Some("nib".into()) }],
            })
            .expect("LSP types serialize"),
            PendingReply::Configuration,
        );
    }
}

/// Validates and applies settings; warns once per bad key; reloads the model when its
/// settings changed.
pub fn apply(server: &mut Server, settings: &Value) {
    let (config, warnings) = config::parse(&crate::config::Config::default(), settings);
    for warning in warnings {
        server.show(MessageType::WARNING, warning);
    }
    let context_changed = server.config.context != config.context;
    server.config = config;
    server.engine.configure(&server.config);
    if context_changed {
        super::did_change_watched_files::configure_index(server);
    }
    super::engine_event::refresh_verification(server);
}
