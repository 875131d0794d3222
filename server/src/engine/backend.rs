//! What the rest of nib generates with: a [`Backend`] is either the in-process ONNX model
//! ([`Model`], the default) or an OpenAI-compatible completions server
//! ([`super::remote::RemoteBackend`]). Prompts are built and completions post-processed by nib
//! in both cases; a backend only turns a prompt into text.

use super::{EngineError, Flow, Generation, GenerationRequest, Model, ModelInfo};

pub trait Backend {
    /// The prompt formats, context length and special tokens prompts are built for.
    fn info(&self) -> &ModelInfo;

    /// Generates a continuation of `request.prompt`. `observer` sees the whole text generated
    /// so far after every new piece and may stop generation early.
    fn generate(
        &mut self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError>;

    /// Generates each of `requests` (`observers[i]` watching request `i`): the results
    /// `generate` gives one after another, in order. The in-process model decodes them side by
    /// side.
    fn generate_batch(
        &mut self,
        requests: &[GenerationRequest],
        observers: &mut [&mut dyn FnMut(&str) -> Flow],
    ) -> Vec<Result<Generation, EngineError>> {
        requests.iter().zip(observers).map(|(request, observer)| self.generate(request, *observer)).collect()
    }
}

impl Backend for Model {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        observer: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, EngineError> {
        Model::generate(self, request, observer)
    }

    fn generate_batch(
        &mut self,
        requests: &[GenerationRequest],
        observers: &mut [&mut dyn FnMut(&str) -> Flow],
    ) -> Vec<Result<Generation, EngineError>> {
        Model::generate_batch(self, requests, observers)
    }
}
