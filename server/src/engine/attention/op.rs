//! The ONNX Runtime custom operator: GroupQueryAttention's inputs, outputs and attributes,
//! rotary embedding of the new queries and keys, the new key and value rows written into
//! `present` (in place when `present` is the bound `past` buffer, as ONNX Runtime's kernel
//! does), then `kernel::attend` on the session's intra-op threads. The past and present KV are
//! bf16 (`graph` makes them so in the graph's signature); the new rows are rounded as they are
//! written, the keys into panels (`kernel::key_at`), the values into pairs of rows
//! (`kernel::value_at`), so every past and present tensor holds a multiple of `kernel::PANEL`
//! rows per head. A batch is its sequences one after another, each
//! with its own length (`seqlens_k`), positions and region of the cache, run exactly as it would
//! run alone.

use half::bf16;
use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType::{Bfloat16, Float32, Int32, Int64};

use super::kernel::{self, Call, Dims};

/// Input positions of GroupQueryAttention.
const QUERY: usize = 0;
const KEY: usize = 1;
const VALUE: usize = 2;
const PAST_KEY: usize = 3;
const PAST_VALUE: usize = 4;
const SEQLENS_K: usize = 5;
const TOTAL_LENGTH: usize = 6;
const COS: usize = 7;
const SIN: usize = 8;
const POSITION_IDS: usize = 9;

pub(crate) struct GroupQueryAttention;

/// The node's attributes.
pub(crate) struct AttentionKernel {
    heads: usize,
    kv_heads: usize,
    scale: f32,
    softcap: f32,
    window: Option<usize>,
    rotary: bool,
    interleaved: bool,
}

fn error(message: impl Into<String>) -> ort::Error {
    ort::Error::new(format!("nib attention: {}", message.into()))
}

impl Operator for GroupQueryAttention {
    type Kernel<'attr> = AttentionKernel;

    fn name(&self) -> &str {
        "GroupQueryAttention"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(Float32),
            OperatorInput::optional(Float32),
            OperatorInput::optional(Float32),
            OperatorInput::optional(Bfloat16),
            OperatorInput::optional(Bfloat16),
            OperatorInput::required(Int32),
            OperatorInput::required(Int32),
            OperatorInput::optional(Float32),
            OperatorInput::optional(Float32),
            OperatorInput::optional(Int64),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(Float32), OperatorOutput::required(Bfloat16), OperatorOutput::required(Bfloat16)]
    }

    fn create_kernel<'attr>(&self, context: &KernelContext<'attr>) -> ort::Result<AttentionKernel> {
        let int = |name: &str| context.get::<i64>(name);
        let heads = int("num_heads").filter(|&n| n > 0).ok_or_else(|| error("num_heads missing"))? as usize;
        let kv_heads = int("kv_num_heads").filter(|&n| n > 0).ok_or_else(|| error("kv_num_heads missing"))? as usize;
        if !heads.is_multiple_of(kv_heads) {
            return Err(error(format!("num_heads {heads} is not a multiple of kv_num_heads {kv_heads}")));
        }
        let window = int("local_window_size").unwrap_or(-1);
        Ok(AttentionKernel {
            heads,
            kv_heads,
            scale: context.get::<f32>("scale").unwrap_or(0.0),
            softcap: context.get::<f32>("softcap").unwrap_or(0.0),
            window: usize::try_from(window).ok(),
            rotary: int("do_rotary").unwrap_or(0) == 1,
            interleaved: int("rotary_interleaved").unwrap_or(0) == 1,
        })
    }
}

/// The shapes of one call.
struct Layout {
    /// New rows of each sequence of the batch.
    rows: usize,
    head_dim: usize,
    /// Cached rows before the new ones, per sequence of the batch.
    past: Vec<usize>,
    /// Rows per head of `present` (the shared buffer's capacity, or the longest sequence).
    present_rows: usize,
}

impl Layout {
    fn batch(&self) -> usize {
        self.past.len()
    }
}

impl AttentionKernel {
    fn dims(&self, head_dim: usize) -> Dims {
        let scale = if self.scale == 0.0 { 1.0 / (head_dim as f32).sqrt() } else { self.scale };
        Dims { heads: self.heads, kv_heads: self.kv_heads, head_dim, scale, softcap: self.softcap, window: self.window }
    }

    fn layout(&self, context: &ComputeContext) -> ort::Result<Layout> {
        let query = context.input(QUERY)?.ok_or_else(|| error("no query"))?;
        let shape = query.shape();
        if shape.len() != 3 || shape[0] < 1 {
            return Err(error(format!("query must be [batch, sequence, hidden], got {shape:?}")));
        }
        let (batch, rows, hidden) = (shape[0] as usize, shape[1] as usize, shape[2] as usize);
        let packed = context.input(KEY)?.is_none();
        let width = if packed { self.heads + 2 * self.kv_heads } else { self.heads };
        if rows == 0 || hidden % width != 0 {
            return Err(error(format!("query shape {shape:?} does not fit {} heads", width)));
        }
        let head_dim = hidden / width;
        let seqlens = context.input(SEQLENS_K)?.ok_or_else(|| error("no seqlens_k"))?;
        let (_, seqlens) = seqlens.try_extract_tensor::<i32>()?;
        let past = cached_rows(seqlens, batch, rows).ok_or_else(|| {
            error(format!("seqlens_k {seqlens:?} must give each of {batch} sequence(s) at least its {rows} new rows"))
        })?;
        let total_length = context.input(TOTAL_LENGTH)?.ok_or_else(|| error("no total_sequence_length"))?;
        let (_, total_length) = total_length.try_extract_tensor::<i32>()?;
        let total_length = total_length.first().copied().unwrap_or(0).max(0) as usize;
        let past_rows = match context.input(PAST_KEY)? {
            Some(past) => {
                let shape = past.shape();
                if shape.len() != 4
                    || shape[0] as usize != batch
                    || shape[1] as usize != self.kv_heads
                    || shape[3] as usize != head_dim
                {
                    return Err(error(format!(
                        "past_key must be [{batch}, {}, past, {head_dim}], got {shape:?}",
                        self.kv_heads
                    )));
                }
                let past_rows = shape[2] as usize;
                if !past_rows.is_multiple_of(kernel::PANEL) {
                    return Err(error(format!(
                        "past_key holds {past_rows} rows per head, not a multiple of {} (keys are kept in panels)",
                        kernel::PANEL
                    )));
                }
                past_rows
            }
            None => 0,
        };
        let longest = past.iter().max().map_or(rows, |past| past + rows);
        let present_rows = total_length.max(past_rows).max(longest).next_multiple_of(kernel::PANEL);
        Ok(Layout { rows, head_dim, past, present_rows })
    }

    /// The new rows' queries `[rows][heads][head_dim]`, keys and values `[rows][kv_heads][head_dim]`,
    /// rotary applied.
    fn project(&self, context: &ComputeContext, layout: &Layout) -> ort::Result<[Vec<f32>; 3]> {
        let d = layout.head_dim;
        let query = context.input(QUERY)?.ok_or_else(|| error("no query"))?;
        let (_, query) = query.try_extract_tensor::<f32>()?;
        let (q_len, kv_len) = (self.heads * d, self.kv_heads * d);
        let (mut queries, mut keys, mut values) = (Vec::new(), Vec::new(), Vec::new());
        match (context.input(KEY)?, context.input(VALUE)?) {
            (Some(key), Some(value)) => {
                let (_, key) = key.try_extract_tensor::<f32>()?;
                let (_, value) = value.try_extract_tensor::<f32>()?;
                if key.len() != layout.batch() * layout.rows * kv_len || value.len() != key.len() {
                    return Err(error("key and value must be [batch, sequence, kv_num_heads * head_size]"));
                }
                (queries, keys, values) = (query.to_vec(), key.to_vec(), value.to_vec());
            }
            (None, None) => {
                for row in query.chunks_exact(q_len + 2 * kv_len) {
                    queries.extend_from_slice(&row[..q_len]);
                    keys.extend_from_slice(&row[q_len..q_len + kv_len]);
                    values.extend_from_slice(&row[q_len + kv_len..]);
                }
            }
            _ => return Err(error("key and value must both be given or both be packed into query")),
        }
        if self.rotary {
            self.rotate(context, layout, &mut queries, &mut keys)?;
        }
        Ok([queries, keys, values])
    }

    fn rotate(
        &self,
        context: &ComputeContext,
        layout: &Layout,
        queries: &mut [f32],
        keys: &mut [f32],
    ) -> ort::Result<()> {
        let d = layout.head_dim;
        let cos = context.input(COS)?.ok_or_else(|| error("do_rotary needs cos_cache"))?;
        let sin = context.input(SIN)?.ok_or_else(|| error("do_rotary needs sin_cache"))?;
        let (cos_shape, cos) = cos.try_extract_tensor::<f32>()?;
        let (_, sin) = sin.try_extract_tensor::<f32>()?;
        let half = cos_shape.last().copied().unwrap_or(0) as usize;
        if cos_shape.len() != 2 || half == 0 || 2 * half > d || sin.len() != cos.len() {
            return Err(error(format!("cos_cache must be [positions, at most {}], got {cos_shape:?}", d / 2)));
        }
        let positions: Vec<i64> = match context.input(POSITION_IDS)? {
            Some(ids) => ids.try_extract_tensor::<i64>()?.1.to_vec(),
            None => layout.past.iter().flat_map(|&past| (past..past + layout.rows).map(|p| p as i64)).collect(),
        };
        if positions.len() != layout.batch() * layout.rows {
            return Err(error(format!(
                "position_ids has {} values for {} rows",
                positions.len(),
                layout.batch() * layout.rows
            )));
        }
        for (row, &position) in positions.iter().enumerate() {
            let position = usize::try_from(position).ok().filter(|&p| (p + 1) * half <= cos.len());
            let position = position.ok_or_else(|| error("a position is outside the rotary caches"))?;
            let (cos, sin) = (&cos[position * half..][..half], &sin[position * half..][..half]);
            let heads = queries[row * self.heads * d..][..self.heads * d].chunks_exact_mut(d);
            let kv_heads = keys[row * self.kv_heads * d..][..self.kv_heads * d].chunks_exact_mut(d);
            for head in heads.chain(kv_heads) {
                kernel::rotate(&mut head[..2 * half], cos, sin, self.interleaved);
            }
        }
        Ok(())
    }
}

/// Each sequence's cached rows before its `rows` new ones: `seqlens_k` holds each one's length,
/// new rows included, less one; `None` unless it has one per sequence, each that long.
fn cached_rows(seqlens: &[i32], batch: usize, rows: usize) -> Option<Vec<usize>> {
    if seqlens.len() != batch {
        return None;
    }
    seqlens.iter().map(|&length| usize::try_from(length + 1).ok()?.checked_sub(rows)).collect()
}

/// How a cache tensor lays out one head's rows.
#[derive(Clone, Copy)]
enum Rows {
    /// In pairs of rows (values, `kernel::value_at`).
    Pairs,
    /// In panels (keys, `kernel::key_at`).
    Panels,
}

/// Copies the past rows into `present` when it is not the past buffer itself, then writes the
/// new rows after them, rounded to bf16: sequence by sequence of the batch, each in its own
/// region of `kv_heads` heads of `present_rows` rows, laid out as `rows` says.
fn fill_present(
    context: &ComputeContext,
    (input, rows): (usize, Rows),
    present: &mut [bf16],
    layout: &Layout,
    kv_heads: usize,
    new_rows: &[f32],
    past_data: Option<usize>,
) -> ort::Result<()> {
    let d = layout.head_dim;
    let region = kv_heads * layout.present_rows * d;
    // A shared buffer (the same memory as `present`) is never borrowed while `present` is.
    let shared = past_data == Some(present.as_ptr() as usize);
    let sequences = present.chunks_exact_mut(region).zip(new_rows.chunks_exact(layout.rows * kv_heads * d));
    for (sequence, (present, new_rows)) in sequences.enumerate() {
        let past = layout.past[sequence];
        if !shared && past > 0 {
            let past_tensor =
                context.input(input)?.ok_or_else(|| error("the cache has past rows but no past input"))?;
            let past_rows = past_tensor.shape()[2] as usize;
            let (_, past_data) = past_tensor.try_extract_tensor::<bf16>()?;
            if past_rows < past {
                return Err(error(format!("past holds {past_rows} rows, seqlens_k says {past}")));
            }
            // Whole panels: both tensors hold a multiple of PANEL rows (`layout`).
            let copied = past.next_multiple_of(kernel::PANEL) * d;
            for head in 0..kv_heads {
                let from = &past_data[(sequence * kv_heads + head) * past_rows * d..][..copied];
                present[head * layout.present_rows * d..][..copied].copy_from_slice(from);
            }
        }
        let mut rounded = vec![bf16::ZERO; d];
        let at = |row: usize, dim: usize| match rows {
            Rows::Pairs => kernel::value_at(row, dim, d),
            Rows::Panels => kernel::key_at(row, dim, d),
        };
        for (row, heads) in new_rows.chunks_exact(kv_heads * d).enumerate() {
            for (head, values) in heads.chunks_exact(d).enumerate() {
                let head_rows = &mut present[head * layout.present_rows * d..][..layout.present_rows * d];
                kernel::to_bf16(values, &mut rounded);
                for (dim, &number) in rounded.iter().enumerate() {
                    head_rows[at(past + row, dim)] = number;
                }
            }
        }
        // The row that shares a pair with the last one written is multiplied by a weight of 0:
        // it must hold finite numbers (`kernel::Call`), which a fresh output need not.
        let end = past + layout.rows;
        if matches!(rows, Rows::Pairs) && end % 2 == 1 {
            for head in 0..kv_heads {
                let head_rows = &mut present[head * layout.present_rows * d..][..layout.present_rows * d];
                for dim in 0..d {
                    head_rows[at(end, dim)] = bf16::ZERO;
                }
            }
        }
    }
    Ok(())
}

impl Kernel for AttentionKernel {
    fn compute(&mut self, context: &ComputeContext) -> ort::Result<()> {
        let layout = self.layout(context)?;
        let d = layout.head_dim;
        let [queries, keys, values] = self.project(context, &layout)?;
        let past_data = |input: usize| -> ort::Result<Option<usize>> {
            Ok(match context.input(input)? {
                Some(past) => Some(past.try_extract_tensor::<bf16>()?.1.as_ptr() as usize),
                None => None,
            })
        };
        let (past_key, past_value) = (past_data(PAST_KEY)?, past_data(PAST_VALUE)?);
        let batch = layout.batch();
        let present_shape = [batch as i64, self.kv_heads as i64, layout.present_rows as i64, d as i64];
        let mut present_key = context.output(1, present_shape)?.ok_or_else(|| error("no present_key output"))?;
        let mut present_value = context.output(2, present_shape)?.ok_or_else(|| error("no present_value output"))?;
        let (_, present_key) = present_key.try_extract_tensor_mut::<bf16>()?;
        let (_, present_value) = present_value.try_extract_tensor_mut::<bf16>()?;
        fill_present(context, (PAST_KEY, Rows::Panels), present_key, &layout, self.kv_heads, &keys, past_key)?;
        fill_present(context, (PAST_VALUE, Rows::Pairs), present_value, &layout, self.kv_heads, &values, past_value)?;
        let out_shape = [batch as i64, layout.rows as i64, (self.heads * d) as i64];
        let mut out = context.output(0, out_shape)?.ok_or_else(|| error("no output"))?;
        let (_, out) = out.try_extract_tensor_mut::<f32>()?;
        let dims = self.dims(d);
        let (row_len, region) = (layout.rows * self.heads * d, self.kv_heads * layout.present_rows * d);
        for (sequence, out) in out.chunks_exact_mut(row_len).enumerate() {
            let call = Call {
                dims: &dims,
                queries: &queries[sequence * row_len..][..row_len],
                keys: &present_key[sequence * region..][..region],
                values: &present_value[sequence * region..][..region],
                stride: layout.present_rows,
                past: layout.past[sequence],
                rows: layout.rows,
            };
            kernel::attend(&call, out, &|count, unit| {
                if context.par_for(count, count, unit).is_err() {
                    (0..count).for_each(unit);
                }
            });
        }
        Ok(())
    }
}
