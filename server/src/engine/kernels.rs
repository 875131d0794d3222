//! nib's own kernels put into the loaded graph: each pass (`attention::PASS`, `linear::PASS`)
//! rewrites the model's bytes in memory so that the nodes it implements run its ONNX Runtime
//! custom operator, then the session is committed from those bytes with every pass's operator
//! domain registered. The model file stays as it is. When putting the kernels in fails, a
//! warning says why and the file runs as it is, with ONNX Runtime's kernels.

use std::path::Path;

use ort::operator::OperatorDomain;
use ort::session::Session;
use ort::session::builder::SessionBuilder;

use super::{attention, linear};

/// Whether nib's kernel behind the environment variable `switch` is to run: unless it says
/// `onnxruntime` (ONNX Runtime's own kernel, for A/B comparisons).
pub(crate) fn selected(switch: &str) -> bool {
    std::env::var(switch).map_or(true, |value| value != "onnxruntime")
}

/// CPU time of the calling thread (the kernels' timing tests): on a shared machine, time the
/// thread waited for a core does not count.
#[cfg(test)]
pub(crate) fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// The rewritten model and how many nodes moved to the pass's domain.
pub(crate) type Rewrite = fn(&[u8]) -> Result<(Vec<u8>, usize), String>;

/// One rewrite: how it changes the model's bytes, and the operators the result needs.
pub(crate) struct Pass {
    /// What runs after the pass, and what it replaces (for logs).
    pub kernel: &'static str,
    pub replaces: &'static str,
    pub rewrite: Rewrite,
    pub domain: fn() -> ort::Result<OperatorDomain>,
}

/// Which of nib's kernels a session gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    pub attention: bool,
    pub linear: bool,
}

impl Kernels {
    /// The kernels the environment selects (`NIB_ATTENTION`, `NIB_LINEAR`; both by default).
    pub fn from_env() -> Self {
        Kernels { attention: attention::nib_kernel_selected(), linear: linear::nib_kernel_selected() }
    }

    fn passes(self) -> Vec<&'static Pass> {
        let mut passes = Vec::new();
        if self.attention {
            passes.push(&attention::PASS);
        }
        if self.linear {
            passes.push(&linear::PASS);
        }
        passes
    }
}

/// Commits `builder` on the model at `path` with the selected kernels in place of the nodes
/// they implement, else the file as it is.
pub(crate) fn commit(builder: SessionBuilder, path: &Path, kernels: Kernels) -> ort::Result<Session> {
    let passes = kernels.passes();
    commit_or_fall_back(builder, path, |builder, path| with_nib_kernels(builder, path, &passes))
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
                "nib's kernels could not be put into {}: {why}; ONNX Runtime's own kernels run instead",
                path.display()
            );
            builder.commit_from_file(path)
        }
    }
}

/// The session with the passes' kernels, or None when no pass moved a node.
fn with_nib_kernels(mut builder: SessionBuilder, path: &Path, passes: &[&Pass]) -> ort::Result<Option<Session>> {
    if passes.is_empty() {
        return Ok(None);
    }
    let mut model = std::fs::read(path).map_err(|why| ort::Error::new(format!("cannot read the model: {why}")))?;
    let mut moved_any = false;
    for pass in passes {
        let (rewritten, moved) = (pass.rewrite)(&model).map_err(ort::Error::new)?;
        if moved == 0 {
            continue;
        }
        tracing::debug!(nodes = moved, "{} runs in place of {}", pass.kernel, pass.replaces);
        (model, moved_any) = (rewritten, true);
        builder = builder.with_operators((pass.domain)()?)?;
    }
    if !moved_any {
        return Ok(None);
    }
    let folder = path.parent().unwrap_or(Path::new("."));
    // The weights stay in their own file next to the model: tell ONNX Runtime where.
    let mut builder =
        builder.with_config_entry("session.model_external_initializers_file_folder_path", folder.to_string_lossy())?;
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
    fn the_fixture_runs_nib_attention_kernel() {
        let session =
            with_nib_kernels(builder(), &fixture_model(), &[&attention::PASS]).expect("nib's kernel is put in");
        assert!(session.is_some(), "the fixture's GroupQueryAttention nodes are moved to nib's domain");
    }

    #[test]
    fn a_model_without_nodes_a_pass_implements_is_committed_as_it_is() {
        // The fixture's linear layers are fp32 MatMul: the linear pass moves nothing.
        let session = with_nib_kernels(builder(), &fixture_model(), &[&linear::PASS]).expect("no failure");
        assert!(session.is_none());
    }

    /// Whatever goes wrong while putting nib's kernels in, the model still loads, with ONNX
    /// Runtime's own kernels.
    #[test]
    fn a_failed_kernel_falls_back_to_onnx_runtime() {
        let failing = |_: SessionBuilder, _: &Path| Err(ort::Error::new("the custom operator was refused"));
        let session = commit_or_fall_back(builder(), &fixture_model(), failing).expect("the file as it is loads");
        assert!(session.inputs().iter().any(|input| input.name() == "input_ids"));
    }
}
