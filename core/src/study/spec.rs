//! The study document (TOML from the CLI, JSON from the API and the form) and
//! its expansion into chains (studies.md).
//!
//! ```toml
//! name = "wave-mae vs mae"
//! seeds = 3                      # or [0, 7, 9]
//! baseline = "mae"               # default: the first arm
//! [base]                         # a run config, minus what the study sets
//! preset = "vit-micro/4"
//! [finetune]                     # overrides of the finetune stage
//! blr = 1e-3
//! [budget]                       # epochs = N, or pretrain_seconds/finetune_seconds
//! pretrain_seconds = 600
//! finetune_seconds = 600
//! [arms.mae]
//! model = "mae"
//! [arms.wave-both]
//! model = "wave_mae"
//! wave_in = "both"
//! [arms.scratch]
//! scratch = true                 # a finetune from scratch, no pretraining
//! [grid]                         # optional: every combination becomes an arm
//! mask_ratio = [0.6, 0.75]
//! ```
//!
//! Expansion happens once, at submit: every chain's config is resolved with
//! the same [`RunConfig`] code a run goes through, and every error names
//! where it came from (`arms.wave-both.wave_in`, `budget.pretrain_seconds`),
//! so nothing is queued from a study that has one bad arm.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::config::{ConfigError, ConfigErrors, RunConfig, RunKind};

/// Runs a study may queue unless the server is configured otherwise.
pub const DEFAULT_MAX_RUNS: usize = 200;
/// Seeds per arm.
pub const MAX_SEEDS: usize = 100;
/// The longest seconds budget of one stage (30 days).
pub const MAX_STAGE_SECONDS: f64 = 30.0 * 24.0 * 3600.0;
/// Warm-up a study gives a run when nobody set `warmup_epochs`: MAE's 5
/// epochs, but never more than a tenth of the run (studies.md: defaults scale
/// with the budget, so `epochs = 1` is a valid study).
pub const DEFAULT_WARMUP_EPOCHS: f64 = 5.0;
const WARMUP_SHARE: f64 = 0.1;

/// Keys of a run config the study itself decides.
const STUDY_KEYS: [(&str, &str); 5] = [
    ("kind", "is set by the study's `stages`"),
    ("seed", "is set by the study's `seeds`"),
    ("name", "is set by the study (study / arm / seed / stage)"),
    (
        "parent_run",
        "is set by the chain: a finetune starts from its pretrain run",
    ),
    (
        "parent_epoch",
        "is set by the chain: a finetune starts from its pretrain's last checkpoint",
    ),
];

/// Which runs each chain has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stages {
    /// Pretrain, then finetune from its last checkpoint (the default).
    PretrainFinetune,
    /// Pretraining alone (reconstruction quality, PSNR, HF ratio).
    Pretrain,
    /// Finetuning alone, from scratch.
    Finetune,
}

impl Stages {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PretrainFinetune => "pretrain_finetune",
            Self::Pretrain => "pretrain",
            Self::Finetune => "finetune",
        }
    }
    pub fn has_pretrain(self) -> bool {
        matches!(self, Self::PretrainFinetune | Self::Pretrain)
    }
    pub fn has_finetune(self) -> bool {
        matches!(self, Self::PretrainFinetune | Self::Finetune)
    }
}

/// The submitted study.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub stages: Option<Stages>,
    /// The arm differences are taken against; default the first.
    #[serde(default)]
    pub baseline: Option<String>,
    /// A count (`3` means seeds 0, 1, 2) or a list of seeds.
    pub seeds: Value,
    /// The run config every arm starts from.
    #[serde(default)]
    pub base: Map<String, Value>,
    /// What the finetune stage changes (a study with both stages only).
    #[serde(default)]
    pub finetune: Option<Map<String, Value>>,
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
    /// Named overrides of the base, in the order given.
    #[serde(default)]
    pub arms: Arms,
    /// Fields with lists of values: each combination (with each arm) is an arm.
    #[serde(default)]
    pub grid: Arms,
}

/// Named tables in document order; a name given twice is refused (a JSON
/// object may repeat a key, and serde would keep only the last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arms(pub Vec<(String, Value)>);

impl Serialize for Arms {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Arms {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Arms;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of named entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Arms, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.iter().any(|(name, _)| *name == k) {
                        return Err(serde::de::Error::custom(format!("`{k}` is given twice")));
                    }
                    out.push((k, v));
                }
                Ok(Arms(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `[budget]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Epochs of every stage.
    pub epochs: Option<u32>,
    pub pretrain_epochs: Option<u32>,
    pub finetune_epochs: Option<u32>,
    /// Equal wall clock per arm: seconds of each stage on the calibrating worker.
    pub pretrain_seconds: Option<f64>,
    pub finetune_seconds: Option<f64>,
}

/// The budget after checking.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Budget {
    /// Each run trains the epochs its config says (the config's default).
    Config,
    /// Fixed epochs per stage.
    Epochs {
        pretrain: Option<u32>,
        finetune: Option<u32>,
    },
    /// Equal wall clock per arm, turned into epochs by calibration.
    Seconds {
        pretrain: Option<f64>,
        finetune: Option<f64>,
    },
}

impl Budget {
    pub fn is_seconds(&self) -> bool {
        matches!(self, Self::Seconds { .. })
    }

    /// Epochs the budget fixes for a run of `kind` (a from-scratch run of a
    /// two-stage study gets the finetune stage's). None: the config decides,
    /// or calibration will.
    fn epochs(&self, kind: RunKind) -> Option<u32> {
        match (self, kind) {
            (Self::Epochs { pretrain, .. }, RunKind::Pretrain) => *pretrain,
            (Self::Epochs { finetune, .. }, RunKind::Finetune) => *finetune,
            _ => None,
        }
    }

    /// Seconds a run of `kind` may train; a from-scratch arm of a two-stage
    /// study gets both stages' seconds, so it has the same wall clock.
    pub fn seconds(&self, kind: RunKind, scratch_in_chain: bool) -> Option<f64> {
        match (self, kind) {
            (Self::Seconds { pretrain, .. }, RunKind::Pretrain) => *pretrain,
            (Self::Seconds { pretrain, finetune }, RunKind::Finetune) if scratch_in_chain => {
                Some(pretrain.unwrap_or(0.0) + finetune.unwrap_or(0.0))
            }
            (Self::Seconds { finetune, .. }, RunKind::Finetune) => *finetune,
            _ => None,
        }
    }
}

/// What a seconds budget buys one stage: whole epochs, each a fresh sample
/// of `epoch_images` training images (None: the whole split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSize {
    pub epochs: u32,
    pub epoch_images: Option<u32>,
}

/// One arm after grid expansion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arm {
    pub name: String,
    /// The fields it sets over the base (grid values included).
    pub overrides: Map<String, Value>,
    /// A finetune from scratch in a two-stage study.
    pub scratch: bool,
}

/// One arm and seed: the runs it will queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub arm: String,
    pub seed: u64,
    pub pretrain: Option<RunConfig>,
    pub finetune: Option<RunConfig>,
}

impl Chain {
    pub fn runs(&self) -> usize {
        usize::from(self.pretrain.is_some()) + usize::from(self.finetune.is_some())
    }
}

/// A checked, expanded study: what is stored at submit.
#[derive(Debug, Clone)]
pub struct ExpandedStudy {
    pub spec: StudySpec,
    pub stages: Stages,
    pub baseline: String,
    pub budget: Budget,
    pub arms: Vec<Arm>,
    pub seeds: Vec<u64>,
    pub chains: Vec<Chain>,
}

impl ExpandedStudy {
    pub fn run_count(&self) -> usize {
        self.chains.iter().map(Chain::runs).sum()
    }

    pub fn arm(&self, name: &str) -> Option<&Arm> {
        self.arms.iter().find(|a| a.name == name)
    }
}

/// Arm names are short, URL- and CSV-safe.
pub fn valid_arm_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    first_ok
        && name.len() <= 100
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.=,+-".contains(c))
}

impl StudySpec {
    /// Parse a TOML document (the CLI's `study.toml`).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigErrors> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            ConfigErrors::one(
                clean(&e.path().to_string()),
                e.inner().message().to_string(),
            )
        })
    }

    /// Parse a JSON text (the API's body): arms keep their order and an arm
    /// named twice is refused, which a parsed `Value` could no longer show.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigErrors> {
        let mut de = serde_json::Deserializer::from_str(text);
        let spec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let msg = e.inner().to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            ConfigErrors::one(clean(&e.path().to_string()), msg)
        })?;
        de.end()
            .map_err(|e| ConfigErrors::one("", format!("not valid JSON: {e}")))?;
        Ok(spec)
    }

    /// Parse a JSON value (a stored study; its arms' order is in `study_arm`).
    pub fn from_json_value(value: Value) -> Result<Self, ConfigErrors> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let msg = e.inner().to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            ConfigErrors::one(clean(&e.path().to_string()), msg)
        })
    }

    /// Check everything and expand into chains, reporting every problem at
    /// once; `max_runs` bounds the runs it may queue.
    pub fn expand(&self, max_runs: usize) -> Result<ExpandedStudy, ConfigErrors> {
        let mut errs: Vec<ConfigError> = Vec::new();
        let stages = self.stages.unwrap_or(Stages::PretrainFinetune);
        check_name(&self.name, &mut errs);
        let seeds = parse_seeds(&self.seeds, &mut errs);
        let budget = parse_budget(self.budget.as_ref(), stages, &mut errs);
        if let Some(ft) = &self.finetune
            && stages != Stages::PretrainFinetune
        {
            let _ = ft;
            errs.push(ConfigError::new(
                "finetune",
                format!(
                    "a `{}` study has one stage; put its fields in `base` (finetune overrides are for a study with both stages)",
                    stages.as_str()
                ),
            ));
        }
        check_reserved("base", &self.base, budget, &mut errs);
        if let Some(ft) = &self.finetune {
            check_reserved("finetune", ft, budget, &mut errs);
        }
        let arms = expand_arms(self, stages, budget, &mut errs);
        let baseline = match &self.baseline {
            Some(b) if arms.iter().any(|a| a.name == *b) => b.clone(),
            Some(b) => {
                let names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
                errs.push(ConfigError::new(
                    "baseline",
                    format!("`{b}` is not an arm; the arms are {}", names.join(", ")),
                ));
                String::new()
            }
            None => arms.first().map(|a| a.name.clone()).unwrap_or_default(),
        };
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let runs_per_chain = |arm: &Arm| match stages {
            Stages::PretrainFinetune if !arm.scratch => 2,
            _ => 1,
        };
        let total: usize = arms.iter().map(runs_per_chain).sum::<usize>() * seeds.len();
        if total > max_runs {
            return Err(ConfigErrors::one(
                "seeds",
                format!(
                    "the study would queue {total} runs ({} arms x {} seeds); at most {max_runs}",
                    arms.len(),
                    seeds.len()
                ),
            ));
        }
        // Seeds differ only in `seed`: check every arm with its first seed
        // and report each bad arm once, then expand them all.
        for arm in &arms {
            if let Err(e) = self.chain(stages, budget, arm, seeds[0], None) {
                errs.extend(e.0);
            }
        }
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let mut chains = Vec::with_capacity(arms.len() * seeds.len());
        for arm in &arms {
            for &seed in &seeds {
                chains.push(self.chain(stages, budget, arm, seed, None)?);
            }
        }
        Ok(ExpandedStudy {
            spec: self.clone(),
            stages,
            baseline,
            budget,
            arms,
            seeds,
            chains,
        })
    }

    /// The configs of one chain. `calibrated` gives what a seconds budget
    /// came to (pretrain, finetune); without it such a budget gets a
    /// placeholder of one epoch, which validates the config but trains nothing.
    pub fn chain(
        &self,
        stages: Stages,
        budget: Budget,
        arm: &Arm,
        seed: u64,
        calibrated: Option<(Option<StageSize>, Option<StageSize>)>,
    ) -> Result<Chain, ConfigErrors> {
        let mut errs = Vec::new();
        let pretrain_stage = stages.has_pretrain() && !arm.scratch;
        let finetune_stage = stages.has_finetune() || arm.scratch;
        let mut resolve = |kind: RunKind, size: Option<StageSize>| match self
            .stage_config(arm, seed, kind, budget, size)
        {
            Ok(c) => Some(c),
            Err(e) => {
                errs.extend(e.0);
                None
            }
        };
        let (cal_pre, cal_ft) = calibrated.unwrap_or((None, None));
        let pretrain = if pretrain_stage {
            resolve(RunKind::Pretrain, cal_pre)
        } else {
            None
        };
        let finetune = if finetune_stage {
            resolve(RunKind::Finetune, cal_ft)
        } else {
            None
        };
        if errs.is_empty() {
            Ok(Chain {
                arm: arm.name.clone(),
                seed,
                pretrain,
                finetune,
            })
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// Resolve the run of `kind` for `arm` and `seed`: base, then the arm,
    /// then (finetune) the finetune overrides; the study sets kind, seed,
    /// name, epochs (budget) and a warm-up scaled to them when none was given.
    fn stage_config(
        &self,
        arm: &Arm,
        seed: u64,
        kind: RunKind,
        budget: Budget,
        calibrated: Option<StageSize>,
    ) -> Result<RunConfig, ConfigErrors> {
        // Where each key came from, to name it in errors.
        let mut origin: Vec<(String, String)> = Vec::new();
        let mut map = Map::new();
        let mut put = |from: String, m: &Map<String, Value>| {
            for (k, v) in m {
                if k == "scratch" {
                    continue;
                }
                map.insert(k.clone(), v.clone());
                origin.retain(|(key, _)| key != k);
                origin.push((k.clone(), from.clone()));
            }
        };
        put("base".into(), &self.base);
        put(format!("arms.{}", arm.name), &arm.overrides);
        if kind == RunKind::Finetune
            && let Some(ft) = &self.finetune
        {
            put("finetune".into(), ft);
        }
        if let Some(n) = calibrated.and_then(|s| s.epoch_images) {
            map.insert("epoch_images".into(), Value::from(n));
            origin.push(("epoch_images".into(), "budget".into()));
        }
        let epochs = calibrated
            .map(|s| s.epochs)
            .or(budget.epochs(kind))
            .or(budget.is_seconds().then_some(1));
        if let Some(e) = epochs {
            map.insert("epochs".into(), Value::from(e));
            origin.push(("epochs".into(), "budget".into()));
        }
        if !map.contains_key("warmup_epochs") {
            let run_epochs = map
                .get("epochs")
                .and_then(Value::as_u64)
                .unwrap_or(if kind == RunKind::Pretrain { 100 } else { 50 });
            let warmup = DEFAULT_WARMUP_EPOCHS.min(WARMUP_SHARE * run_epochs as f64);
            map.insert("warmup_epochs".into(), Value::from(warmup));
        }
        map.insert("kind".into(), Value::from(kind.as_str()));
        map.insert("seed".into(), Value::from(seed));
        let name = truncate(
            &format!(
                "{} / {} / seed {seed} / {}",
                self.name,
                arm.name,
                kind.as_str()
            ),
            200,
        );
        map.insert("name".into(), Value::from(name));
        RunConfig::from_json_value(Value::Object(map)).map_err(|e| {
            ConfigErrors(
                e.0.into_iter()
                    .map(|err| {
                        let top = err
                            .field
                            .split(['.', '['])
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let from = origin
                            .iter()
                            .find(|(k, _)| *k == top)
                            .map(|(_, f)| f.clone())
                            .unwrap_or_else(|| format!("arms.{}", arm.name));
                        let field = if err.field.is_empty() {
                            from
                        } else {
                            format!("{from}.{}", err.field)
                        };
                        ConfigError::new(field, format!("{} ({} run)", err.reason, kind.as_str()))
                    })
                    .collect(),
            )
        })
    }
}

fn clean(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        path.to_string()
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

fn check_name(name: &str, errs: &mut Vec<ConfigError>) {
    let n = name.chars().count();
    if name.trim().is_empty() {
        errs.push(ConfigError::new("name", "must not be empty"));
    } else if n > 150 {
        errs.push(ConfigError::new(
            "name",
            format!("is {n} characters; at most 150"),
        ));
    } else if name.chars().any(char::is_control) {
        errs.push(ConfigError::new(
            "name",
            "must not contain control characters",
        ));
    }
}

fn parse_seeds(value: &Value, errs: &mut Vec<ConfigError>) -> Vec<u64> {
    let bad = |errs: &mut Vec<ConfigError>, reason: String| {
        errs.push(ConfigError::new("seeds", reason));
        Vec::new()
    };
    let seeds: Vec<u64> = match value {
        Value::Number(n) => match n.as_u64() {
            Some(0) => return bad(errs, "must be at least 1".into()),
            Some(k) if k as usize > MAX_SEEDS => {
                return bad(errs, format!("{k} seeds; at most {MAX_SEEDS}"));
            }
            Some(k) => (0..k).collect(),
            None => return bad(errs, format!("{n} is not a count of seeds")),
        },
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_u64() {
                    Some(s) if s <= i64::MAX as u64 => out.push(s),
                    _ => {
                        errs.push(ConfigError::new(
                            format!("seeds[{i}]"),
                            format!("{item} is not a seed (a whole number from 0)"),
                        ));
                        return Vec::new();
                    }
                }
            }
            if out.is_empty() {
                return bad(errs, "must list at least one seed".into());
            }
            if out.len() > MAX_SEEDS {
                return bad(errs, format!("{} seeds; at most {MAX_SEEDS}", out.len()));
            }
            let mut sorted = out.clone();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return bad(errs, format!("seed {} is given twice", w[0]));
            }
            out
        }
        Value::Null => {
            return bad(
                errs,
                "is required: a count (3) or a list ([0, 1, 2])".into(),
            );
        }
        other => {
            return bad(
                errs,
                format!("{other} is neither a count nor a list of seeds"),
            );
        }
    };
    seeds
}

fn parse_budget(spec: Option<&BudgetSpec>, stages: Stages, errs: &mut Vec<ConfigError>) -> Budget {
    let Some(b) = spec else {
        return Budget::Config;
    };
    let epochs_given =
        b.epochs.is_some() || b.pretrain_epochs.is_some() || b.finetune_epochs.is_some();
    let seconds_given = b.pretrain_seconds.is_some() || b.finetune_seconds.is_some();
    if epochs_given && seconds_given {
        errs.push(ConfigError::new(
            "budget",
            "give epochs or seconds, not both: a budget is either fixed epochs or equal wall clock",
        ));
        return Budget::Config;
    }
    let stage_key = |key: &str, wants_pretrain: bool, errs: &mut Vec<ConfigError>| {
        let has = if wants_pretrain {
            stages.has_pretrain()
        } else {
            stages.has_finetune()
        };
        if !has {
            errs.push(ConfigError::new(
                format!("budget.{key}"),
                format!(
                    "a `{}` study has no {} stage",
                    stages.as_str(),
                    if wants_pretrain {
                        "pretrain"
                    } else {
                        "finetune"
                    }
                ),
            ));
        }
    };
    if seconds_given {
        let check = |key: &str,
                     v: Option<f64>,
                     pretrain: bool,
                     errs: &mut Vec<ConfigError>|
         -> Option<f64> {
            let needed = if pretrain {
                stages.has_pretrain()
            } else {
                stages.has_finetune()
            };
            match v {
                None if needed => {
                    errs.push(ConfigError::new(
                        format!("budget.{key}"),
                        format!(
                            "is required with a seconds budget: the study has a {} stage",
                            if pretrain { "pretrain" } else { "finetune" }
                        ),
                    ));
                    None
                }
                None => None,
                Some(s) => {
                    stage_key(key, pretrain, errs);
                    if !(s.is_finite() && s > 0.0 && s <= MAX_STAGE_SECONDS) {
                        errs.push(ConfigError::new(
                            format!("budget.{key}"),
                            format!(
                                "{s} must be above 0 and at most {MAX_STAGE_SECONDS} (30 days)"
                            ),
                        ));
                    }
                    Some(s)
                }
            }
        };
        let pretrain = check("pretrain_seconds", b.pretrain_seconds, true, errs);
        let finetune = check("finetune_seconds", b.finetune_seconds, false, errs);
        return Budget::Seconds { pretrain, finetune };
    }
    if !epochs_given {
        return Budget::Config;
    }
    let pick = |key: &str, specific: Option<u32>, pretrain: bool, errs: &mut Vec<ConfigError>| {
        if specific.is_some() {
            stage_key(key, pretrain, errs);
            if b.epochs.is_some() {
                errs.push(ConfigError::new(
                    format!("budget.{key}"),
                    "conflicts with budget.epochs; give one of them",
                ));
            }
        }
        let e = specific.or(b.epochs)?;
        if e == 0 || e > 100_000 {
            errs.push(ConfigError::new(
                format!("budget.{}", if specific.is_some() { key } else { "epochs" }),
                format!("{e} is out of range; expected 1 to 100000"),
            ));
        }
        Some(e)
    };
    let pretrain = pick("pretrain_epochs", b.pretrain_epochs, true, errs);
    let finetune = pick("finetune_epochs", b.finetune_epochs, false, errs);
    Budget::Epochs { pretrain, finetune }
}

/// Keys the study sets are refused in the user's tables, so a value is never
/// silently overwritten.
fn check_reserved(
    table: &str,
    map: &Map<String, Value>,
    budget: Budget,
    errs: &mut Vec<ConfigError>,
) {
    for (key, why) in STUDY_KEYS {
        if map.contains_key(key) {
            errs.push(ConfigError::new(format!("{table}.{key}"), why));
        }
    }
    if map.contains_key("epochs") && !matches!(budget, Budget::Config) {
        errs.push(ConfigError::new(
            format!("{table}.epochs"),
            "is set by the study's budget",
        ));
    }
    if map.contains_key("epoch_images") && budget.is_seconds() {
        errs.push(ConfigError::new(
            format!("{table}.epoch_images"),
            "is set by the study's seconds budget",
        ));
    }
}

fn expand_arms(
    spec: &StudySpec,
    stages: Stages,
    budget: Budget,
    errs: &mut Vec<ConfigError>,
) -> Vec<Arm> {
    let mut explicit: Vec<Arm> = Vec::new();
    for (name, value) in &spec.arms.0 {
        let field = format!("arms.{name}");
        if !valid_arm_name(name) {
            errs.push(ConfigError::new(
                field.clone(),
                "an arm name is 1-100 letters, digits and _ . = , + - (starting with a letter or digit)",
            ));
            continue;
        }
        let Value::Object(map) = value else {
            errs.push(ConfigError::new(
                field,
                "must be a table of run config fields",
            ));
            continue;
        };
        let scratch = match map.get("scratch") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                errs.push(ConfigError::new(
                    format!("{field}.scratch"),
                    format!("{other} is not true or false"),
                ));
                false
            }
        };
        if scratch && stages != Stages::PretrainFinetune {
            errs.push(ConfigError::new(
                format!("{field}.scratch"),
                format!(
                    "is for a study with both stages; a `{}` study has one stage already",
                    stages.as_str()
                ),
            ));
        }
        check_reserved(&field, map, budget, errs);
        let mut overrides = map.clone();
        overrides.remove("scratch");
        explicit.push(Arm {
            name: name.clone(),
            overrides,
            scratch,
        });
    }
    // The grid: every combination of its lists, applied to each arm.
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (key, values) in &spec.grid.0 {
        let field = format!("grid.{key}");
        let Value::Array(list) = values else {
            errs.push(ConfigError::new(field, "must be a list of values"));
            continue;
        };
        if list.is_empty() {
            errs.push(ConfigError::new(field, "must list at least one value"));
            continue;
        }
        if STUDY_KEYS.iter().any(|(k, _)| k == key) || key == "scratch" {
            errs.push(ConfigError::new(field, "is set by the study, not a grid"));
            continue;
        }
        combos = combos
            .into_iter()
            .flat_map(|c| {
                list.iter().map(move |v| {
                    let mut next = c.clone();
                    next.push((key.clone(), v.clone()));
                    next
                })
            })
            .collect();
        if combos.len() > 10_000 {
            errs.push(ConfigError::new(
                "grid",
                "expands to over 10000 combinations",
            ));
            return Vec::new();
        }
    }
    let bases: Vec<Arm> = if explicit.is_empty() {
        if spec.grid.0.is_empty() {
            errs.push(ConfigError::new(
                "arms",
                "must name at least one arm (or give a grid)",
            ));
            return Vec::new();
        }
        vec![Arm {
            name: String::new(),
            overrides: Map::new(),
            scratch: false,
        }]
    } else {
        explicit
    };
    let mut arms = Vec::new();
    for base in bases {
        for combo in &combos {
            let mut arm = base.clone();
            let mut parts = Vec::new();
            for (key, value) in combo {
                if arm.overrides.contains_key(key) {
                    errs.push(ConfigError::new(
                        format!("grid.{key}"),
                        format!("is also set by arm `{}`; set it in one place", base.name),
                    ));
                    continue;
                }
                arm.overrides.insert(key.clone(), value.clone());
                let shown = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                parts.push(format!("{key}={shown}"));
            }
            if !parts.is_empty() {
                let suffix = parts.join(",");
                arm.name = if arm.name.is_empty() {
                    suffix
                } else {
                    format!("{}+{suffix}", arm.name)
                };
                if !valid_arm_name(&arm.name) {
                    errs.push(ConfigError::new(
                        "grid",
                        format!(
                            "gives the arm name `{}`, which is not 1-100 letters, digits and _ . = , + -; use shorter values",
                            arm.name
                        ),
                    ));
                    continue;
                }
            }
            if arms.iter().any(|a: &Arm| a.name == arm.name) {
                errs.push(ConfigError::new(
                    format!("arms.{}", arm.name),
                    "two arms have this name",
                ));
                continue;
            }
            arms.push(arm);
        }
    }
    arms
}

/// A seconds budget in images, epochs and images per epoch:
/// `images = seconds x images/s`; `epochs = ceil(images / train_images)`, at
/// least one; each epoch a fresh random sample of `images / epochs` training
/// images (at least one batch, never more than the split, since epochs round
/// up). So a run sees the images its seconds buy (up to a batch per epoch,
/// which drop_last leaves out), while whole epochs keep the schedule and the
/// per-epoch rows a run has. Rounding epochs to the nearest instead would
/// cap a 1.4-epoch budget at one epoch and lose 30% of it.
pub fn seconds_to_size(
    seconds: f64,
    images_per_second: f64,
    train_images: u64,
    batch_size: u32,
) -> (u64, StageSize) {
    let images = (seconds * images_per_second).max(0.0).floor() as u64;
    let train = train_images.max(1);
    let epochs = images.div_ceil(train).clamp(1, 100_000);
    let per_epoch = (images / epochs).clamp(u64::from(batch_size.max(1)).min(train), train);
    let epoch_images = (per_epoch < train).then(|| u32::try_from(per_epoch).unwrap_or(u32::MAX));
    (
        images,
        StageSize {
            epochs: epochs as u32,
            epoch_images,
        },
    )
}
