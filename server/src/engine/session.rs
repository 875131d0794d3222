//! The ONNX decoder: discovers the graph's inputs and outputs (names, layer count, KV heads,
//! head size) from the session itself, runs forward passes that extend a KV cache, and cuts the
//! cache back to a prefix for reuse.
//!
//! Both supported layouts (HF Optimum's and `models/convert.py`'s) use the same names:
//! `input_ids`, `attention_mask`, optional `position_ids`, `past_key_values.N.{key,value}` in;
//! `logits`, `present.N.{key,value}` out, caches shaped `[batch, kv_heads, seq, head_dim]`.

use std::borrow::Cow;
use std::path::Path;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::{DynValue, Tensor, ValueType};

use super::EngineError;

/// Names and shapes read from the graph.
#[derive(Clone, Debug)]
pub struct GraphSignature {
    pub position_ids: bool,
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Rows of the output embedding (the logits' last dimension), when the graph states it.
    pub vocab: Option<usize>,
    past_names: Vec<(String, String)>,
    present_names: Vec<(String, String)>,
}

impl GraphSignature {
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
        let (kv_heads, head_dim) = match first_past.dtype() {
            ValueType::Tensor { shape, .. } if shape.len() == 4 && shape[1] > 0 && shape[3] > 0 => {
                (shape[1] as usize, shape[3] as usize)
            }
            other => {
                return Err(format!("`past_key_values.0.key` must be [batch, kv_heads, seq, head_dim], got {other:?}"));
            }
        };
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
            layers,
            kv_heads,
            head_dim,
            vocab,
            past_names,
            present_names,
        })
    }
}

/// Keys and values of the tokens seen so far, one pair per layer, each
/// `[1, kv_heads, tokens.len(), head_dim]`.
pub struct KvCache {
    layers: Vec<(DynValue, DynValue)>,
    pub tokens: Vec<u32>,
}

pub struct DecoderSession {
    session: Session,
    pub signature: GraphSignature,
}

fn build_session(environment: &Environment, path: &Path, threads: usize) -> ort::Result<Session> {
    Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?
        .commit_from_file(path)
}

fn ort_error(error: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(error.to_string())
}

impl DecoderSession {
    pub fn load(environment: &Environment, path: &Path, threads: usize) -> Result<Self, EngineError> {
        let session = build_session(environment, path, threads)
            .map_err(|error| EngineError::Model(format!("cannot load {}: {error}", path.display())))?;
        let signature = GraphSignature::read(&session)
            .map_err(|why| EngineError::Model(format!("{} is not a usable decoder: {why}", path.display())))?;
        Ok(DecoderSession { session, signature })
    }

    fn empty_tensor(&self) -> Result<DynValue, EngineError> {
        let shape = [1usize, self.signature.kv_heads, 0, self.signature.head_dim];
        Ok(Tensor::<f32>::from_array((shape, Vec::<f32>::new())).map_err(ort_error)?.into_dyn())
    }

    pub fn empty_cache(&self) -> Result<KvCache, EngineError> {
        let mut layers = Vec::with_capacity(self.signature.layers);
        for _ in 0..self.signature.layers {
            layers.push((self.empty_tensor()?, self.empty_tensor()?));
        }
        Ok(KvCache { layers, tokens: Vec::new() })
    }

    /// Runs `ids` after the cached tokens, extends the cache with them and returns the logits
    /// of the last position. On error the cache is left as it was.
    pub fn forward(
        &mut self,
        cache: &mut KvCache,
        ids: &[u32],
        run_options: Option<&RunOptions>,
    ) -> Result<Vec<f32>, EngineError> {
        assert!(!ids.is_empty(), "forward needs at least one token");
        // An id past the embedding would make ONNX Runtime read out of bounds (quantized
        // gathers do not check); a tokenizer that does not match the model is refused here.
        if let Some(vocab) = self.signature.vocab
            && let Some(id) = ids.iter().find(|&&id| id as usize >= vocab)
        {
            return Err(EngineError::Inference(format!(
                "token id {id} is outside the model's vocabulary of {vocab}: the tokenizer does not match the model"
            )));
        }
        let past = cache.tokens.len();
        let total = past + ids.len();
        let input_ids: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            ("input_ids".into(), Tensor::from_array(([1usize, ids.len()], input_ids)).map_err(ort_error)?.into()),
            (
                "attention_mask".into(),
                Tensor::from_array(([1usize, total], vec![1i64; total])).map_err(ort_error)?.into(),
            ),
        ];
        if self.signature.position_ids {
            let positions: Vec<i64> = (past as i64..total as i64).collect();
            inputs.push((
                "position_ids".into(),
                Tensor::from_array(([1usize, ids.len()], positions)).map_err(ort_error)?.into(),
            ));
        }
        for ((key_name, value_name), (key, value)) in self.signature.past_names.iter().zip(&cache.layers) {
            inputs.push((key_name.as_str().into(), key.into()));
            inputs.push((value_name.as_str().into(), value.into()));
        }
        let mut outputs = match run_options {
            Some(options) => self.session.run_with_options(inputs, options),
            None => self.session.run(inputs),
        }
        .map_err(ort_error)?;
        // logits: [batch, seq or 1, vocab]; only the last row matters.
        let logits = {
            let (shape, data) = outputs["logits"].try_extract_tensor::<f32>().map_err(ort_error)?;
            let vocab = *shape.last().ok_or_else(|| ort_error("logits have no dimensions"))? as usize;
            if vocab == 0 || data.len() < vocab {
                return Err(ort_error(format!("the model returned logits of shape {shape:?}")));
            }
            data[data.len() - vocab..].to_vec()
        };
        let mut layers = Vec::with_capacity(self.signature.layers);
        for (key_name, value_name) in &self.signature.present_names {
            let key = outputs.remove(key_name).ok_or_else(|| ort_error(format!("missing output {key_name}")))?;
            let value = outputs.remove(value_name).ok_or_else(|| ort_error(format!("missing output {value_name}")))?;
            layers.push((key, value));
        }
        drop(outputs);
        cache.layers = layers;
        cache.tokens.extend_from_slice(ids);
        Ok(logits)
    }

    /// Cuts the cache back to its first `keep` tokens.
    pub fn truncate(&self, cache: &mut KvCache, keep: usize) -> Result<(), EngineError> {
        let length = cache.tokens.len();
        if keep >= length {
            return Ok(());
        }
        if keep == 0 {
            *cache = self.empty_cache()?;
            return Ok(());
        }
        let (heads, head_dim) = (self.signature.kv_heads, self.signature.head_dim);
        let cut = |value: &DynValue| -> Result<DynValue, EngineError> {
            let (_, data) = value.try_extract_tensor::<f32>().map_err(ort_error)?;
            let mut kept = Vec::with_capacity(heads * keep * head_dim);
            // [1, heads, length, head_dim] → [1, heads, keep, head_dim]
            for head in 0..heads {
                let start = head * length * head_dim;
                kept.extend_from_slice(&data[start..start + keep * head_dim]);
            }
            Ok(Tensor::from_array(([1usize, heads, keep, head_dim], kept)).map_err(ort_error)?.into_dyn())
        };
        let mut layers = Vec::with_capacity(cache.layers.len());
        for (key, value) in &cache.layers {
            layers.push((cut(key)?, cut(value)?));
        }
        cache.layers = layers;
        cache.tokens.truncate(keep);
        Ok(())
    }
}
