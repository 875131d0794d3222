//! nib's own kernels put into the loaded graph: each pass (`attention::PASS`, `linear::PASS`)
//! rewrites the model's bytes in memory so that the nodes it implements run its ONNX Runtime
//! custom operator, then the session is committed from those bytes with every pass's operator
//! domain registered. The model file stays as it is. When putting the kernels in fails, a
//! warning says why and the file runs as it is, with ONNX Runtime's kernels.
//!
//! The result says whether a row's logits depend only on its token and position, however many
//! rows run together (`Committed::rows_independent`): true when nothing of ONNX Runtime's that
//! takes another path for a single row is left in the graph (nib's kernels never do; ONNX
//! Runtime's int8 MatMulNBits does); a file committed as it is, with ONNX Runtime's kernels,
//! says false.

use std::path::Path;

use ort::operator::OperatorDomain;
use ort::session::Session;
use ort::session::builder::SessionBuilder;

use super::{attention, linear, onnx_proto};

/// ONNX Runtime's operators that may compute a lone row another way than a row among several
/// (its MatMulNBits with int8 activations measurably does: a few tenths of a logit). nib's
/// operators (domains `nib.*`) never do.
const ROW_COUNT_DEPENDENT: &[&str] =
    &["MatMulNBits", "MatMul", "FusedMatMul", "Gemm", "GroupQueryAttention", "MultiHeadAttention", "Attention"];

/// A committed session, and whether its rows are independent of each other's count.
pub(crate) struct Committed {
    pub session: Session,
    /// A row's result depends only on its token and position, however many rows run with it:
    /// a lone token may run alone.
    pub rows_independent: bool,
    /// Every KV cache tensor holds a multiple of this many rows per head, copied in whole
    /// groups (nib's attention keeps keys in panels of 16 rows; 1 with ONNX Runtime's).
    pub kv_row_group: usize,
}

/// Whether `model` runs none of `ROW_COUNT_DEPENDENT` (an unreadable model: it may).
fn rows_independent(model: &[u8]) -> bool {
    let dependent = |(domain, op_type): &(String, String)| {
        !domain.starts_with("nib.") && ROW_COUNT_DEPENDENT.contains(&op_type.as_str())
    };
    onnx_proto::node_ops(model).is_ok_and(|ops| !ops.iter().any(dependent))
}

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

/// `e^x` for `x <= 0` (softmax weights, sigmoids), within about 2 ulp, 0 below -87; plain
/// arithmetic so that loops over it vectorise (Cephes' polynomial on the range-reduced
/// argument).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.max(-87.0);
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // `shifted` and ROUND share their exponent, so their bits differ by exactly n: integer
    // arithmetic that vectorises (a float-to-int cast saturates, which keeps the loop scalar).
    let n = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let scaled = y * f32::from_bits(((n + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { scaled }
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
    /// What every KV cache tensor's rows per head must be a multiple of while the pass's
    /// kernel is in the graph (1: any count).
    pub kv_row_group: usize,
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
pub(crate) fn commit(builder: SessionBuilder, path: &Path, kernels: Kernels) -> ort::Result<Committed> {
    let passes = kernels.passes();
    commit_or_fall_back(builder, path, |builder, path| with_nib_kernels(builder, path, &passes))
}

/// `attempt` on a copy of `builder`; the file as it is when it moved no node or failed.
fn commit_or_fall_back(
    builder: SessionBuilder,
    path: &Path,
    attempt: impl FnOnce(SessionBuilder, &Path) -> ort::Result<Option<Committed>>,
) -> ort::Result<Committed> {
    // ONNX Runtime's own kernels: its rows are not known to be independent.
    let as_it_is = |mut builder: SessionBuilder| {
        Ok(Committed { session: builder.commit_from_file(path)?, rows_independent: false, kv_row_group: 1 })
    };
    match attempt(builder.clone(), path) {
        Ok(Some(committed)) => Ok(committed),
        Ok(None) => as_it_is(builder),
        Err(why) => {
            tracing::warn!(
                "nib's kernels could not be put into {}: {why}; ONNX Runtime's own kernels run instead",
                path.display()
            );
            as_it_is(builder)
        }
    }
}

/// The session with the passes' kernels, or None when no pass moved a node.
fn with_nib_kernels(mut builder: SessionBuilder, path: &Path, passes: &[&Pass]) -> ort::Result<Option<Committed>> {
    if passes.is_empty() {
        return Ok(None);
    }
    let mut model = std::fs::read(path).map_err(|why| ort::Error::new(format!("cannot read the model: {why}")))?;
    let (mut moved_any, mut kv_row_group) = (false, 1);
    for pass in passes {
        let (rewritten, moved) = (pass.rewrite)(&model).map_err(ort::Error::new)?;
        if moved == 0 {
            continue;
        }
        tracing::debug!(nodes = moved, "{} runs in place of {}", pass.kernel, pass.replaces);
        (model, moved_any, kv_row_group) = (rewritten, true, kv_row_group.max(pass.kv_row_group));
        builder = builder.with_operators((pass.domain)()?)?;
    }
    if !moved_any {
        return Ok(None);
    }
    let folder = path.parent().unwrap_or(Path::new("."));
    // The weights stay in their own file next to the model: tell ONNX Runtime where.
    let mut builder =
        builder.with_config_entry("session.model_external_initializers_file_folder_path", folder.to_string_lossy())?;
    let rows_independent = rows_independent(&model);
    Ok(Some(Committed { session: builder.commit_from_memory(&model)?, rows_independent, kv_row_group }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_the_library_exp() {
        for i in 0..=20_000 {
            let x = -90.0 * i as f32 / 20_000.0;
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= want * 3e-7 || (x < -87.0 && got == 0.0), "exp({x}) = {got}, not {want}");
        }
        assert_eq!(exp(0.0), 1.0, "merge takes exp(0) as exactly 1");
    }

    fn fixture_model() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-model/model.onnx")
    }

    fn builder() -> SessionBuilder {
        let environment = crate::engine::runtime::environment(None).expect("ONNX Runtime");
        Session::builder(environment).expect("a session builder")
    }

    #[test]
    fn the_fixture_runs_nib_attention_kernel() {
        let committed =
            with_nib_kernels(builder(), &fixture_model(), &[&attention::PASS]).expect("nib's kernel is put in");
        let committed = committed.expect("the fixture's GroupQueryAttention nodes are moved to nib's domain");
        assert!(!committed.rows_independent, "the fixture's float MatMul nodes stay ONNX Runtime's");
    }

    #[test]
    fn rows_are_independent_only_without_onnx_runtimes_matrix_products_and_attention() {
        use onnx_proto::len_field;
        let node = |(domain, op_type): &(&str, &str)| {
            len_field(1, &[len_field(4, op_type.as_bytes()), len_field(7, domain.as_bytes())].concat())
        };
        let model = |ops: &[(&str, &str)]| len_field(7, &ops.iter().flat_map(node).collect::<Vec<_>>());
        let nib_attention = ("nib.attention", "GroupQueryAttention");
        let nib_linear = ("nib.linear", "QuantizedLinear");
        assert!(rows_independent(&model(&[("com.microsoft", "GatherBlockQuantized"), nib_linear, nib_attention])));
        assert!(!rows_independent(&model(&[nib_linear, ("com.microsoft", "MatMulNBits")])));
        assert!(!rows_independent(&model(&[nib_linear, ("com.microsoft", "GroupQueryAttention")])));
        assert!(!rows_independent(&model(&[("", "MatMul")])));
        assert!(!rows_independent(&[0xff]), "an unreadable model");
    }

    #[test]
    fn a_model_without_nodes_a_pass_implements_is_committed_as_it_is() {
        // The fixture's linear layers are fp32 MatMul: the linear pass moves nothing.
        let committed = with_nib_kernels(builder(), &fixture_model(), &[&linear::PASS]).expect("no failure");
        assert!(committed.is_none());
    }

    /// Whatever goes wrong while putting nib's kernels in, the model still loads, with ONNX
    /// Runtime's own kernels.
    #[test]
    fn a_failed_kernel_falls_back_to_onnx_runtime() {
        let failing = |_: SessionBuilder, _: &Path| Err(ort::Error::new("the custom operator was refused"));
        let committed = commit_or_fall_back(builder(), &fixture_model(), failing).expect("the file as it is loads");
        assert!(committed.session.inputs().iter().any(|input| input.name() == "input_ids"));
        assert!(!committed.rows_independent, "ONNX Runtime's kernels");
    }
}
