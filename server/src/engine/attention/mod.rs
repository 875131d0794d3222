//! nib's own attention kernel in place of ONNX Runtime's GroupQueryAttention on the CPU: an
//! ONNX Runtime custom operator (`op`) running `kernel`'s blocked attention (decode and
//! prefill chunks alike), put into the graph at load time (`graph`) so the model file stays as
//! it is. `NIB_ATTENTION=onnxruntime` keeps ONNX Runtime's built-in kernel (for A/B
//! comparisons); so does any failure to put nib's in, with a warning.

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
/// GroupQueryAttention it implements when selected, else the file as it is. When putting nib's
/// kernel in fails, a warning says why and ONNX Runtime's own kernel runs instead.
pub(crate) fn commit(mut builder: SessionBuilder, path: &Path) -> ort::Result<Session> {
    if !nib_kernel_selected() {
        return builder.commit_from_file(path);
    }
    commit_or_fall_back(builder, path, with_nib_kernel)
}

/// `attempt` on a copy of `builder`; the file as it is when it moved no node or failed.
fn commit_or_fall_back(
    mut builder: SessionBuilder,
    path: &Path,
    attempt: impl FnOnce(SessionBuilder, &Path) -> ort::Result<Option<Session>>,
) -> ort::Result<Session> {
    match attempt(builder.clone(), path) {
        Ok(Some(session)) => Ok(session),
        Ok(None) => builder.commit_from_file(path),
        Err(why) => {
            tracing::warn!(
                "nib's attention kernel could not be put into {}: {why}; ONNX Runtime's GroupQueryAttention runs instead",
                path.display()
            );
            builder.commit_from_file(path)
        }
    }
}

/// The session with nib's kernel, or None when the model has no node it implements.
fn with_nib_kernel(builder: SessionBuilder, path: &Path) -> ort::Result<Option<Session>> {
    let bytes = std::fs::read(path).map_err(|why| ort::Error::new(format!("cannot read the model: {why}")))?;
    let (model, moved) = graph::rewrite(&bytes).map_err(ort::Error::new)?;
    if moved == 0 {
        return Ok(None);
    }
    tracing::debug!(nodes = moved, "GroupQueryAttention runs nib's attention kernel");
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut builder = builder
        .with_operators(OperatorDomain::new(graph::DOMAIN)?.add(op::GroupQueryAttention)?)?
        // The weights stay in their own file next to the model: tell ONNX Runtime where.
        .with_config_entry("session.model_external_initializers_file_folder_path", folder.to_string_lossy())?;
    builder.commit_from_memory(&model).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_model() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-model/model.onnx")
    }

    fn builder() -> SessionBuilder {
        let environment = crate::engine::runtime::environment(None).expect("ONNX Runtime");
        Session::builder(environment).expect("a session builder")
    }

    #[test]
    fn the_fixture_runs_nib_kernel() {
        let session = with_nib_kernel(builder(), &fixture_model()).expect("nib's kernel is put in");
        assert!(session.is_some(), "the fixture's GroupQueryAttention nodes are moved to nib's domain");
    }

    /// Whatever goes wrong while putting nib's kernel in, the model still loads, with ONNX
    /// Runtime's own kernel.
    #[test]
    fn a_failed_kernel_falls_back_to_onnx_runtime() {
        let failing = |_: SessionBuilder, _: &Path| Err(ort::Error::new("the custom operator was refused"));
        let session = commit_or_fall_back(builder(), &fixture_model(), failing).expect("the file as it is loads");
        assert!(session.inputs().iter().any(|input| input.name() == "input_ids"));
    }
}
