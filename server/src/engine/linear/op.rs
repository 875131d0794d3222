//! The ONNX Runtime custom operator: a 4- or 8-bit MatMulNBits (block 32, no zero points) with
//! the converter's optional offsets as a fourth input, `kernel::multiply` on the session's
//! intra-op threads. Inputs: activations `[..., K]` f32, `qweight` uint8 `[N, K/32, 16 or 32]`,
//! `scales` f32 `[N * K/32]`, optional `offsets` f32 `[K/32, N]`; output `[..., N]` f32. With
//! the attribute `swiglu` 1 the activations are a SwiGLU block's `[gate, up]` (`[..., 2K]`), of
//! which the node multiplies `silu(gate) · up`.
//! At the node's first run the weights and scales are repacked into the kernel's order
//! (`kernel::Repacked`) and the scales and offsets narrowed to f16 where every one of them is
//! exactly an f16 (`Prepared`), which the converter's GGUF sources give (their scales and
//! minimums are f16); the results keep their bits. ONNX Runtime's copies, which the node no
//! longer reads, are then paged out (`page_out`), so the memory in use does not grow.

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType::{Float32, Uint8};

use half::f16;

use super::kernel::{self, BLOCK, Bits, Repacked, Scale};

const INPUT: usize = 0;
const QWEIGHT: usize = 1;
const SCALES: usize = 2;
const OFFSETS: usize = 3;

pub(crate) struct QuantizedLinear;

/// The node's attributes.
pub(crate) struct LinearKernel {
    bits: Bits,
    inputs: usize,
    outputs: usize,
    /// The input is `[gate, up]`: the node multiplies `silu(gate) · up` (`kernel::swiglu`).
    swiglu: bool,
    /// Made at the node's first run, from the initializers at the address it keeps (the same
    /// on every run).
    prepared: Option<(usize, Prepared)>,
}

/// The node's weights in the kernel's order.
enum Prepared {
    /// Some scale or offset is not exactly an f16, or `NIB_LINEAR_SCALES=f32` asks for the
    /// stored f32.
    Wide(Repacked<f32>),
    Half(Repacked<f16>),
}

impl Prepared {
    fn from(
        (bits, outputs): (Bits, usize),
        packed: &[u8],
        (scales, offsets): (&[f32], Option<&[f32]>),
        for_each: kernel::ForEach<'_>,
    ) -> Prepared {
        let blocks = scales.len() / outputs;
        let narrowed = if keep_f32() { None } else { narrowed(scales, offsets) };
        let prepared = match narrowed {
            Some((scales, narrow_offsets)) => {
                let narrowed = (packed, &scales[..], narrow_offsets.as_deref());
                Prepared::Half(Repacked::new(bits, (outputs, blocks), narrowed, for_each))
            }
            None => Prepared::Wide(Repacked::new(bits, (outputs, blocks), (packed, scales, offsets), for_each)),
        };
        page_out(packed);
        page_out(scales);
        offsets.map(page_out);
        prepared
    }

    /// `prepared`, made from these initializers unless it was from the same ones.
    fn of<'a>(
        prepared: &'a mut Option<(usize, Prepared)>,
        node: (Bits, usize),
        packed: &[u8],
        scales: (&[f32], Option<&[f32]>),
        for_each: kernel::ForEach<'_>,
    ) -> &'a Prepared {
        let address = packed.as_ptr() as usize;
        if prepared.as_ref().is_none_or(|(from, _)| *from != address) {
            *prepared = Some((address, Prepared::from(node, packed, scales, for_each)));
        }
        &prepared.as_ref().expect("made above").1
    }
}

thread_local! {
    /// The last `silu(gate) · up` the thread computed, kept so that no call allocates.
    static GATED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn error(message: impl Into<String>) -> ort::Error {
    ort::Error::new(format!("nib linear: {}", message.into()))
}

impl Operator for QuantizedLinear {
    type Kernel<'attr> = LinearKernel;

    fn name(&self) -> &str {
        super::graph::OP_TYPE
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(Float32),
            OperatorInput::required(Uint8),
            OperatorInput::required(Float32),
            OperatorInput::optional(Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(Float32)]
    }

    fn create_kernel<'attr>(&self, context: &KernelContext<'attr>) -> ort::Result<LinearKernel> {
        let int = |name: &str| context.get::<i64>(name);
        let positive = |name: &str| {
            int(name).filter(|&n| n > 0).map(|n| n as usize).ok_or_else(|| error(format!("{name} missing")))
        };
        let (inputs, outputs) = (positive("K")?, positive("N")?);
        let bits = int("bits").and_then(Bits::from_attribute);
        let Some(bits) = bits.filter(|_| int("block_size") == Some(BLOCK as i64) && inputs.is_multiple_of(BLOCK))
        else {
            return Err(error(format!("implements 4 or 8 bits in blocks of {BLOCK} for K a multiple of {BLOCK}")));
        };
        let swiglu = int(super::graph::SWIGLU) == Some(1);
        Ok(LinearKernel { bits, inputs, outputs, swiglu, prepared: None })
    }
}

impl Kernel for LinearKernel {
    fn compute(&mut self, context: &ComputeContext) -> ort::Result<()> {
        let input = context.input(INPUT)?.ok_or_else(|| error("no input"))?;
        let (shape, x) = input.try_extract_tensor::<f32>()?;
        let width = if self.swiglu { 2 * self.inputs } else { self.inputs };
        if shape.last().copied() != Some(width as i64) {
            return Err(error(format!("the input must be [..., {width}], got {shape:?}")));
        }
        let rows = x.len() / width;
        let qweight = context.input(QWEIGHT)?.ok_or_else(|| error("no qweight"))?;
        let (_, packed) = qweight.try_extract_tensor::<u8>()?;
        let scales = context.input(SCALES)?.ok_or_else(|| error("no scales"))?;
        let (_, scales) = scales.try_extract_tensor::<f32>()?;
        let offsets = context.input(OFFSETS)?;
        let offsets = match &offsets {
            Some(offsets) => Some(offsets.try_extract_tensor::<f32>()?.1),
            None => None,
        };
        let blocks = self.inputs / BLOCK;
        let (expected_bytes, expected_scales) =
            (self.outputs * blocks * self.bits.block_bytes(), self.outputs * blocks);
        if packed.len() != expected_bytes || scales.len() != expected_scales {
            return Err(error(format!(
                "qweight and scales must hold {expected_bytes} bytes and {expected_scales} scales, got {} and {}",
                packed.len(),
                scales.len()
            )));
        }
        if offsets.is_some_and(|offsets| offsets.len() != expected_scales) {
            return Err(error(format!("offsets must hold {expected_scales} values ([K/32, N])")));
        }
        let mut out_shape: Vec<i64> = shape.to_vec();
        *out_shape.last_mut().expect("checked above") = self.outputs as i64;
        let mut output = context.output(0, out_shape)?.ok_or_else(|| error("no output"))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        let for_each = |count: usize, unit: &(dyn Fn(usize) + Sync)| {
            if count == 1 || context.par_for(count, count, unit).is_err() {
                (0..count).for_each(unit);
            }
        };
        let swiglu = self.swiglu.then_some(self.inputs);
        match Prepared::of(&mut self.prepared, (self.bits, self.outputs), packed, (scales, offsets), &for_each) {
            Prepared::Half(weights) => run(&weights.weights(), swiglu, x, rows, out, &for_each),
            Prepared::Wide(weights) => run(&weights.weights(), swiglu, x, rows, out, &for_each),
        }
        Ok(())
    }
}

/// The scales and offsets as f16, where every one of them is exactly an f16.
fn narrowed(scales: &[f32], offsets: Option<&[f32]>) -> Option<(Vec<f16>, Option<Vec<f16>>)> {
    let offsets = match offsets {
        Some(offsets) => Some(kernel::narrow_exactly(offsets)?),
        None => None,
    };
    Some((kernel::narrow_exactly(scales)?, offsets))
}

/// Whether `NIB_LINEAR_SCALES=f32` asks every node to keep the stored f32 (read once).
fn keep_f32() -> bool {
    static KEEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KEEP.get_or_init(|| std::env::var("NIB_LINEAR_SCALES").is_ok_and(|value| value == "f32"))
}

/// Asks Linux to reclaim the pages wholly inside `values`, initializers the node no longer
/// reads (so that its own copies do not add to the memory in use). Mapped from the weights file, as
/// ONNX Runtime maps initializers, they are clean and dropped, to be read again from the file
/// if anything ever reads them; other memory is swapped out or kept, never lost. A hint: an
/// older kernel that does not know it changes nothing.
fn page_out<T>(values: &[T]) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: reads a constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let range = values.as_ptr_range();
        let (start, end) = ((range.start as usize).next_multiple_of(page), range.end as usize / page * page);
        if start < end {
            // SAFETY: a hint about whole pages of memory this process maps; it changes no contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = values;
}

/// `out` = `x` (or, for a SwiGLU block of `swiglu` inputs, `silu(gate) · up` of it) times the
/// weights, transposed.
fn run<S: Scale>(
    weights: &kernel::Weights<'_, S>,
    swiglu: Option<usize>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
    for_each: kernel::ForEach<'_>,
) {
    let Some(inputs) = swiglu else {
        return kernel::multiply(weights, x, rows, out, for_each);
    };
    GATED.with_borrow_mut(|gated| {
        kernel::swiglu(x, inputs, gated, for_each);
        kernel::multiply(weights, gated, rows, out, for_each);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequential(count: usize, unit: &(dyn Fn(usize) + Sync)) {
        (0..count).for_each(unit);
    }

    /// Prepared weights in the kernel's order from MatMulNBits' (outputs 0..2 of one block).
    fn prepare(scales: &[f32], offsets: Option<&[f32]>) -> Prepared {
        let packed = vec![0x21u8; scales.len() * 16];
        Prepared::from((Bits::Four, scales.len()), &packed, (scales, offsets), &sequential)
    }

    #[test]
    fn scales_and_offsets_narrow_to_f16_only_where_every_value_is_one() {
        let scales = [0.5f32, -0.0, 6.1035156e-5, 1.0 / 1024.0];
        let offsets = [0.25f32, -3.0, 1.0, 2.0];
        let Prepared::Half(weights) = prepare(&scales, Some(&offsets)) else {
            panic!("every value is an f16");
        };
        let weights = weights.weights();
        let narrow: Vec<f32> = (0..4).map(|output| weights.stored(output, 0, 0).1.to_f32()).collect();
        assert_eq!(narrow.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), scales.map(f32::to_bits));
        let narrow_offsets: Vec<f32> = (0..4).map(|output| weights.offset(output, 0).unwrap().to_f32()).collect();
        assert_eq!(narrow_offsets, offsets);
        assert!(matches!(prepare(&scales, None), Prepared::Half(_)));
        let inexact = [0.25f32, 0.1, 0.5, 0.5];
        assert!(matches!(prepare(&scales, Some(&inexact)), Prepared::Wide(_)), "0.1 is no f16");
        assert!(matches!(prepare(&inexact, None), Prepared::Wide(_)));
        assert!(matches!(prepare(&[70000.0], None), Prepared::Wide(_)), "past f16's range");
    }

    #[test]
    fn prepared_weights_are_made_again_for_other_initializers() {
        let (first, second) = (vec![0x21u8; 16], vec![0x43u8; 16]);
        let mut prepared = None;
        let stored = |prepared: &Prepared| match prepared {
            Prepared::Half(weights) => weights.weights().stored(0, 0, 1).0,
            Prepared::Wide(_) => panic!("narrowed"),
        };
        let node = (Bits::Four, 1);
        assert_eq!(stored(Prepared::of(&mut prepared, node, &first, (&[0.5], None), &sequential)), 2);
        assert_eq!(stored(Prepared::of(&mut prepared, node, &first, (&[0.5], None), &sequential)), 2);
        assert_eq!(stored(Prepared::of(&mut prepared, node, &second, (&[0.5], None), &sequential)), 4);
    }
}
