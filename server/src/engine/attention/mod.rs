//! nib's own attention kernel in place of ONNX Runtime's GroupQueryAttention on the CPU: an
//! ONNX Runtime custom operator (`op`) running `kernel`'s blocked, memory-bound decode
//! attention, put into the graph at load time (`graph`) so the model file stays as it is.
//! `NIB_ATTENTION=onnxruntime` keeps ONNX Runtime's built-in kernel (for A/B comparisons).

mod graph;
mod kernel;
mod op;

use std::path::Path;

use ort::operator::OperatorDomain;
use ort::session::Session;
use ort::session::builder::SessionBuilder;

/// The environment variable that picks the attention kernel; `onnxruntime` picks ONNX
/// Runtime's own GroupQueryAttention, anything else (or unset) nib's.
pub const SWITCH: &str = "NIB_ATTENTION";

/// Whether nib's kernel is to run (see `SWITCH`).
pub fn nib_kernel_selected() -> bool {
    std::env::var(SWITCH).map_or(true, |value| value != "onnxruntime")
}

/// Commits `builder` on the model at `path`: with nib's kernel in place of every
/// GroupQueryAttention it implements when selected, else the file as it is.
pub(crate) fn commit(mut builder: SessionBuilder, path: &Path) -> ort::Result<Session> {
    if !nib_kernel_selected() {
        return builder.commit_from_file(path);
    }
    let Ok(bytes) = std::fs::read(path) else {
        return builder.commit_from_file(path); // ONNX Runtime reports why it cannot read it
    };
    let (model, moved) = match graph::rewrite(&bytes) {
        Ok(rewritten) => rewritten,
        Err(why) => return Err(ort::Error::new(format!("{}: {why}", path.display()))),
    };
    if moved == 0 {
        return builder.commit_from_file(path);
    }
    tracing::debug!(nodes = moved, "GroupQueryAttention runs nib's attention kernel");
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut builder = builder
        .with_operators(OperatorDomain::new(graph::DOMAIN)?.add(op::GroupQueryAttention)?)?
        // The weights stay in their own file next to the model: tell ONNX Runtime where.
        .with_config_entry("session.model_external_initializers_file_folder_path", folder.to_string_lossy())?;
    builder.commit_from_memory(&model)
}
