//! Threads that load models at once share one ONNX Runtime environment (ONNX Runtime refuses a
//! second one). Its own test binary: the first use of the environment in the process.

use std::sync::{Arc, Barrier};

#[test]
fn threads_that_start_onnx_runtime_at_once_get_the_one_environment() {
    let threads: u64 = 16;
    let start = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|index| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                // Staggered, so that some thread looks while another is making the environment.
                std::thread::sleep(std::time::Duration::from_micros(400 * index));
                nib::engine::runtime::environment(None).map(|environment| environment as *const _ as usize)
            })
        })
        .collect();
    let environments: Vec<usize> =
        handles.into_iter().map(|handle| handle.join().unwrap().expect("the environment")).collect();
    assert!(environments.windows(2).all(|pair| pair[0] == pair[1]), "more than one environment");
}
