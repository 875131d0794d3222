//! nib's own attention kernel in place of ONNX Runtime's GroupQueryAttention on the CPU: an
//! ONNX Runtime custom operator (`op`) running `kernel`'s blocked attention (decode and
//! prefill chunks alike), put into the graph at load time (`graph`) so the model file stays as
//! it is. `NIB_ATTENTION=onnxruntime` keeps ONNX Runtime's built-in kernel (for A/B
//! comparisons); so does any failure to put nib's in, with a warning.

mod graph;
mod kernel;
mod op;

use ort::operator::OperatorDomain;

use super::kernels::Pass;

/// The environment variable that picks the attention kernel; `onnxruntime` picks ONNX
/// Runtime's own GroupQueryAttention, anything else (or unset) nib's.
pub const SWITCH: &str = "NIB_ATTENTION";

/// Whether nib's kernel is to run (see `SWITCH`).
pub fn nib_kernel_selected() -> bool {
    super::kernels::selected(SWITCH)
}

/// The rewrite that puts nib's kernel into a model (committed by `engine::kernels`).
pub(crate) const PASS: Pass = Pass {
    kernel: "nib's attention kernel",
    replaces: "ONNX Runtime's GroupQueryAttention",
    rewrite: graph::rewrite,
    domain: || OperatorDomain::new(graph::DOMAIN)?.add(op::GroupQueryAttention),
    kv_row_group: kernel::PANEL,
};
