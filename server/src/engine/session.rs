//! The ONNX decoder: discovers the graph's inputs and outputs (names, layer count, KV heads,
//! head size) from the session itself, runs forward passes that extend a KV cache, and cuts the
//! cache back to a prefix for reuse.
//!
//! Both supported layouts (HF Optimum's and `models/convert.py`'s) use the same names:
//! `input_ids`, `attention_mask`, optional `position_ids` and `logits_to_keep`,
//! `past_key_values.N.{key,value}` in; `logits`, `present.N.{key,value}` out, caches shaped
//! `[batch, kv_heads, seq, head_dim]`. The cache lives in one of two ways (`KvLayout`): a
//! shared buffer that ONNX Runtime writes in place (no copy per step), or the copying layout
//! where each run returns past + new rows as new tensors. Its element type is the one the graph
//! declares for `past_key_values.*`: fp16 when nib's attention kernel runs (its graph rewrite
//! says so), fp32 with ONNX Runtime's.

use std::borrow::Cow;
use std::path::Path;

use half::bf16;
use ort::environment::Environment;
use ort::ep;
use ort::memory::{Allocator, MemoryInfo};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, RunOptions, Session, SessionInputValue, SessionOutputs};
use ort::value::{DynTensor, DynValue, PrimitiveTensorElementType, Tensor, TensorElementType, ValueType};

use super::EngineError;
use super::kernels::Kernels;
use super::known_rows::KnownRows;

/// One forward pass: the inputs besides the cache, and how many last rows of logits it returns.
struct Run<'a> {
    inputs: Vec<(&'static str, DynValue)>,
    rows: usize,
    options: &'a RunOptions,
}

/// Names and shapes read from the graph.
#[derive(Clone, Debug)]
pub struct GraphSignature {
    pub position_ids: bool,
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Rows of the output embedding (the logits' last dimension), when the graph states it.
    pub vocab: Option<usize>,
    /// The graph takes `logits_to_keep` and returns that many last rows of logits (needed to
    /// verify a speculative draft in one run).
    pub logits_to_keep: bool,
    /// The KV cache's element type (f32, or bf16 for nib's attention kernel), as the graph declares
    /// its past inputs.
    pub kv_type: TensorElementType,
    past_names: Vec<(String, String)>,
    present_names: Vec<(String, String)>,
}

impl GraphSignature {
    /// Bytes of keys and values one token takes in the cache (all layers).
    pub fn kv_bytes_per_row(&self) -> usize {
        let element = self.kv_type.byte_size(1).unwrap_or(size_of::<f32>());
        2 * self.layers * self.kv_heads * self.head_dim * element
    }

    fn read(session: &Session) -> Result<Self, String> {
        let input_names: Vec<&str> = session.inputs().iter().map(|input| input.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !input_names.contains(&required) {
                return Err(format!("the graph has no `{required}` input (inputs: {})", input_names.join(", ")));
            }
        }
        let output_names: Vec<&str> = session.outputs().iter().map(|output| output.name()).collect();
        if !output_names.contains(&"logits") {
            return Err(format!("the graph has no `logits` output (outputs: {})", output_names.join(", ")));
        }
        let vocab =
            session.outputs().iter().find(|output| output.name() == "logits").and_then(|output| match output.dtype() {
                ValueType::Tensor { shape, .. } => shape.last().filter(|&&n| n > 0).map(|&n| n as usize),
                _ => None,
            });
        let mut layers = 0;
        while input_names.contains(&format!("past_key_values.{layers}.key").as_str()) {
            layers += 1;
        }
        if layers == 0 {
            return Err(
                "the graph has no `past_key_values.0.key` input: nib needs a decoder exported with a KV cache".into()
            );
        }
        let first_past =
            session.inputs().iter().find(|input| input.name() == "past_key_values.0.key").expect("checked above");
        let (kv_heads, head_dim, kv_type) = match first_past.dtype() {
            ValueType::Tensor { shape, ty, .. } if shape.len() == 4 && shape[1] > 0 && shape[3] > 0 => {
                (shape[1] as usize, shape[3] as usize, *ty)
            }
            other => {
                return Err(format!("`past_key_values.0.key` must be [batch, kv_heads, seq, head_dim], got {other:?}"));
            }
        };
        let past_types = session.inputs().iter().filter(|input| input.name().starts_with("past_key_values."));
        if !matches!(kv_type, TensorElementType::Float32 | TensorElementType::Bfloat16)
            || past_types
                .into_iter()
                .any(|input| !matches!(input.dtype(), ValueType::Tensor { ty, .. } if *ty == kv_type))
        {
            return Err(format!(
                "the KV cache must be all float32 or all bfloat16 (`past_key_values.0.key` is {kv_type})"
            ));
        }
        let mut past_names = Vec::new();
        let mut present_names = Vec::new();
        for layer in 0..layers {
            for kind in ["key", "value"] {
                for (names, prefix) in [(&input_names, "past_key_values"), (&output_names, "present")] {
                    let name = format!("{prefix}.{layer}.{kind}");
                    if !names.contains(&name.as_str()) {
                        return Err(format!("the graph has no `{name}`"));
                    }
                }
            }
            past_names.push((format!("past_key_values.{layer}.key"), format!("past_key_values.{layer}.value")));
            present_names.push((format!("present.{layer}.key"), format!("present.{layer}.value")));
        }
        Ok(GraphSignature {
            position_ids: input_names.contains(&"position_ids"),
            logits_to_keep: input_names.contains(&"logits_to_keep"),
            kv_type,
            layers,
            kv_heads,
            head_dim,
            vocab,
            past_names,
            present_names,
        })
    }
}

/// How the KV cache is kept between runs (from `nib.json`'s `kv_cache`, see models/README.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvLayout {
    /// One buffer per layer and kind, `[1, kv_heads, capacity, head_dim]`, bound (IO binding) as
    /// both the past input and the present output: GroupQueryAttention writes the new rows in
    /// place, so a step copies nothing. Capacity grows in steps; truncation forgets a count.
    SharedBuffer,
    /// Each run returns new `present` tensors (past + new rows) that become the next past.
    Copying,
}

/// Rows a shared buffer grows by at least (each growth copies the cached rows once).
const CAPACITY_STEP: usize = 256;

/// Keys and values of the tokens seen so far, one pair per layer. Rows `0..tokens.len()` of
/// each tensor are the cache; a shared buffer has `capacity` rows, of which the rest are unused.
pub struct KvCache {
    layers: Vec<(DynValue, DynValue)>,
    capacity: usize,
    pub tokens: Vec<u32>,
    /// Logit rows some of `tokens` produced, forgotten with the tokens a cut removes.
    pub(crate) rows: KnownRows,
    /// The shared buffers bound as the graph's past inputs and present outputs (the copying
    /// layout never binds: each of its runs passes the cache as inputs), made at the
    /// first run on these buffers and dropped with them (`reallocate`): binding 120 values by
    /// name and releasing them took about 0.18 ms of every decode step (7.5 ms). A run binds
    /// only its own inputs and the logits.
    bound: Option<IoBinding>,
}

impl KvCache {
    /// Rows each layer's buffers hold (the token count in the copying layout).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of keys and values held (all layers).
    pub fn bytes(&self, signature: &GraphSignature) -> usize {
        signature.kv_bytes_per_row() * self.capacity
    }
}

/// The caches of several sequences decoded side by side (`DecoderSession::forward_batch`):
/// one buffer per layer and kind, `[sequences, kv_heads, capacity, head_dim]`, bound as both
/// the past input and the present output like `KvLayout::SharedBuffer`'s; sequence `s` has
/// `lengths[s]` rows of its own region.
pub struct BatchCache {
    layers: Vec<(DynValue, DynValue)>,
    capacity: usize,
    lengths: Vec<usize>,
    bound: Option<IoBinding>,
}

impl BatchCache {
    /// The sequences in the batch.
    pub(crate) fn len(&self) -> usize {
        self.lengths.len()
    }
}

pub struct DecoderSession {
    session: Session,
    pub signature: GraphSignature,
    layout: KvLayout,
    /// The most rows a shared buffer is grown to (the model's context).
    max_capacity: usize,
    /// A row's logits depend only on its token and position, however many rows run
    /// (`kernels::Committed`): a lone token runs alone, not padded to two rows.
    rows_independent: bool,
    /// Every KV tensor holds a multiple of this many rows per head, and rows are copied in
    /// whole groups (`kernels::Committed::kv_row_group`).
    kv_row_group: usize,
}

fn build_session(
    environment: &Environment,
    path: &Path,
    threads: usize,
    kernels: Kernels,
) -> ort::Result<super::kernels::Committed> {
    let builder = Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?
        // Memory patterns are planned and kept per set of input shapes, and almost every run
        // here has new ones (the attention mask grows with the cache): off, the peak RSS after
        // the typing replay is 11 MB lower (models/README.md, "Memory").
        .with_memory_pattern(false)?
        // ONNX Runtime's CPU memory arena: without it every node's output is a malloc and a
        // free on the step's critical path (decode about 5 % slower). It keeps the regions it
        // grows, but RSS counts only the pages runs touched, which came to the same peak
        // either way (models/README.md, "Memory").
        .with_execution_providers([ep::CPU::default().with_arena_allocator(true).build().error_on_failure()])?;
    // A developer's view of where a run's time goes: ONNX Runtime's per-node profile
    // (benches/ort_profile.py sums it per operator).
    let builder = match std::env::var_os("NIB_ORT_PROFILE") {
        Some(prefix) => builder.with_profiling(prefix)?,
        None => builder,
    };
    super::kernels::commit(builder, path, kernels)
}

fn ort_error(error: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(error.to_string())
}

/// The capacity a shared buffer grows to for `needed` rows: `needed` in whole steps, within
/// the context. Memory follows the prompt, not a growth factor: a growth copies the cached
/// rows once (layer by layer), which at 4,096 rows of this model is about 190 MB of memory
/// traffic once every 256 tokens, under 0.1 ms per token, small beside a decode step.
fn grown_capacity(needed: usize, max: usize) -> usize {
    needed.div_ceil(CAPACITY_STEP).saturating_mul(CAPACITY_STEP).min(max).max(needed)
}

impl DecoderSession {
    pub fn load(
        environment: &Environment,
        path: &Path,
        threads: usize,
        layout: KvLayout,
        max_context: usize,
    ) -> Result<Self, EngineError> {
        Self::load_with_kernels(environment, path, threads, layout, max_context, Kernels::from_env())
    }

    /// `load` with the given choice of nib's kernels (A/B tests) instead of the environment's.
    pub fn load_with_kernels(
        environment: &Environment,
        path: &Path,
        threads: usize,
        layout: KvLayout,
        max_context: usize,
        kernels: Kernels,
    ) -> Result<Self, EngineError> {
        let committed = build_session(environment, path, threads, kernels)
            .map_err(|error| EngineError::Model(format!("cannot load {}: {error}", path.display())))?;
        let decoder = Self::from_session(committed.session, path, layout, max_context)?;
        Ok(DecoderSession {
            rows_independent: committed.rows_independent,
            kv_row_group: committed.kv_row_group,
            ..decoder
        })
    }

    /// A decoder on a session committed elsewhere (from `path`'s model, for messages); a lone
    /// token runs padded (its rows are not known to be independent).
    pub(crate) fn from_session(
        session: Session,
        path: &Path,
        layout: KvLayout,
        max_context: usize,
    ) -> Result<Self, EngineError> {
        let signature = GraphSignature::read(&session)
            .map_err(|why| EngineError::Model(format!("{} is not a usable decoder: {why}", path.display())))?;
        Ok(DecoderSession {
            session,
            signature,
            layout,
            max_capacity: max_context.max(1),
            rows_independent: false,
            kv_row_group: 1,
        })
    }

    /// Whether a lone token runs alone (see `rows_independent`).
    pub fn rows_independent(&self) -> bool {
        self.rows_independent
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// Switches the KV layout (benchmarks and the equivalence tests); returns a fresh cache.
    pub fn set_layout(&mut self, layout: KvLayout) -> Result<KvCache, EngineError> {
        self.layout = layout;
        self.empty_cache()
    }

    /// `rows` rounded up to whole groups of `kv_row_group`: a KV tensor's rows per head, and
    /// the rows copied to keep `rows` of them.
    fn kv_rows(&self, rows: usize) -> usize {
        rows.next_multiple_of(self.kv_row_group)
    }

    fn kv_tensor(&self, rows: usize) -> Result<DynValue, EngineError> {
        let shape = [1usize, self.signature.kv_heads, rows, self.signature.head_dim];
        match self.layout {
            // DynTensor::new: memory that ONNX Runtime may write as an output (zero-filled).
            KvLayout::SharedBuffer => {
                Ok(DynTensor::new(&Allocator::default(), self.signature.kv_type, shape).map_err(ort_error)?.into_dyn())
            }
            KvLayout::Copying if self.signature.kv_type == TensorElementType::Bfloat16 => {
                Ok(Tensor::<bf16>::from_array((shape, Vec::new())).map_err(ort_error)?.into_dyn())
            }
            KvLayout::Copying => Ok(Tensor::<f32>::from_array((shape, Vec::new())).map_err(ort_error)?.into_dyn()),
        }
    }

    pub fn empty_cache(&self) -> Result<KvCache, EngineError> {
        let mut layers = Vec::with_capacity(self.signature.layers);
        for _ in 0..self.signature.layers {
            layers.push((self.kv_tensor(0)?, self.kv_tensor(0)?));
        }
        Ok(KvCache { layers, capacity: 0, tokens: Vec::new(), rows: KnownRows::default(), bound: None })
    }

    /// An id past the embedding would make ONNX Runtime read out of bounds (quantized gathers
    /// do not check); a tokenizer that does not match the model is refused here.
    fn check_ids(&self, ids: &[u32]) -> Result<(), EngineError> {
        if let Some(vocab) = self.signature.vocab
            && let Some(id) = ids.iter().find(|&&id| id as usize >= vocab)
        {
            return Err(EngineError::Inference(format!(
                "token id {id} is outside the model's vocabulary of {vocab}: the tokenizer does not match the model"
            )));
        }
        Ok(())
    }

    /// The inputs every run takes besides the cache.
    fn step_inputs(&self, past: usize, ids: &[u32], rows: usize) -> Result<Vec<(&'static str, DynValue)>, EngineError> {
        self.check_ids(ids)?;
        let total = past + ids.len();
        let input_ids: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        let tensor = |shape: Vec<usize>, data: Vec<i64>| -> Result<DynValue, EngineError> {
            Ok(Tensor::from_array((shape, data)).map_err(ort_error)?.into_dyn())
        };
        let mut inputs = vec![
            ("input_ids", tensor(vec![1, ids.len()], input_ids)?),
            ("attention_mask", tensor(vec![1, total], vec![1; total])?),
        ];
        if self.signature.position_ids {
            inputs.push(("position_ids", tensor(vec![1, ids.len()], (past as i64..total as i64).collect())?));
        }
        if self.signature.logits_to_keep {
            inputs.push(("logits_to_keep", tensor(vec![1], vec![rows as i64])?));
        }
        Ok(inputs)
    }

    /// Runs `ids` after the cached tokens, extends the cache with them and returns the logits
    /// of the last position. On error the cache is left as it was.
    pub fn forward(
        &mut self,
        cache: &mut KvCache,
        ids: &[u32],
        run_options: Option<&RunOptions>,
    ) -> Result<Vec<f32>, EngineError> {
        self.forward_rows(cache, ids, 1, run_options)
    }

    /// Like `forward`, returning the logits of the last `rows` positions, row after row.
    pub fn forward_rows(
        &mut self,
        cache: &mut KvCache,
        ids: &[u32],
        rows: usize,
        run_options: Option<&RunOptions>,
    ) -> Result<Vec<f32>, EngineError> {
        assert!(!ids.is_empty(), "forward needs at least one token");
        assert!((1..=ids.len()).contains(&rows), "1..=ids.len() rows of logits");
        if rows > 1 && !self.signature.logits_to_keep {
            return Err(ort_error("the graph returns one row of logits (it has no `logits_to_keep` input)"));
        }
        // A row's logits must depend only on its token and position, so that chunked prefill,
        // cache reuse and speculative drafts of any length give the same logits as the same
        // tokens run any other way. nib's kernels hold to that for any number of rows. ONNX
        // Runtime's int8-activation matmul (MatMulNBits, accuracy_level 4) does only from two
        // rows up: it takes another kernel for a single row, whose results differ by up to a
        // few tenths of a logit. Where such a kernel is left in the graph, a lone token runs
        // with a copy of itself after it, whose row the cache then forgets (that costs nib's
        // kernels about 1.6 times a lone row's time: `engine::linear::kernel::timing`).
        let pad = ids.len() == 1 && self.signature.logits_to_keep && !self.rows_independent;
        let padded = [ids[0], ids[0]];
        let (run_ids, run_rows) = if pad { (&padded[..], 2) } else { (ids, rows) };
        let default_options;
        let options = match run_options {
            Some(options) => options,
            None => {
                default_options = RunOptions::new().map_err(ort_error)?;
                &default_options
            }
        };
        let past = cache.tokens.len();
        let run = Run { inputs: self.step_inputs(past, run_ids, run_rows)?, rows: run_rows, options };
        let mut logits = match self.layout {
            KvLayout::SharedBuffer => {
                if past + run_ids.len() > cache.capacity {
                    self.grow(cache, past + run_ids.len())?;
                }
                self.run_shared(cache, run)?
            }
            KvLayout::Copying => self.run_copying(cache, run)?,
        };
        cache.tokens.extend_from_slice(ids);
        if pad {
            logits.truncate(logits.len() / 2);
            if self.layout == KvLayout::Copying {
                self.reallocate(cache, cache.tokens.len())?;
            }
        }
        Ok(logits)
    }

    /// The shared-buffer run: ONNX Runtime writes the new rows into the bound buffers (rows
    /// past the cached count, within the capacity, so a failed run corrupts nothing).
    fn run_shared(&mut self, cache: &mut KvCache, run: Run<'_>) -> Result<Vec<f32>, EngineError> {
        let binding = match &mut cache.bound {
            Some(binding) => binding,
            None => cache.bound.insert(self.bind_cache(&mut cache.layers)?),
        };
        // Each input replaces the last run's value of its name. The logits are bound afresh too:
        // once a run has filled a device-bound output, the next run would have to return logits
        // of that same shape, and the row count changes from run to run.
        for (name, value) in run.inputs {
            binding.bind_input(name, &value).map_err(ort_error)?;
        }
        binding.bind_output_to_device("logits", &MemoryInfo::default()).map_err(ort_error)?;
        let outputs = self.session.run_binding_with_options(binding, run.options).map_err(ort_error)?;
        last_rows(&outputs, run.rows, self.signature.logits_to_keep)
    }

    /// A binding of the shared buffers `layers` as both the past inputs and the present outputs.
    fn bind_cache(&self, layers: &mut [(DynValue, DynValue)]) -> Result<IoBinding, EngineError> {
        let mut binding = self.session.create_binding().map_err(ort_error)?;
        let names = self.signature.past_names.iter().zip(&self.signature.present_names);
        for (((past_key, past_value), (present_key, present_value)), (key, value)) in names.zip(layers) {
            binding.bind_input(past_key.as_str(), &*key).map_err(ort_error)?;
            binding.bind_output(present_key.as_str(), &mut *key).map_err(ort_error)?;
            binding.bind_input(past_value.as_str(), &*value).map_err(ort_error)?;
            binding.bind_output(present_value.as_str(), &mut *value).map_err(ort_error)?;
        }
        Ok(binding)
    }

    /// The copying run: the graph returns past + new rows as new tensors, which become the cache.
    fn run_copying(&mut self, cache: &mut KvCache, run: Run<'_>) -> Result<Vec<f32>, EngineError> {
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            run.inputs.into_iter().map(|(name, value)| (Cow::Borrowed(name), SessionInputValue::from(value))).collect();
        for ((key_name, value_name), (key, value)) in self.signature.past_names.iter().zip(&cache.layers) {
            inputs.push((key_name.as_str().into(), key.into()));
            inputs.push((value_name.as_str().into(), value.into()));
        }
        let mut outputs = self.session.run_with_options(inputs, run.options).map_err(ort_error)?;
        let logits = last_rows(&outputs, run.rows, self.signature.logits_to_keep)?;
        let mut layers = Vec::with_capacity(self.signature.layers);
        for (key_name, value_name) in &self.signature.present_names {
            let key = outputs.remove(key_name).ok_or_else(|| ort_error(format!("missing output {key_name}")))?;
            let value = outputs.remove(value_name).ok_or_else(|| ort_error(format!("missing output {value_name}")))?;
            layers.push((key, value));
        }
        drop(outputs);
        cache.capacity = layers.first().map_or(0, |(key, _)| rows_per_head(key));
        cache.layers = layers;
        Ok(logits)
    }

    fn grow(&self, cache: &mut KvCache, needed: usize) -> Result<(), EngineError> {
        let capacity = grown_capacity(needed, self.max_capacity);
        self.reallocate(cache, capacity)
    }

    /// New buffers of `capacity` rows holding the cached rows. One tensor at a time replaces
    /// its old buffer, which is freed before the next is copied: at no moment do two whole
    /// caches exist (the peak is the new cache plus one old tensor). A failure midway leaves
    /// tensors of two capacities, so the cache is then emptied.
    fn reallocate(&self, cache: &mut KvCache, capacity: usize) -> Result<(), EngineError> {
        // The binding holds every old buffer: released first, each is freed as it is replaced.
        cache.bound = None;
        let capacity = self.kv_rows(capacity);
        let (rows, kept) = (cache.capacity, cache.tokens.len());
        let copied = cache.layers.iter_mut().try_for_each(|(key, value)| {
            *key = self.copy_rows(key, rows, kept, capacity)?;
            *value = self.copy_rows(value, rows, kept, capacity)?;
            Ok(())
        });
        if let Err(error) = copied {
            *cache = self.empty_cache()?;
            return Err(error);
        }
        cache.capacity = capacity;
        Ok(())
    }

    /// A `[1, heads, capacity, head_dim]` tensor with the first `kept` rows of `from` (which
    /// has `rows` rows per head), in the session's layout and the cache's element type. In the
    /// copying layout, `capacity` is `kept` (both in whole groups, `kv_rows`).
    fn copy_rows(&self, from: &DynValue, rows: usize, kept: usize, capacity: usize) -> Result<DynValue, EngineError> {
        match self.signature.kv_type {
            TensorElementType::Bfloat16 => self.copy_rows_of::<bf16>(from, rows, kept, capacity),
            _ => self.copy_rows_of::<f32>(from, rows, kept, capacity),
        }
    }

    fn copy_rows_of<T: PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static>(
        &self,
        from: &DynValue,
        rows: usize,
        kept: usize,
        capacity: usize,
    ) -> Result<DynValue, EngineError> {
        let (heads, head_dim) = (self.signature.kv_heads, self.signature.head_dim);
        let kept = self.kv_rows(kept);
        let (_, data) = from.try_extract_tensor::<T>().map_err(ort_error)?;
        let head_rows = |head: usize| &data[head * rows * head_dim..(head * rows + kept) * head_dim];
        match self.layout {
            KvLayout::SharedBuffer => {
                let mut to = self.kv_tensor(capacity)?;
                copy_region::<T>((from, 0, rows), (&mut to, 0, capacity), kept, heads, head_dim)?;
                Ok(to)
            }
            KvLayout::Copying => {
                let mut kept_rows = Vec::with_capacity(heads * kept * head_dim);
                for head in 0..heads {
                    kept_rows.extend_from_slice(head_rows(head));
                }
                Ok(Tensor::from_array(([1usize, heads, kept, head_dim], kept_rows)).map_err(ort_error)?.into_dyn())
            }
        }
    }

    /// Whether sequences can run side by side (`forward_batch`): their rows must give the
    /// same logits as one sequence alone (`rows_independent`), in shared buffers.
    pub fn batches(&self) -> bool {
        self.rows_independent && self.layout == KvLayout::SharedBuffer
    }

    /// A batch of `sequences` empty caches with room for `capacity` rows each
    /// (`copy_into_batch` fills them).
    pub fn new_batch(&self, sequences: usize, capacity: usize) -> Result<BatchCache, EngineError> {
        assert!(self.batches(), "only rows that do not depend on each other run side by side");
        let capacity = self.kv_rows(capacity.clamp(1, self.max_capacity));
        let lengths = vec![0; sequences];
        let mut layers = Vec::with_capacity(self.signature.layers);
        for _ in 0..self.signature.layers {
            layers.push((self.stack_rows(&[], &lengths, capacity)?, self.stack_rows(&[], &lengths, capacity)?));
        }
        Ok(BatchCache { layers, capacity, lengths, bound: None })
    }

    /// Copies the first `rows` rows of `cache` into sequence `sequence` of `batch`.
    pub fn copy_into_batch(
        &self,
        cache: &KvCache,
        rows: usize,
        batch: &mut BatchCache,
        sequence: usize,
    ) -> Result<(), EngineError> {
        assert!(rows <= cache.tokens.len() && rows < batch.capacity, "{rows} rows do not fit the batch");
        for (from, to) in cache.layers.iter().zip(&mut batch.layers) {
            for (from, to) in [(&from.0, &mut to.0), (&from.1, &mut to.1)] {
                self.copy_kv((from, 0, cache.capacity), (to, sequence, batch.capacity), rows)?;
            }
        }
        batch.lengths[sequence] = rows;
        Ok(())
    }

    /// Keeps only the sequences `keep` (in that order) of `batch`.
    pub fn keep_in_batch(&self, batch: &mut BatchCache, keep: &[usize]) -> Result<(), EngineError> {
        batch.bound = None;
        let lengths: Vec<usize> = keep.iter().map(|&sequence| batch.lengths[sequence]).collect();
        for (key, value) in &mut batch.layers {
            for tensor in [key, value] {
                let sources: Vec<_> = keep.iter().map(|&sequence| (&*tensor, sequence, batch.capacity)).collect();
                *tensor = self.stack_rows(&sources, &lengths, batch.capacity)?;
            }
        }
        batch.lengths = lengths;
        Ok(())
    }

    /// Runs one token after each sequence of `batch` (`ids[s]` after sequence `s`) and returns
    /// each one's logits, sequence after sequence.
    pub fn forward_batch(
        &mut self,
        batch: &mut BatchCache,
        ids: &[u32],
        run_options: &RunOptions,
    ) -> Result<Vec<f32>, EngineError> {
        assert_eq!(ids.len(), batch.len(), "one token per sequence");
        if batch.lengths.iter().any(|&length| length + 1 > batch.capacity) {
            return Err(ort_error("a sequence of the batch has no room left"));
        }
        let inputs = self.batch_inputs(&batch.lengths, ids)?;
        let binding = match &mut batch.bound {
            Some(binding) => binding,
            None => batch.bound.insert(self.bind_cache(&mut batch.layers)?),
        };
        for (name, value) in inputs {
            binding.bind_input(name, &value).map_err(ort_error)?;
        }
        binding.bind_output_to_device("logits", &MemoryInfo::default()).map_err(ort_error)?;
        let outputs = self.session.run_binding_with_options(binding, run_options).map_err(ort_error)?;
        let logits = last_rows(&outputs, ids.len(), self.signature.logits_to_keep)?;
        batch.lengths.iter_mut().for_each(|length| *length += 1);
        Ok(logits)
    }

    /// A batch run's inputs: each sequence's token at its own position, the attention mask
    /// covering each one's rows (zeros after a shorter sequence's).
    fn batch_inputs(&self, lengths: &[usize], ids: &[u32]) -> Result<Vec<(&'static str, DynValue)>, EngineError> {
        self.check_ids(ids)?;
        let batch = ids.len();
        let width = lengths.iter().map(|length| length + 1).max().unwrap_or(1);
        let mask: Vec<i64> =
            lengths.iter().flat_map(|&length| (0..width).map(move |column| i64::from(column <= length))).collect();
        let tensor = |shape: Vec<usize>, data: Vec<i64>| -> Result<DynValue, EngineError> {
            Ok(Tensor::from_array((shape, data)).map_err(ort_error)?.into_dyn())
        };
        let mut inputs = vec![
            ("input_ids", tensor(vec![batch, 1], ids.iter().map(|&id| i64::from(id)).collect())?),
            ("attention_mask", tensor(vec![batch, width], mask)?),
        ];
        if self.signature.position_ids {
            inputs.push(("position_ids", tensor(vec![batch, 1], lengths.iter().map(|&n| n as i64).collect())?));
        }
        if self.signature.logits_to_keep {
            inputs.push(("logits_to_keep", tensor(vec![1], vec![1])?));
        }
        Ok(inputs)
    }

    /// One `[lengths.len(), heads, capacity, head_dim]` tensor whose region `s` holds the first
    /// `lengths[s]` rows of source `s` (zeros where there is none): `(tensor, region, rows)`, a
    /// region of a tensor of `rows` rows per head.
    fn stack_rows(
        &self,
        sources: &[(&DynValue, usize, usize)],
        lengths: &[usize],
        capacity: usize,
    ) -> Result<DynValue, EngineError> {
        let (heads, head_dim) = (self.signature.kv_heads, self.signature.head_dim);
        let shape = [lengths.len(), heads, capacity, head_dim];
        let mut to =
            DynTensor::new(&Allocator::default(), self.signature.kv_type, shape).map_err(ort_error)?.into_dyn();
        for (slot, (&source, &kept)) in sources.iter().zip(lengths).enumerate() {
            self.copy_kv(source, (&mut to, slot, capacity), kept)?;
        }
        Ok(to)
    }

    /// `copy_region` of `kept` rows in whole groups (`kv_rows`), in the cache's element type.
    fn copy_kv(
        &self,
        from: (&DynValue, usize, usize),
        to: (&mut DynValue, usize, usize),
        kept: usize,
    ) -> Result<(), EngineError> {
        let (heads, head_dim) = (self.signature.kv_heads, self.signature.head_dim);
        let kept = self.kv_rows(kept);
        match self.signature.kv_type {
            TensorElementType::Bfloat16 => copy_region::<bf16>(from, to, kept, heads, head_dim),
            _ => copy_region::<f32>(from, to, kept, heads, head_dim),
        }
    }

    /// Cuts the cache back to its first `keep` tokens. A shared buffer only forgets the count
    /// (rows past it are never read), and gives memory back when it is mostly unused.
    pub fn truncate(&self, cache: &mut KvCache, keep: usize) -> Result<(), EngineError> {
        if keep >= cache.tokens.len() {
            return Ok(());
        }
        cache.tokens.truncate(keep);
        cache.rows.forget_from(keep);
        match self.layout {
            KvLayout::SharedBuffer => {
                let smaller = grown_capacity(keep.max(1), self.max_capacity) * 2;
                if cache.capacity > 4 * CAPACITY_STEP && smaller < cache.capacity / 2 {
                    self.reallocate(cache, smaller)?;
                }
            }
            KvLayout::Copying if keep == 0 => *cache = self.empty_cache()?,
            KvLayout::Copying => self.reallocate(cache, keep)?,
        }
        Ok(())
    }
}

/// Copies the first `kept` rows of each of `heads` heads from a region of one tensor to a
/// region of another: `(tensor, region, rows per head)` each.
fn copy_region<T: PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static>(
    (from, from_region, from_rows): (&DynValue, usize, usize),
    (to, to_region, to_rows): (&mut DynValue, usize, usize),
    kept: usize,
    heads: usize,
    head_dim: usize,
) -> Result<(), EngineError> {
    let (_, source) = from.try_extract_tensor::<T>().map_err(ort_error)?;
    let (_, target) = to.try_extract_tensor_mut::<T>().map_err(ort_error)?;
    for head in 0..heads {
        let from_at = (from_region * heads + head) * from_rows * head_dim;
        let to_at = (to_region * heads + head) * to_rows * head_dim;
        target[to_at..to_at + kept * head_dim].copy_from_slice(&source[from_at..from_at + kept * head_dim]);
    }
    Ok(())
}

/// Rows per head of a `[batch, heads, rows, head_dim]` KV tensor.
fn rows_per_head(tensor: &DynValue) -> usize {
    match tensor.dtype() {
        ValueType::Tensor { shape, .. } if shape.len() == 4 => shape[2].max(0) as usize,
        _ => 0,
    }
}

/// The last `rows` rows of `logits` ([batch, positions, vocab]), flattened. A graph that takes
/// `logits_to_keep` (`kept`) must return exactly those rows: a prefill chunk then computes one
/// row of the LM head, not 128 (25 MB of fp32 logits for this vocabulary).
fn last_rows(outputs: &SessionOutputs<'_>, rows: usize, kept: bool) -> Result<Vec<f32>, EngineError> {
    let (shape, data) = outputs["logits"].try_extract_tensor::<f32>().map_err(ort_error)?;
    let vocab = *shape.last().ok_or_else(|| ort_error("logits have no dimensions"))? as usize;
    if vocab == 0 || data.len() < rows * vocab || (kept && data.len() != rows * vocab) {
        return Err(ort_error(format!("the model returned logits of shape {shape:?}, expected {rows} row(s)")));
    }
    Ok(data[data.len() - rows * vocab..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_grows_to_what_is_needed_in_whole_steps_within_the_context() {
        assert_eq!(grown_capacity(10, 8192), 256);
        assert_eq!(grown_capacity(257, 8192), 512);
        assert_eq!(grown_capacity(600, 8192), 768);
        assert_eq!(grown_capacity(2049, 8192), 2304);
        assert_eq!(grown_capacity(8100, 8192), 8192);
        assert_eq!(grown_capacity(100, 64), 100, "never below what is needed");
    }
}
