//! Models and paths for tests, fuzzing and examples: tiny BERT-like graphs built in code, in the
//! layouts different exporters produce, and the location of the shared reference models.

pub mod shared;
pub mod synth;
