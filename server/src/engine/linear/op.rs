//! The ONNX Runtime custom operator: a 4- or 8-bit MatMulNBits (block 32, no zero points) with
//! the converter's optional offsets as a fourth input, `kernel::multiply` on the session's
//! intra-op threads. Inputs: activations `[..., K]` f32, `qweight` uint8 `[N, K/32, 16 or 32]`,
//! `scales` f32 `[N * K/32]`, optional `offsets` f32 `[K/32, N]`; output `[..., N]` f32. With
//! the attribute `swiglu` 1 the activations are a SwiGLU block's `[gate, up]` (`[..., 2K]`), of
//! which the node multiplies `silu(gate) · up`.
//! The weights are the initializers as ONNX Runtime holds them (mapped from the weights
//! file), never copied.

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType::{Float32, Uint8};

use super::kernel::{self, BLOCK, Bits, Weights};

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
        Ok(LinearKernel { bits, inputs, outputs, swiglu })
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
        let weights = Weights { bits: self.bits, outputs: self.outputs, blocks, packed, scales, offsets };
        let mut out_shape: Vec<i64> = shape.to_vec();
        *out_shape.last_mut().expect("checked above") = self.outputs as i64;
        let mut output = context.output(0, out_shape)?.ok_or_else(|| error("no output"))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        let for_each = |count: usize, unit: &(dyn Fn(usize) + Sync)| {
            if count == 1 || context.par_for(count, count, unit).is_err() {
                (0..count).for_each(unit);
            }
        };
        if !self.swiglu {
            kernel::multiply(&weights, x, rows, out, &for_each);
            return Ok(());
        }
        GATED.with_borrow_mut(|gated| {
            kernel::swiglu(x, self.inputs, gated, &for_each);
            kernel::multiply(&weights, gated, rows, out, &for_each);
        });
        Ok(())
    }
}
