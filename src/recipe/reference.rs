//! The keys of the reference experiment's layout that this tool cannot act on: its training
//! setup (`trainer`, `logging`, `model.should_train`) and its pruning methods other than heads
//! and FFN neurons (`prune.magnitude`, `gradient`, `stochastic`, `tokens`). They are accepted so
//! that its configs run unchanged; each present section is ignored with one note, and an
//! enabled method this tool does not have is an error saying why.
//!
//! Their sub-keys are the reference's (`trainer.num_epochs`, `prune.magnitude.args.prune_amount`,
//! ...); anything else there is an unknown key, as everywhere in a recipe.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::Recipe;

/// `trainer`: the reference's fine-tuning settings (values not read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_epochs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_model_path: Option<Value>,
}

/// `logging`: the reference's training-log settings (values not read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_frequency: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub print_summary: Option<Value>,
}

/// `prune.magnitude`, `prune.gradient`, `prune.stochastic`: unstructured pruning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnstructuredUnit {
    #[serde(default)]
    pub enable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<UnstructuredArgs>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnstructuredArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_amount: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_pruned: Option<Value>,
}

/// `prune.tokens`: dropping input tokens at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensUnit {
    #[serde(default)]
    pub enable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<TokensArgs>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_factor: Option<Value>,
}

/// What to say about one ignored key: its dotted path and the sentence after it.
pub struct Ignored {
    pub key: &'static str,
    pub message: String,
}

/// The reference's pruning methods this tool does not have: (key, whether it is unstructured
/// weight pruning, `Some(enable)` when present, what it is).
fn unsupported_methods(rec: &Recipe) -> [(&'static str, bool, Option<bool>, &'static str); 4] {
    let p = &rec.prune;
    let enabled = |u: &Option<UnstructuredUnit>| u.as_ref().map(|u| u.enable);
    [
        (
            "prune.magnitude",
            true,
            enabled(&p.magnitude),
            "unstructured magnitude pruning",
        ),
        (
            "prune.gradient",
            true,
            enabled(&p.gradient),
            "unstructured gradient-based pruning",
        ),
        (
            "prune.stochastic",
            true,
            enabled(&p.stochastic),
            "unstructured random pruning",
        ),
        (
            "prune.tokens",
            false,
            p.tokens.as_ref().map(|u| u.enable),
            "token pruning",
        ),
    ]
}

/// The reference's keys in `rec` this tool ignores, each with one note; an error (key and reason)
/// when one of them asks for something this tool cannot do.
pub fn ignored(rec: &Recipe) -> Result<Vec<Ignored>, (&'static str, String)> {
    let mut out = vec![];
    if rec.model.should_train == Some(true) {
        return Err((
            "model.should_train",
            "true, but onnx-compress does not train: it compresses a trained model; set it to false".into(),
        ));
    }
    if rec.trainer.is_some() {
        out.push(Ignored {
            key: "trainer",
            message: "trainer is the reference's training setup; ignored (onnx-compress does not train)".into(),
        });
    }
    if rec.logging.is_some() {
        out.push(Ignored {
            key: "logging",
            message: "logging is the reference's training-log setup; ignored (onnx-compress prints its own report)"
                .into(),
        });
    }
    for (key, unstructured, enabled, what) in unsupported_methods(rec) {
        match enabled {
            None => {}
            Some(false) => out.push(Ignored {
                key,
                message: format!("{key} is disabled; ignored (onnx-compress has no {what})"),
            }),
            Some(true) => {
                let why = if unstructured {
                    "it zeroes single weights, which leaves a dense ONNX graph as large and as slow as before; \
                     use prune.attention_heads or prune.mlp_neurons (structured: the graph shrinks), or set \
                     enable: false"
                } else {
                    "it drops input tokens while the model runs, a change to how a model is run rather than to the \
                     model; set enable: false"
                };
                return Err((key, format!("enabled, but onnx-compress has no {what}: {why}")));
            }
        }
    }
    Ok(out)
}
