//! The new-run form's fields: one entry per `RunConfigInput` key, how each is
//! typed in, and the conversion of what was typed into the same JSON document
//! the API takes, so the form gets exactly the API's validation. What the user
//! typed is kept as typed, so a rejected form comes back unchanged with the
//! reason beside each bad field.

use std::collections::HashMap;

use maelab_core::config::{ConfigError, ConfigErrors, PRESET_NAMES, RunConfigInput};
use serde_json::{Map, Value};

/// How a field is typed in and turned into JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Text,
    Whole,
    Number,
    /// Comma-separated list.
    Tags,
    /// One of the listed values (the first, when empty, means "unset").
    Choice(&'static [&'static str]),
    Bool,
}

/// One form field.
pub struct Spec {
    pub name: &'static str,
    pub label: &'static str,
    pub ty: Ty,
    pub group: &'static str,
}

const fn f(name: &'static str, label: &'static str, ty: Ty, group: &'static str) -> Spec {
    Spec {
        name,
        label,
        ty,
        group,
    }
}

const G: &str = "Run";
const S: &str = "Model shape";
const O: &str = "Optimisation";
const P: &str = "Pretraining";
const F: &str = "Finetuning";

/// Every config field, in the order the form shows them.
pub const FIELDS: [Spec; 46] = [
    f("name", "Name", Ty::Text, G),
    f("kind", "Kind", Ty::Choice(&["pretrain", "finetune"]), G),
    f("model", "Model", Ty::Choice(&["mae", "wave_mae"]), G),
    f("preset", "Preset", Ty::Choice(&PRESET_NAMES), G),
    f("tags", "Tags (comma-separated)", Ty::Tags, G),
    f("dataset", "Dataset", Ty::Text, G),
    f("train_subset", "Train subset (images)", Ty::Whole, G),
    f("epoch_images", "Images per epoch (sampled)", Ty::Whole, G),
    f("test_subset", "Test subset (images)", Ty::Whole, G),
    f("seed", "Seed", Ty::Whole, G),
    f("precision", "Precision", Ty::Choice(&["fp32", "bf16"]), G),
    f("img_size", "Image size", Ty::Whole, S),
    f("patch_size", "Patch size", Ty::Whole, S),
    f("embed_dim", "Embedding dim", Ty::Whole, S),
    f("depth", "Depth", Ty::Whole, S),
    f("num_heads", "Heads", Ty::Whole, S),
    f("decoder_embed_dim", "Decoder dim", Ty::Whole, S),
    f("decoder_depth", "Decoder depth", Ty::Whole, S),
    f("decoder_num_heads", "Decoder heads", Ty::Whole, S),
    f("mlp_ratio", "MLP ratio", Ty::Number, S),
    f("num_classes", "Classes", Ty::Whole, S),
    f(
        "wave_in",
        "Wavelet attention in",
        Ty::Choice(&["", "encoder", "decoder", "both"]),
        S,
    ),
    f("wave_sr", "Wavelet K/V reduction", Ty::Whole, S),
    f("epochs", "Epochs", Ty::Whole, O),
    f("warmup_epochs", "Warm-up epochs", Ty::Number, O),
    f("batch_size", "Batch size", Ty::Whole, O),
    f("accum_iter", "Accumulation steps", Ty::Whole, O),
    f(
        "checkpoint_keep_every",
        "Keep every N-th checkpoint",
        Ty::Whole,
        O,
    ),
    f("blr", "Base lr (blr)", Ty::Number, O),
    f("lr", "Absolute lr (overrides blr)", Ty::Number, O),
    f("min_lr", "Min lr", Ty::Number, O),
    f("weight_decay", "Weight decay", Ty::Number, O),
    f("clip_grad", "Gradient clip", Ty::Number, O),
    f("layer_decay", "Layer decay", Ty::Number, O),
    f("mask_ratio", "Mask ratio", Ty::Number, P),
    f("norm_pix_loss", "Normalised pixel loss", Ty::Bool, P),
    f(
        "hf_loss_weight",
        "High-frequency loss weight",
        Ty::Number,
        P,
    ),
    f("parent_run", "Pretrain run to start from", Ty::Text, F),
    f("parent_epoch", "Checkpoint epoch", Ty::Whole, F),
    f("drop_path", "Drop path", Ty::Number, F),
    f("smoothing", "Label smoothing", Ty::Number, F),
    f("mixup", "Mixup", Ty::Number, F),
    f("cutmix", "CutMix", Ty::Number, F),
    f("mixup_prob", "Mixup probability", Ty::Number, F),
    f(
        "mixup_switch_prob",
        "Mixup switch probability",
        Ty::Number,
        F,
    ),
    f("reprob", "Random erase probability", Ty::Number, F),
];

/// The form's values, field name to text, as typed.
pub type Values = HashMap<String, String>;

/// A resolved or submitted input as form text (None becomes empty).
pub fn values_of(input: &RunConfigInput) -> Values {
    let Ok(Value::Object(map)) = serde_json::to_value(input) else {
        return Values::new();
    };
    map.into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::Null => String::new(),
                Value::String(s) => s,
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            (k, text)
        })
        .collect()
}

/// The submitted text as the API's JSON document, plus the fields whose text
/// is not even of the right type (those are left out of the document).
pub fn to_document(values: &Values) -> (Value, Vec<ConfigError>) {
    let mut doc = Map::new();
    let mut errors = Vec::new();
    for spec in &FIELDS {
        let text = values.get(spec.name).map_or("", |s| s.trim());
        if text.is_empty() {
            continue;
        }
        let value = match spec.ty {
            Ty::Text | Ty::Choice(_) => Ok(Value::String(text.to_string())),
            Ty::Whole => text
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| "must be a whole number, 0 or more"),
            Ty::Number => match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Value::from(x)),
                _ => Err("must be a number"),
            },
            Ty::Bool => match text {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err("must be true or false"),
            },
            Ty::Tags => Ok(Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| Value::String(t.to_string()))
                    .collect(),
            )),
        };
        match value {
            Ok(v) => {
                doc.insert(spec.name.to_string(), v);
            }
            Err(reason) => errors.push(ConfigError::new(spec.name, reason)),
        }
    }
    (Value::Object(doc), errors)
}

/// Field errors keyed by the form field they belong to (`tags[2]` → `tags`);
/// errors of no field (or of one the form lacks) are keyed by "".
pub fn errors_by_field(errors: &ConfigErrors) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for e in &errors.0 {
        let base = e.field.split(['[', '.']).next().unwrap_or("");
        let key = if FIELDS.iter().any(|s| s.name == base) {
            base
        } else {
            ""
        };
        let reason = if key.is_empty() && !e.field.is_empty() {
            format!("{}: {}", e.field, e.reason)
        } else {
            e.reason.clone()
        };
        out.entry(key.to_string())
            .and_modify(|r| {
                r.push_str("; ");
                r.push_str(&reason);
            })
            .or_insert(reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_has_every_config_field() {
        let Ok(Value::Object(keys)) = serde_json::to_value(RunConfigInput::default()) else {
            panic!("input is not an object");
        };
        for key in keys.keys() {
            assert!(FIELDS.iter().any(|s| s.name == key), "no form field {key}");
        }
        assert_eq!(keys.len(), FIELDS.len());
    }

    #[test]
    fn typed_text_becomes_the_api_document() {
        let values: Values = [
            ("epochs", "12"),
            ("blr", "1e-3"),
            ("tags", "a, b,,c"),
            ("batch_size", "lots"),
            ("norm_pix_loss", "false"),
            ("name", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (doc, errors) = to_document(&values);
        assert_eq!(
            doc,
            serde_json::json!({"epochs": 12, "blr": 0.001, "tags": ["a", "b", "c"],
                               "norm_pix_loss": false})
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "batch_size");
    }
}
