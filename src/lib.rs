//! onnx-compress: rewrites BERT-family ONNX classifiers to make them smaller and faster, and
//! measures what each rewrite costs in accuracy and buys in speed.
//!
//! Layout: [`onnx`] reads and writes the format; [`structure`] finds the transformer in a graph;
//! [`runtime`] runs models with ONNX Runtime; [`glue`] reads GLUE data and computes metrics;
//! [`eval`] measures a model; [`inspect`] summarizes one; [`interrupt`] cleans up after a signal; [`history`] is what the tool records in
//! a model's metadata; [`report`] renders reports as text; [`options`] holds option errors and
//! named choices; [`passes`] are the compression passes and [`executor`] runs any plan of them;
//! [`recipe`] reads YAML run recipes, [`pipeline`] carries one out, [`bench`] runs many into tables
//! and [`chart`] draws them; `testkit` (feature `testkit`, for tests only) builds small models in
//! code.

pub mod auto;
pub mod bench;
pub mod calib;
pub mod chart;
pub mod data;
pub mod diff;
pub mod eval;
pub mod executor;
pub mod glue;
pub mod history;
pub mod inspect;
pub mod interrupt;
pub mod linalg;
pub mod onnx;
pub mod options;
pub mod passes;
pub mod pipeline;
pub mod recipe;
pub mod report;
pub mod results;
pub mod runtime;
pub mod sensitivity;
pub mod structure;
#[cfg(feature = "testkit")]
pub mod testkit;
