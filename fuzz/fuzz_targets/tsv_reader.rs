//! Any bytes → the GLUE TSV reader, under every task's layout (headered tasks and CoLA's
//! headerless one), and header-based task inference. Errors are fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onnx_compress::glue::{read_tsv_str, Task};

const TASKS: [&str; 9] = ["sst2", "mrpc", "qqp", "cola", "qnli", "rte", "mnli", "stsb", "wnli"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Task::infer_from_header(&text);
    for name in TASKS {
        let task = Task::from_name(name).expect("a known task");
        if let Ok(ds) = read_tsv_str(task, "fuzz.tsv", &text) {
            assert!(!ds.examples.is_empty(), "the reader returned an empty dataset");
            for e in &ds.examples {
                assert_eq!(e.text_b.is_some(), task.is_pair(), "pair-ness of an example");
            }
        }
    }
});
