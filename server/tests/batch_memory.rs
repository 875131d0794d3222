//! A batch of generations decoded side by side (`Model::generate_batch`) holds its own KV
//! buffers, tens of MB, while it decodes; afterwards the process's resident memory goes back to
//! what it was, rather than malloc keeping the freed buffers (`allocator::give_back_freed_memory`).
//! One test in its own process, so that nothing else allocates meanwhile; `cargo test --release
//! --test batch_memory -- --nocapture` prints the two figures.

mod common;

use nib::engine::{self, EngineSettings, Flow, GenerationRequest, PromptPiece};

/// Resident memory of this process, in MB.
fn resident_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()).expect("a number of kB") / 1024.0
}

#[test]
fn memory_goes_back_after_a_batch() {
    let Some(dir) = common::default_model() else { return };
    engine::allocator::tune_for_inference();
    let settings = EngineSettings { model_dir: Some(dir), onnx_runtime_path: None, threads: 2, remote: None };
    let mut model = engine::load_model(&settings).expect("the default model loads");
    assert!(model.batches(), "the default model decodes side by side");
    let source = std::fs::read_to_string(common::repo_root().join("models/nib_convert/graph.py")).unwrap();
    let head: String = source.chars().take(2500).collect();
    // Five prompts of about 700 tokens: a batch of about 85 MB of keys and values.
    let batch = |model: &mut engine::Model, round: usize| {
        let prompt = |i: usize| vec![PromptPiece::Text(format!("{head}\n# question {i} of round {round}:"))];
        let requests: Vec<_> = (0..5).map(|i| GenerationRequest::greedy(prompt(i), 24)).collect();
        let mut observers: Vec<_> = requests.iter().map(|_| |_: &str| Flow::Continue).collect();
        let mut observers: Vec<&mut dyn FnMut(&str) -> Flow> =
            observers.iter_mut().map(|observer| observer as &mut dyn FnMut(&str) -> Flow).collect();
        let generations = model.generate_batch(&requests, &mut observers);
        assert!(generations.iter().all(|generation| generation.is_ok()));
    };
    // What stays is warmed first, alone: the model's own cache, ONNX Runtime's arena.
    model.set_batching(false);
    batch(&mut model, 0);
    model.set_batching(true);
    let before = resident_mb();
    batch(&mut model, 1);
    let after = resident_mb();
    eprintln!("resident memory: {before:.0} MB before the batch, {after:.0} MB after it");
    assert!(after < before + 40.0, "resident memory grew from {before:.0} MB to {after:.0} MB after a batch");
}
