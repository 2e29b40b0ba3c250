//! The search space of `auto`: a structural change (none, calibrated pruning to a MAC fraction,
//! activation-aware low rank to a parameter fraction) followed by a number format (float, or a
//! `quantization.method` of recipes). Each candidate is a recipe, so that `run` rebuilds it.

use std::path::PathBuf;

use serde::Serialize;

use super::Dev;
use crate::data::{Columns, Format};
use crate::glue::Task;
use crate::options::Named;
use crate::passes::quantize::WeightType;
use crate::recipe::{
    CalibrationSection, DataSection, DeviceSection, EvalSection, LowrankSection, ModelSection, PruneSection,
    QuantizationSection, Recipe,
};

/// What changes the model's shape (or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "fraction")]
pub enum Structure {
    None,
    /// Calibrated pruning keeping this fraction of the encoder MACs.
    Prune(f64),
    /// Activation-aware low rank keeping this fraction of the encoder's parameters.
    Lowrank(f64),
}

impl Structure {
    /// Short id: `base`, `p0.60`, `lr0.80`.
    pub fn id(self) -> String {
        match self {
            Structure::None => "base".into(),
            Structure::Prune(f) => format!("p{f:.2}"),
            Structure::Lowrank(f) => format!("lr{f:.2}"),
        }
    }

    pub fn label(self) -> String {
        match self {
            Structure::None => "unchanged".into(),
            Structure::Prune(f) => format!("prune to {:.0}% MACs", f * 100.0),
            Structure::Lowrank(f) => format!("low rank to {:.0}% params", f * 100.0),
        }
    }
}

/// The number formats `auto` may try (recipe `quantization.method` names), in the order tried.
pub const QUANT_METHODS: &[&str] = &["dynamic_per_channel", "static", "static_ort", "fp16"];

/// Whether `auto` builds a number format with `quantization.unpad` when asked to: the static
/// methods, whose unpadded model computes the padded one's outputs (dynamic INT8 would take its
/// run-time ranges from other tokens, and fp16 has no split).
pub fn unpads(method: &str) -> bool {
    matches!(method, "static" | "static_ort")
}

/// One candidate: a structure, then a number format (`None`: float as it was).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub structure: Structure,
    pub quant: Option<&'static str>,
}

impl Candidate {
    /// Unique, file-name safe: `p0.60+static_ort`.
    pub fn id(&self) -> String {
        match self.quant {
            None => self.structure.id(),
            Some(q) => format!("{}+{q}", self.structure.id()),
        }
    }

    /// For tables: `prune to 60% MACs + static_ort`.
    pub fn label(&self) -> String {
        match (self.structure, self.quant) {
            (Structure::None, None) => "baseline".into(),
            (Structure::None, Some(q)) => q.into(),
            (s, None) => s.label(),
            (s, Some(q)) => format!("{} + {q}", s.label()),
        }
    }

    /// The candidate's structure alone (what its number format is applied to).
    pub fn structural(&self) -> Candidate {
        Candidate {
            structure: self.structure,
            quant: None,
        }
    }

    pub fn is_baseline(&self) -> bool {
        self.structure == Structure::None && self.quant.is_none()
    }
}

/// What every candidate's recipe shares: the model, the task, the calibration draw and how `run`
/// evaluates it.
#[derive(Debug, Clone)]
pub struct Common {
    /// Absolute paths, so that the recipe means the same from any folder.
    pub model: PathBuf,
    pub task: Option<Task>,
    /// How the user's files are read (`data.format`, the column keys, `data.labels`).
    pub format: Option<Format>,
    pub columns: Columns,
    pub labels: Option<String>,
    pub calib_data: PathBuf,
    pub calib_samples: usize,
    pub seed: u64,
    pub max_length: usize,
    pub threads: usize,
    pub cuda: bool,
    /// How int8 weights are stored (`quantization.weight_type`).
    pub weight_type: WeightType,
    /// `prune.max_ffn_fraction` of the pruning levels (`None`: by each level's depth).
    pub max_ffn_fraction: Option<f64>,
    /// Static INT8 runs its split blocks' other tokens on the real tokens only
    /// (`quantization.unpad`): the same model, faster on padded batches.
    pub unpad: bool,
    /// What `run` evaluates on: the task's split of a GLUE folder, or the user's labelled file.
    pub dev: Dev,
}

/// The recipe that builds `c`.
pub fn recipe(c: &Candidate, common: &Common) -> Recipe {
    let mut prune = PruneSection::default();
    let mut lowrank = LowrankSection::default();
    match c.structure {
        Structure::None => {}
        Structure::Prune(f) => {
            prune.target_macs = Some(f);
            // Written only when given, so that `run` chooses by the level's depth as `auto` did.
            prune.max_ffn_fraction = common.max_ffn_fraction;
        }
        Structure::Lowrank(f) => {
            lowrank.enable = true;
            lowrank.target_params = Some(f);
        }
    }
    let quantization = match c.quant {
        None => QuantizationSection::default(),
        Some(m) => QuantizationSection {
            enable: true,
            method: Some(m.into()),
            // Written only when it is not the default, so that s8 recipes stay as they were.
            weight_type: (m != "fp16" && common.weight_type != WeightType::S8)
                .then(|| common.weight_type.name().to_string()),
            unpad: (common.unpad && unpads(m)).then_some(true),
            ..Default::default()
        },
    };
    Recipe {
        name: Some(format!("auto: {}", c.label())),
        model: ModelSection {
            model_name: common.model.clone(),
            should_train: None,
        },
        data: {
            let (split, dir, file) = match &common.dev {
                Dev::Split { dir, split } => (split.clone(), Some(dir.clone()), None),
                Dev::File(f) => ("validation".to_string(), None, Some(f.clone())),
            };
            let file_key = |v: &Option<String>| v.clone().filter(|_| file.is_some());
            DataSection {
                task: common.task.map(|t| t.name().into()),
                batch_size: None,
                shuffle: false,
                max_input_length: common.max_length,
                split,
                dir,
                format: file_key(&common.format.map(|f| f.name().to_string())),
                text_column: file_key(&common.columns.text),
                text_pair_column: file_key(&common.columns.pair),
                label_column: file_key(&common.columns.label),
                // Under a task too: they name the model's outputs, which the output must carry.
                labels: common.labels.clone(),
                file,
            }
        },
        device: DeviceSection { cuda: common.cuda },
        prune,
        quantization,
        rmt_lowrank: lowrank,
        // Only where a step reads it: calibrated pruning, activation-aware low rank, static INT8.
        calibration: (c.structure != Structure::None || c.quant.is_some_and(|m| m.starts_with("static"))).then(|| {
            CalibrationSection {
                data: common.calib_data.clone(),
                samples: Some(common.calib_samples),
                seed: common.seed,
                format: common.format.map(|f| f.name().to_string()),
                text_column: common.columns.text.clone(),
                text_pair_column: common.columns.pair.clone(),
            }
        }),
        eval: EvalSection {
            threads: common.threads,
            ..Default::default()
        },
        trainer: None,
        logging: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn ids_are_distinct_and_name_the_parts() {
        let c = Candidate {
            structure: Structure::Prune(0.6),
            quant: Some("static_ort"),
        };
        assert_eq!(c.id(), "p0.60+static_ort");
        assert_eq!(c.label(), "prune to 60% MACs + static_ort");
        assert_eq!(c.structural().id(), "p0.60");
        assert_eq!(Structure::Lowrank(0.8).id(), "lr0.80");
        assert!(Candidate {
            structure: Structure::None,
            quant: None
        }
        .is_baseline());
    }

    /// What every test candidate shares, with int8 weights stored as `weight_type`.
    fn common(weight_type: WeightType) -> Common {
        Common {
            model: "/m.onnx".into(),
            task: Some(Task::Sst2),
            format: None,
            columns: Columns::default(),
            labels: None,
            calib_data: "/t.tsv".into(),
            calib_samples: 8,
            seed: 0,
            max_length: 128,
            threads: 0,
            cuda: false,
            weight_type,
            max_ffn_fraction: None,
            unpad: true,
            dev: Dev::Split {
                dir: "/glue".into(),
                split: "dev".into(),
            },
        }
    }

    #[test]
    fn recipes_of_the_users_own_files_name_their_columns_and_labels() {
        let mut common = common(WeightType::S8);
        let c = Candidate {
            structure: Structure::Prune(0.6),
            quant: Some("static_ort"),
        };
        let glue = recipe(&c, &common);
        assert_eq!(glue.data.task.as_deref(), Some("sst2"));
        assert_eq!(
            (glue.data.dir.as_deref(), glue.data.split.as_str()),
            (Some(Path::new("/glue")), "dev")
        );
        assert_eq!((glue.data.file.as_ref(), glue.data.text_column.as_ref()), (None, None));

        common.task = None;
        common.format = Some(Format::Csv);
        common.columns = Columns {
            text: Some("review".into()),
            pair: None,
            label: Some("sentiment".into()),
            named_in: None,
        };
        common.labels = Some("neg,pos".into());
        common.calib_data = "/train.csv".into();
        common.dev = Dev::File("/dev.csv".into());
        let own = recipe(&c, &common);
        let d = &own.data;
        assert_eq!((d.task.as_ref(), d.dir.as_ref()), (None, None));
        assert_eq!(d.file.as_deref(), Some(Path::new("/dev.csv")));
        assert_eq!(d.format.as_deref(), Some("csv"));
        assert_eq!(d.text_column.as_deref(), Some("review"));
        assert_eq!(d.label_column.as_deref(), Some("sentiment"));
        assert_eq!(d.labels.as_deref(), Some("neg,pos"));
        let cal = own.calibration.as_ref().unwrap();
        assert_eq!(cal.text_column.as_deref(), Some("review"));
        // Written only where a step reads it.
        for (structure, quant, calibrates) in [
            (Structure::None, Some("dynamic_per_channel"), false),
            (Structure::None, Some("fp16"), false),
            (Structure::None, Some("static"), true),
            (Structure::Lowrank(0.8), None, true),
        ] {
            let r = recipe(&Candidate { structure, quant }, &common);
            assert_eq!(r.calibration.is_some(), calibrates, "{structure:?} {quant:?}");
        }
        assert_eq!(cal.format.as_deref(), Some("csv"));
        // It reads back as the recipe it is, with the file as what `run` evaluates on.
        let text = crate::recipe::to_yaml(&own);
        assert!(!text.contains("split:"), "{text}");
        let back = crate::recipe::parse(&text, Path::new("/w/r.yaml")).unwrap();
        assert_eq!(back.recipe, own);
        assert_eq!(back.task(), None);
        let source = back.data_file().unwrap();
        assert_eq!(source.path, Path::new("/dev.csv"));
        assert_eq!(source.columns, common.columns);
    }

    #[test]
    fn u8_weights_are_written_into_int8_recipes_only() {
        let mut common = common(WeightType::U8);
        let wt = |q: &'static str, common: &Common| {
            let c = Candidate {
                structure: Structure::Prune(0.6),
                quant: Some(q),
            };
            recipe(&c, common).quantization.weight_type
        };
        assert_eq!(wt("static_ort", &common).as_deref(), Some("u8"));
        assert_eq!(wt("fp16", &common), None);
        common.weight_type = WeightType::S8;
        assert_eq!(wt("dynamic_per_channel", &common), None);
    }

    #[test]
    fn the_ffn_share_is_written_into_pruning_recipes_only_when_given() {
        let mut common = common(WeightType::S8);
        let share = |structure: Structure, common: &Common| {
            let c = Candidate {
                structure,
                quant: Some("static_ort"),
            };
            recipe(&c, common).prune.max_ffn_fraction
        };
        assert_eq!(share(Structure::Prune(0.5), &common), None);
        common.max_ffn_fraction = Some(0.98);
        assert_eq!(share(Structure::Prune(0.5), &common), Some(0.98));
        assert_eq!(share(Structure::Lowrank(0.7), &common), None);
        assert_eq!(share(Structure::None, &common), None);
    }

    #[test]
    fn static_recipes_unpad_when_asked_and_no_other_does() {
        let mut common = common(WeightType::S8);
        let unpad = |structure: Structure, q: Option<&'static str>, common: &Common| {
            recipe(&Candidate { structure, quant: q }, common).quantization.unpad
        };
        for q in ["static", "static_ort"] {
            assert_eq!(unpad(Structure::Prune(0.6), Some(q), &common), Some(true), "{q}");
            assert_eq!(unpad(Structure::None, Some(q), &common), Some(true), "{q}");
        }
        for q in [Some("dynamic_per_channel"), Some("fp16"), None] {
            assert_eq!(unpad(Structure::Prune(0.6), q, &common), None, "{q:?}");
        }
        common.unpad = false;
        assert_eq!(unpad(Structure::Prune(0.6), Some("static_ort"), &common), None);
    }
}
