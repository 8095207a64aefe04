//! Study documents: expansion into chains with resolved configs, the budget,
//! and every bad input named by its field with nothing expanded.

use maelab_core::config::{ModelKind, RunKind, WaveIn};
use maelab_core::study::spec::{self, Budget, StageSize, Stages, StudySpec, seconds_to_size};

fn spec(text: &str) -> StudySpec {
    StudySpec::from_toml_str(text).expect("parses")
}

const THREE_ARMS: &str = r#"
name = "wave"
seeds = 3
baseline = "mae"
[base]
preset = "vit-micro/4"
train_subset = 256
[finetune]
blr = 2e-3
[budget]
pretrain_epochs = 2
finetune_epochs = 3
[arms.mae]
model = "mae"
[arms.wave-both]
model = "wave_mae"
wave_in = "both"
[arms.scratch]
scratch = true
"#;

#[test]
fn arms_times_seeds_expand_into_chains_with_resolved_configs() {
    let study = spec(THREE_ARMS).expand(200).expect("valid");
    assert_eq!(study.stages, Stages::PretrainFinetune);
    assert_eq!(study.baseline, "mae");
    let names: Vec<&str> = study.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["mae", "wave-both", "scratch"],
        "document order kept"
    );
    assert_eq!(study.chains.len(), 9);
    // Two runs per chain, one for the scratch arm.
    assert_eq!(study.run_count(), 3 * 2 + 3 * 2 + 3);

    let wave = study
        .chains
        .iter()
        .find(|c| c.arm == "wave-both" && c.seed == 2)
        .expect("chain");
    let pre = wave.pretrain.as_ref().expect("pretrain stage");
    let ft = wave.finetune.as_ref().expect("finetune stage");
    assert_eq!(
        (pre.kind, pre.model, pre.wave_in),
        (RunKind::Pretrain, ModelKind::WaveMae, Some(WaveIn::Both))
    );
    assert_eq!(
        (ft.kind, ft.model, ft.wave_in),
        (RunKind::Finetune, ModelKind::WaveMae, Some(WaveIn::Both))
    );
    assert_eq!((pre.seed, ft.seed), (2, 2));
    assert_eq!((pre.epochs, ft.epochs), (2, 3), "the budget's epochs");
    assert_eq!(pre.train_subset, Some(256), "base fields reach every stage");
    assert_eq!(ft.blr, 2e-3, "finetune overrides reach only the finetune");
    assert_eq!(pre.blr, 1.5e-4);
    assert!(
        ft.parent_run.is_none(),
        "the parent is set when the pretrain succeeds"
    );
    assert!(pre.name.contains("wave-both") && pre.name.contains("seed 2"));
    // Warm-up nobody set scales with the budget: a tenth of 2 and 3 epochs.
    assert!((pre.warmup_epochs - 0.2).abs() < 1e-12);
    assert!((ft.warmup_epochs - 0.3).abs() < 1e-12);

    let scratch = study
        .chains
        .iter()
        .find(|c| c.arm == "scratch")
        .expect("chain");
    assert!(scratch.pretrain.is_none());
    let only = scratch.finetune.as_ref().expect("a finetune from scratch");
    assert_eq!(only.epochs, 3);
}

#[test]
fn a_one_epoch_budget_holds_because_unset_defaults_scale() {
    let study = spec("name = 's'\nseeds = 1\n[budget]\nepochs = 1\n[arms.a]\nmodel = 'mae'\n")
        .expand(200)
        .expect("epochs = 1 with the default warm-up of 5 must not be refused");
    let pre = study.chains[0].pretrain.as_ref().expect("pretrain");
    assert_eq!(pre.epochs, 1);
    assert!(pre.warmup_epochs <= 1.0);
    // A warm-up the user did set is checked as for a run.
    let err = spec("name = 's'\nseeds = 1\n[budget]\nepochs = 1\n[arms.a]\nwarmup_epochs = 5\n")
        .expand(200)
        .expect_err("5 warm-up epochs of 1");
    assert!(
        err.0.iter().any(|e| e.field == "arms.a.warmup_epochs"),
        "{err}"
    );
}

#[test]
fn a_grid_expands_into_named_arms() {
    let study = spec(
        "name = 'g'\nseeds = [0, 7]\nstages = 'pretrain'\n[grid]\nmodel = ['mae', 'wave_mae']\nmask_ratio = [0.5, 0.75]\n",
    )
    .expand(200)
    .expect("valid");
    let names: Vec<&str> = study.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model=mae,mask_ratio=0.5",
            "model=mae,mask_ratio=0.75",
            "model=wave_mae,mask_ratio=0.5",
            "model=wave_mae,mask_ratio=0.75"
        ]
    );
    assert_eq!(study.seeds, [0, 7]);
    assert_eq!(study.run_count(), 8, "pretrain only: one run per chain");
    let c = study
        .chains
        .iter()
        .find(|c| c.arm == "model=wave_mae,mask_ratio=0.5" && c.seed == 7)
        .expect("chain");
    let p = c.pretrain.as_ref().expect("pretrain");
    assert_eq!(
        (p.model, p.mask_ratio, p.seed),
        (ModelKind::WaveMae, 0.5, 7)
    );
    assert!(c.finetune.is_none());
    // A grid applies to each named arm too.
    let study =
        spec("name = 'g'\nseeds = 1\n[arms.mae]\nmodel = 'mae'\n[grid]\nmask_ratio = [0.6, 0.9]\n")
            .expand(200)
            .expect("valid");
    let names: Vec<&str> = study.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["mae+mask_ratio=0.6", "mae+mask_ratio=0.9"]);
}

#[test]
fn a_seconds_budget_is_calibrated_later_and_converts_to_epochs() {
    let study = spec(
        "name = 's'\nseeds = 2\n[budget]\npretrain_seconds = 600\nfinetune_seconds = 300\n[arms.mae]\nmodel = 'mae'\n[arms.scratch]\nscratch = true\n",
    )
    .expand(200)
    .expect("valid");
    assert_eq!(
        study.budget,
        Budget::Seconds {
            pretrain: Some(600.0),
            finetune: Some(300.0)
        }
    );
    // The scratch arm trains as long as pretrain + finetune together.
    assert_eq!(study.budget.seconds(RunKind::Finetune, true), Some(900.0));
    assert_eq!(study.budget.seconds(RunKind::Finetune, false), Some(300.0));
    // Placeholders validate, and calibration gives the real epochs.
    let arm = study.arm("mae").expect("arm").clone();
    let chain = study
        .spec
        .chain(
            study.stages,
            study.budget,
            &arm,
            1,
            Some((
                Some(StageSize {
                    epochs: 7,
                    epoch_images: Some(30_000),
                }),
                Some(StageSize {
                    epochs: 4,
                    epoch_images: None,
                }),
            )),
        )
        .expect("valid");
    let pre = chain.pretrain.as_ref().expect("pre");
    let ft = chain.finetune.as_ref().expect("ft");
    assert_eq!((pre.epochs, pre.epoch_images), (7, Some(30_000)));
    assert_eq!((ft.epochs, ft.epoch_images), (4, None));
    assert!((pre.warmup_epochs - 0.7).abs() < 1e-12);

    let size = |epochs, epoch_images| StageSize {
        epochs,
        epoch_images,
    };
    // 600 s at 130 images/s over 50,000 images: 78,000 images = 2 epochs of 39,000.
    assert_eq!(
        seconds_to_size(600.0, 130.0, 50_000, 128),
        (78_000, size(2, Some(39_000)))
    );
    // A slower arm sees fewer images: 600 s at 40/s is 24,000, one epoch's sample.
    assert_eq!(
        seconds_to_size(600.0, 40.0, 50_000, 128),
        (24_000, size(1, Some(24_000)))
    );
    // 1.1 epochs' worth is two epochs of 27,664, not one capped at the split.
    assert_eq!(
        seconds_to_size(150.0, 368.86, 50_000, 128),
        (55_329, size(2, Some(27_664)))
    );
    // Whole epochs when the budget buys them exactly.
    assert_eq!(
        seconds_to_size(10.0, 100.0, 250, 32),
        (1_000, size(4, None))
    );
    // Never less than a batch per epoch.
    assert_eq!(
        seconds_to_size(0.1, 10.0, 1_000, 32),
        (1, size(1, Some(32)))
    );
}

/// The fields a bad study is refused with (nothing is expanded).
fn refused(text: &str, max_runs: usize) -> Vec<String> {
    let err = spec(text).expand(max_runs).expect_err("refused");
    err.0
        .into_iter()
        .map(|e| format!("{}: {}", e.field, e.reason))
        .collect()
}

fn has(errors: &[String], field: &str) -> bool {
    errors.iter().any(|e| e.starts_with(&format!("{field}: ")))
}

#[test]
fn bad_studies_are_refused_naming_the_arm_and_field() {
    let e = refused(
        "name = 's'\nseeds = 1\n[arms.a]\nmodel = 'mae'\nmask_ratoi = 0.5\n",
        200,
    );
    assert!(has(&e, "arms.a.mask_ratoi"), "unknown field: {e:?}");
    let e = refused(
        "name = 's'\nseeds = 3\n[arms.a]\nmask_ratio = 1.5\n[arms.b]\nmask_ratio = 2.5\n",
        200,
    );
    assert!(
        has(&e, "arms.a.mask_ratio") && has(&e, "arms.b.mask_ratio"),
        "bad value: {e:?}"
    );
    assert_eq!(
        e.len(),
        4,
        "each bad arm once (both stages), not once per seed: {e:?}"
    );
    let e = refused(
        "name = 's'\nseeds = 1\n[base]\nmask_ratio = 1.5\n[arms.a]\nmodel = 'mae'\n",
        200,
    );
    assert!(
        has(&e, "base.mask_ratio"),
        "a base error names the base: {e:?}"
    );
    let e = refused("name = 's'\nseeds = 1\n", 200);
    assert!(has(&e, "arms"), "no arms: {e:?}");
    let e = refused("name = 's'\nseeds = 0\n[arms.a]\nmodel = 'mae'\n", 200);
    assert!(has(&e, "seeds"), "0 seeds: {e:?}");
    let e = refused("name = 's'\nseeds = []\n[arms.a]\nmodel = 'mae'\n", 200);
    assert!(has(&e, "seeds"), "empty seed list: {e:?}");
    let e = refused("name = 's'\nseeds = [1, 1]\n[arms.a]\nmodel = 'mae'\n", 200);
    assert!(has(&e, "seeds"), "a seed twice: {e:?}");
    let e = refused(
        "name = 's'\nseeds = 1\n[budget]\npretrain_seconds = 0\nfinetune_seconds = 10\n[arms.a]\nmodel = 'mae'\n",
        200,
    );
    assert!(has(&e, "budget.pretrain_seconds"), "0 seconds: {e:?}");
    let e = refused(
        "name = 's'\nseeds = 1\n[budget]\npretrain_seconds = 10\n[arms.a]\nmodel = 'mae'\n",
        200,
    );
    assert!(
        has(&e, "budget.finetune_seconds"),
        "a stage without seconds: {e:?}"
    );
    let e = refused(
        "name = 's'\nseeds = 1\n[budget]\nepochs = 2\npretrain_seconds = 10\n[arms.a]\nmodel = 'mae'\n",
        200,
    );
    assert!(has(&e, "budget"), "epochs and seconds: {e:?}");
    let e = refused(
        "name = 's'\nseeds = 1\nstages = 'finetune'\n[finetune]\nblr = 1e-3\n[arms.a]\nmodel = 'mae'\n",
        200,
    );
    assert!(
        has(&e, "finetune"),
        "a finetune stage on a finetune-only study: {e:?}"
    );
    let e = refused(
        "name = 's'\nseeds = 1\nstages = 'finetune'\n[budget]\npretrain_epochs = 2\n[arms.a]\nmodel = 'mae'\n",
        200,
    );
    assert!(has(&e, "budget.pretrain_epochs"), "{e:?}");
    let e = refused(
        "name = 's'\nseeds = 1\n[budget]\nepochs = 2\n[arms.a]\nepochs = 5\n",
        200,
    );
    assert!(has(&e, "arms.a.epochs"), "epochs set by the budget: {e:?}");
    let e = refused("name = 's'\nseeds = 1\n[arms.a]\nseed = 5\n", 200);
    assert!(has(&e, "arms.a.seed"), "{e:?}");
    let e = refused(
        "name = 's'\nseeds = 1\nbaseline = 'b'\n[arms.a]\nmodel = 'mae'\n",
        200,
    );
    assert!(has(&e, "baseline"), "unknown baseline: {e:?}");
    let e = refused("name = 's'\nseeds = 1\n[arms.'a b']\nmodel = 'mae'\n", 200);
    assert!(has(&e, "arms.a b"), "bad arm name: {e:?}");
    let e = refused(
        "name = 's'\nseeds = 1\n[arms.a]\nmask_ratio = 0.5\n[grid]\nmask_ratio = [0.6]\n",
        200,
    );
    assert!(has(&e, "grid.mask_ratio"), "set twice: {e:?}");
    let e = refused(
        "name = 's'\nseeds = 1\nstages = 'pretrain'\n[arms.a]\nscratch = true\n",
        200,
    );
    assert!(has(&e, "arms.a.scratch"), "{e:?}");
    // Over the run limit: 3 arms x 10 seeds x 2 stages = 60.
    let e = refused(
        "name = 's'\nseeds = 10\n[arms.a]\nmodel = 'mae'\n[arms.b]\nmodel = 'mae'\n[arms.c]\nmodel = 'mae'\n",
        50,
    );
    assert!(has(&e, "seeds") && e[0].contains("60 runs"), "{e:?}");
}

#[test]
fn two_arms_with_one_name_are_refused_in_json() {
    // A JSON object may repeat a key; serde would silently keep the last.
    let err = StudySpec::from_json_str(
        r#"{"name": "s", "seeds": 1, "arms": {"a": {"model": "mae"}, "a": {"model": "wave_mae"}}}"#,
    )
    .expect_err("refused");
    assert!(err.first().reason.contains("`a` is given twice"), "{err}");
    assert_eq!(err.first().field, "arms");
}

#[test]
fn the_wave_mae_study_file_is_valid() {
    let text = include_str!("../../docs/studies/wave-mae.toml");
    let study = spec(text).expand(spec::DEFAULT_MAX_RUNS).expect("valid");
    assert_eq!(study.arms.len(), 5);
    assert_eq!(study.run_count(), 30);
    assert!(study.budget.is_seconds());
    let hf = study
        .chains
        .iter()
        .find(|c| c.arm == "mae-hf")
        .expect("chain");
    assert_eq!(hf.pretrain.as_ref().map(|c| c.hf_loss_weight), Some(1.0));
    assert_eq!(hf.finetune.as_ref().map(|c| c.hf_loss_weight), Some(0.0));
}

#[test]
fn a_study_round_trips_through_json_with_its_arm_order() {
    let original = spec(THREE_ARMS);
    let json = serde_json::to_string(&original).expect("json");
    let back = StudySpec::from_json_str(&json).expect("reads back");
    assert_eq!(back, original);
    let names: Vec<&str> = back.arms.0.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["mae", "wave-both", "scratch"]);
}
