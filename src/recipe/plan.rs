//! A recipe as an executor [`Plan`]: its sections mapped to pass options in the reference order
//! (low-rank, the MAC budget, heads, FFN, quantization), and option errors rendered in the
//! recipe's words (`rmt_lowrank.k_min (line 7)`).

use crate::executor::{self, Plan, PlanError, Step};
use crate::options::Named;
use crate::passes::lowrank::{ApplyTo, LowrankOptions, RankRule, Shrink};
use crate::passes::prune::{PruneOptions, Removal, Strategy};
use crate::passes::quantize::{
    self, ActivationType, CalibMethod, Fp16Float32, Mode, QuantizeOptions, StaticForm, WeightType,
};
use crate::passes::Pass;

use super::{LoadedRecipe, LowrankSection, PruneUnit, QuantizationSection};

/// The low-rank options of a recipe: the reference's keys (`k_mode` energy|ratio|fixed with
/// `energy`/`ratio`/`k`, clamps, `apply_to`, `layers`, `denoise` + `shrink_method`), or a
/// parameter budget (`target_params`, activation-aware on the calibration data). Errors name the
/// key.
pub fn lowrank_options(l: &LowrankSection) -> Result<LowrankOptions, String> {
    let d = LowrankOptions::default();
    let mode = l.k_mode.as_deref().unwrap_or("energy");
    // A rule's value under another rule would do nothing (`ratio: 0.25` without `k_mode: ratio`
    // ran the energy rule): refused, as the command line refuses --ratio with --rank.
    if l.target_params.is_none() {
        for (key, given, wants) in [
            ("energy", l.energy.is_some(), "energy"),
            ("ratio", l.ratio.is_some(), "ratio"),
            ("k", l.k.is_some(), "fixed"),
        ] {
            if given && mode != wants && ["energy", "ratio", "fixed"].contains(&mode) {
                return Err(format!(
                    "rmt_lowrank.{key} applies to k_mode: {wants}, and k_mode is {mode}{}: set k_mode: {wants} or drop {key}",
                    if l.k_mode.is_none() { " (the default)" } else { "" }
                ));
            }
        }
    }
    if l.shrink_method.is_some() && !l.denoise {
        return Err("rmt_lowrank.shrink_method is the rule of denoise: set denoise: true or drop shrink_method".into());
    }
    let rank = match mode {
        "energy" => RankRule::Energy(l.energy.unwrap_or(0.99)),
        "ratio" => RankRule::Ratio(l.ratio.ok_or("rmt_lowrank.k_mode ratio needs rmt_lowrank.ratio")?),
        "fixed" => RankRule::Fixed(l.k.ok_or("rmt_lowrank.k_mode fixed needs rmt_lowrank.k")?),
        m => return Err(format!("rmt_lowrank.k_mode: unknown mode '{m}' (energy, ratio, fixed)")),
    };
    let apply_to = match l.apply_to.as_deref() {
        None => d.apply_to,
        Some(a) => ApplyTo::from_name(a)
            .ok_or_else(|| format!("rmt_lowrank.apply_to: unknown set '{a}' ({})", ApplyTo::names()))?,
    };
    let shrink = match l.shrink_method.as_deref() {
        None => Shrink::GavishDonoho,
        Some(m) => Shrink::from_name(m)
            .ok_or_else(|| format!("rmt_lowrank.shrink_method: unknown rule '{m}' ({})", Shrink::names()))?,
    };
    if l.target_params.is_some() && l.denoise {
        return Err("rmt_lowrank: denoise belongs to the weight-only method; drop it or target_params".into());
    }
    Ok(LowrankOptions {
        rank,
        k_min: l.k_min,
        k_max: l.k_max,
        apply_to,
        layers: l.layers.clone(),
        denoise: l.denoise.then_some(shrink),
        force: l.force,
        target_params: l.target_params,
        seq_len: executor::MAC_SEQ_LEN,
        activation_aware: l.target_params.is_some(),
    })
}

/// The values of `quantization.method`, each with (mode, per-channel weights, int8 embeddings,
/// graph form, whether it reproduces the reference's method): the reference's methods first
/// (`dynamic`: its PyTorch dynamic INT8 of every Linear, per tensor, embeddings in float; `onnx`:
/// ONNX Runtime's `quantize_dynamic` default, per tensor, embeddings too), then this tool's.
const METHODS: &[(&str, Mode, bool, bool, StaticForm, bool)] = &[
    ("dynamic", Mode::Dynamic, false, false, StaticForm::Qdq, true),
    ("onnx", Mode::Dynamic, false, true, StaticForm::Qdq, true),
    ("static", Mode::Static, true, true, StaticForm::Qdq, false),
    ("static_ort", Mode::Static, true, true, StaticForm::Ort, false),
    ("dynamic_per_channel", Mode::Dynamic, true, true, StaticForm::Qdq, false),
    ("fp16", Mode::Fp16, true, true, StaticForm::Qdq, false),
];

/// The values of `quantization.method`.
pub fn quantization_methods() -> Vec<&'static str> {
    METHODS.iter().map(|m| m.0).collect()
}

/// The quantization options of a recipe: the method's settings, then explicit keys override.
/// Errors name the key.
pub fn quantize_options(q: &QuantizationSection) -> Result<QuantizeOptions, String> {
    let d = QuantizeOptions::default();
    let name = q.method.as_deref().unwrap_or("dynamic");
    let &(_, mode, per_channel, embeddings, static_form, reference) = METHODS
        .iter()
        .find(|m| m.0 == name)
        .ok_or_else(|| format!("quantization.method: unknown method '{name}'"))?;
    // Keys that would do nothing for this method are refused, as the command line refuses
    // its flags.
    let set = [
        ("weight_type", q.weight_type.is_some()),
        ("per_channel", q.per_channel.is_some()),
        ("split_first_token", q.split_first_token.is_some()),
        ("unpad", q.unpad.is_some()),
        ("activation_type", q.activation_type.is_some()),
        ("calib_method", q.calib_method.is_some()),
        ("percentile", q.percentile.is_some()),
    ];
    let static_only = ["activation_type", "calib_method", "percentile"];
    for (key, given) in set {
        if given && mode == Mode::Fp16 {
            return Err(format!("quantization.{key} applies to the int8 methods, not '{name}'"));
        }
        if given && mode == Mode::Dynamic && static_only.contains(&key) {
            return Err(format!(
                "quantization.{key} applies to the static methods, not '{name}' (dynamic quantizes activations at run time)"
            ));
        }
    }
    let per_channel = q.per_channel.unwrap_or(per_channel);
    let calib_method = match q.calib_method.as_deref() {
        None => d.calib_method,
        Some(m) => CalibMethod::from_name(m).ok_or_else(|| {
            format!(
                "quantization.calib_method: unknown method '{m}' ({})",
                CalibMethod::names()
            )
        })?,
    };
    if q.percentile.is_some() && calib_method != CalibMethod::Percentile {
        return Err("quantization.percentile needs quantization.calib_method: percentile".into());
    }
    let weight_type = match q.weight_type.as_deref() {
        None => d.weight_type,
        Some(t) => WeightType::from_name(t)
            .ok_or_else(|| format!("quantization.weight_type: unknown type '{t}' ({})", WeightType::names()))?,
    };
    let activation_type = match q.activation_type.as_deref() {
        None => d.activation_type,
        Some(t) => ActivationType::from_name(t).ok_or_else(|| {
            format!(
                "quantization.activation_type: unknown type '{t}' ({})",
                ActivationType::names()
            )
        })?,
    };
    let fp16_float32 = match q.fp16_float32.as_deref() {
        None => d.fp16_float32,
        Some(_) if mode != Mode::Fp16 => {
            return Err(format!(
                "quantization.fp16_float32 applies to method fp16, not '{name}'"
            ))
        }
        Some(t) => Fp16Float32::from_name(t).ok_or_else(|| {
            format!(
                "quantization.fp16_float32: unknown value '{t}' ({})",
                Fp16Float32::names()
            )
        })?,
    };
    Ok(QuantizeOptions {
        mode,
        per_channel,
        weight_type,
        activation_type,
        calib_method,
        percentile: q.percentile.unwrap_or(d.percentile),
        exclude: q.exclude.clone(),
        embeddings: q.embeddings.unwrap_or(embeddings),
        static_form,
        // The reference's methods stay as they were.
        split_first_token: q
            .split_first_token
            .unwrap_or(!reference && quantize::split_by_default(mode, per_channel)),
        unpad: q.unpad.unwrap_or(false),
        attention_op: q.attention_op.unwrap_or(true),
        fp16_float32,
    })
}

/// A pruning unit's strategy; an unknown name is an error naming the key.
fn strategy(key: &str, name: &str) -> Result<Strategy, String> {
    Strategy::from_name(name)
        .ok_or_else(|| format!("{key}.args.strategy: unknown strategy '{name}' ({})", Strategy::names()))
}

fn unit_options(key: &str, unit: &PruneUnit, heads: bool, per_layer: bool) -> Result<PruneOptions, String> {
    let amount = unit.args.prune_amount.unwrap_or(0.0);
    let named = unit.args.named().map(|indices| Removal {
        layer: unit.args.layer_idx,
        indices: indices.clone(),
    });
    if amount == 0.0 && named.is_none() {
        return Err(format!(
            "{key}.args.prune_amount: an enabled section with nothing to remove; give prune_amount (a fraction in (0, 1)) or the indices to remove, or set enable: false"
        ));
    }
    let (remove_heads, remove_neurons) = if heads { (named, None) } else { (None, named) };
    Ok(PruneOptions {
        heads: if heads { amount } else { 0.0 },
        ffn: if heads { 0.0 } else { amount },
        strategy: strategy(key, &unit.args.strategy)?,
        seed: unit.args.seed,
        seq_len: executor::MAC_SEQ_LEN,
        target_macs: None,
        max_ffn_fraction: crate::passes::prune::DEFAULT_MAX_FFN_FRACTION,
        per_layer,
        ffn_multiple_of: 1,
        remove_heads,
        remove_neurons,
    })
}

impl LoadedRecipe {
    /// The recipe's passes as an executor plan (options not yet validated: see
    /// [`Plan::validate`] and [`LoadedRecipe::plan_error`]). Errors name the key.
    pub fn plan(&self) -> Result<Plan, String> {
        let rec = &self.recipe;
        let mut steps = vec![];
        let mut step = |label: &str, pass: Pass| {
            steps.push(Step {
                label: label.into(),
                pass,
            })
        };
        let prunes = rec.prune.target_macs.is_some()
            || [&rec.prune.attention_heads, &rec.prune.mlp_neurons]
                .iter()
                .any(|u| u.as_ref().is_some_and(|u| u.enable));
        if rec.rmt_lowrank.enable && prunes {
            // Found after the low-rank pass ran, with advice a recipe cannot follow.
            return Err("rmt_lowrank: enabled with prune, which this recipe would run after it (the reference's order: low rank, then pruning), and pruning cannot work through the factors low rank writes; enable one of them, or prune with this recipe and factorize its output with another (or `onnx-compress lowrank`)".into());
        }
        if rec.rmt_lowrank.enable {
            step("rmt_lowrank", Pass::Lowrank(lowrank_options(&rec.rmt_lowrank)?));
        }
        if let Some(t) = rec.prune.target_macs {
            step(
                "prune",
                Pass::Prune(PruneOptions {
                    strategy: Strategy::Obs,
                    seq_len: executor::MAC_SEQ_LEN,
                    target_macs: Some(t),
                    max_ffn_fraction: rec
                        .prune
                        .max_ffn_fraction
                        .unwrap_or(crate::passes::prune::default_max_ffn_fraction(t)),
                    ffn_multiple_of: rec.prune.ffn_multiple_of.unwrap_or(1),
                    ..Default::default()
                }),
            );
        }
        for (key, unit, heads) in [
            ("prune.attention_heads", &rec.prune.attention_heads, true),
            ("prune.mlp_neurons", &rec.prune.mlp_neurons, false),
        ] {
            if let Some(u) = unit.as_ref().filter(|u| u.enable) {
                let mut o = unit_options(key, u, heads, rec.prune.per_layer)?;
                if !heads {
                    o.ffn_multiple_of = rec.prune.ffn_multiple_of.unwrap_or(1);
                }
                step(key, Pass::Prune(o));
            }
        }
        if rec.quantization.enable {
            step("quantization", Pass::Quantize(quantize_options(&rec.quantization)?));
        }
        let calibration = rec.calibration.as_ref().map(|c| executor::Calibration {
            data: self.resolve(&c.data),
            format: super::format_named(&c.format),
            columns: crate::data::Columns {
                text: c.text_column.clone(),
                pair: c.text_pair_column.clone(),
                label: None,
                named_in: Some("calibration"),
            },
            task: self.task(),
            samples: c
                .samples
                .unwrap_or(crate::passes::prune::default_calib_samples(rec.prune.target_macs)),
            seed: c.seed,
            max_length: rec.data.max_input_length,
            threads: rec.eval.threads,
            tokenizer: None,
            recorded_as: Some(c.data.clone()),
        });
        let labels = match &rec.data.labels {
            Some(l) => Some(crate::data::labels::parse_label_list(l).map_err(|e| format!("data.labels: {e}"))?),
            None => None,
        };
        Ok(Plan {
            steps,
            calibration,
            labels,
        })
    }

    /// A plan's option error in the recipe's words: the section with its line, then the message
    /// with each field named by its key (and line, where the key is written).
    pub fn plan_error(&self, plan: &Plan, e: &PlanError, text: &str) -> String {
        let section = match e.step {
            Some(i) => plan.steps[i].label.split('.').next().unwrap_or("").to_string(),
            None => "calibration".to_string(),
        };
        let label = e.step.map(|i| plan.steps[i].label.as_str());
        let key = |field: &str| super::at(text, &recipe_key(label, field));
        let at = super::at(text, &section);
        format!("{at}: {}", e.error.render(&key))
    }
}

/// The recipe key of an option field of the step labelled `label` (`None`: the calibration).
pub fn recipe_key(label: Option<&str>, field: &str) -> String {
    match (label, field) {
        (_, "calib_data") => "calibration.data".into(),
        (_, "calib_samples") => "calibration.samples".into(),
        (_, "max_length") => "data.max_input_length".into(),
        (Some("rmt_lowrank"), "rank") => "rmt_lowrank.k".into(),
        (Some("rmt_lowrank"), "denoise") => "rmt_lowrank.denoise".into(),
        (Some(unit @ ("prune.attention_heads" | "prune.mlp_neurons")), "heads" | "ffn") => {
            format!("{unit}.args.prune_amount")
        }
        (Some(unit @ ("prune.attention_heads" | "prune.mlp_neurons")), "strategy") => format!("{unit}.args.strategy"),
        (Some(unit @ "prune.attention_heads"), "remove_heads") => format!("{unit}.args.heads_to_remove"),
        (Some(unit @ "prune.mlp_neurons"), "remove_neurons") => format!("{unit}.args.neurons_to_remove"),
        (Some("quantization"), "mode") => "quantization.method".into(),
        (Some(label), field) => format!("{}.{field}", label.split('.').next().unwrap_or(label)),
        (None, field) => format!("calibration.{field}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibration_section_no_step_reads_is_noted() {
        let notes = |quant: &str| {
            let text = format!(
                "model:\n  model_name: m.onnx\ndata:\n  task: sst2\ncalibration:\n  data: t.tsv\nquantization:\n  enable: true\n  method: {quant}\n"
            );
            crate::recipe::parse(&text, std::path::Path::new("r.yaml"))
                .unwrap()
                .notes()
                .to_vec()
        };
        let n = notes("dynamic");
        assert!(
            n.iter()
                .any(|n| n.starts_with("r.yaml:5: calibration is read by no step")),
            "{n:?}"
        );
        assert!(notes("static").is_empty());
    }

    #[test]
    fn weight_type_defaults_to_s8_and_reads_u8() {
        let q = |t: Option<&str>| QuantizationSection {
            enable: true,
            method: Some("static_ort".into()),
            weight_type: t.map(String::from),
            ..Default::default()
        };
        assert_eq!(quantize_options(&q(None)).unwrap().weight_type, WeightType::S8);
        assert_eq!(quantize_options(&q(Some("u8"))).unwrap().weight_type, WeightType::U8);
        assert!(quantize_options(&q(Some("i8")))
            .unwrap_err()
            .contains("quantization.weight_type"));
    }

    /// A MAC budget's FFN share and calibration size come from the recipe; when not written,
    /// from the budget's depth, as `prune` chooses them.
    #[test]
    fn a_mac_budget_takes_its_ffn_share_and_calibration_from_the_recipe_or_its_depth() {
        let prune = |target: f64, extra: &str, samples: &str| {
            let text = format!(
                "model:\n  model_name: m.onnx\ndata:\n  task: sst2\ncalibration:\n  data: t.tsv\n{samples}prune:\n  target_macs: {target}\n{extra}"
            );
            let plan = crate::recipe::parse(&text, std::path::Path::new("r.yaml"))
                .unwrap()
                .plan()
                .unwrap();
            let samples = plan.calibration.as_ref().map(|c| c.samples);
            match &plan.steps[0].pass {
                Pass::Prune(o) => (o.target_macs, o.max_ffn_fraction, samples),
                p => panic!("{p:?}"),
            }
        };
        assert_eq!(prune(0.6, "", ""), (Some(0.6), 0.9, Some(512)));
        assert_eq!(prune(0.5, "", ""), (Some(0.5), 0.98, Some(512)));
        assert_eq!(prune(0.4, "", ""), (Some(0.4), 0.98, Some(1024)));
        assert_eq!(prune(0.5, "  max_ffn_fraction: 0.9\n", ""), (Some(0.5), 0.9, Some(512)));
        assert_eq!(
            prune(0.6, "  max_ffn_fraction: 0.98\n", ""),
            (Some(0.6), 0.98, Some(512))
        );
        assert_eq!(prune(0.4, "", "  samples: 512\n"), (Some(0.4), 0.98, Some(512)));
    }
}
