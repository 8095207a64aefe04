//! The recipes under docs/recipes/ are run configs people submit as they are:
//! each must pass the config loader (`RunConfig::from_toml_str`, what
//! `maelab-worker train --config` uses), and each recipe's finetune must be
//! able to load its pretrain's encoder (same model and shape).

use std::path::{Path, PathBuf};

use maelab_core::config::{Precision, RunConfig, RunKind};

fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/recipes")
}

fn load(path: &Path) -> RunConfig {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    RunConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_recipe_config_loads_and_its_finetune_fits_its_pretrain() {
    let mut recipes = 0;
    for entry in std::fs::read_dir(recipes_dir()).expect("docs/recipes") {
        let dir = entry.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let mut tomls: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("recipe dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        tomls.sort();
        assert!(!tomls.is_empty(), "{} holds no .toml", dir.display());
        let configs: Vec<RunConfig> = tomls.iter().map(|p| load(p)).collect();
        let pretrain = dir.join("pretrain.toml");
        let finetune = dir.join("finetune.toml");
        if pretrain.is_file() && finetune.is_file() {
            let (p, f) = (load(&pretrain), load(&finetune));
            assert_eq!(p.kind, RunKind::Pretrain, "{}", pretrain.display());
            assert_eq!(f.kind, RunKind::Finetune, "{}", finetune.display());
            assert_eq!(
                (p.model, &p.shape),
                (f.model, &f.shape),
                "{}",
                dir.display()
            );
            // One precision per recipe: its wall time is measured in one.
            assert_eq!(p.precision, f.precision, "{}", dir.display());
        }
        recipes += configs.len();
    }
    assert!(recipes >= 5, "found only {recipes} recipe configs");
}

#[test]
fn the_gpu_recipe_is_mae_vit_t2_with_a_long_bf16_pretraining() {
    let dir = recipes_dir().join("cifar10-gpu");
    let p = load(&dir.join("pretrain.toml"));
    let f = load(&dir.join("finetune.toml"));
    for c in [&p, &f] {
        assert_eq!(c.preset, "vit-tiny/2");
        assert_eq!((c.shape.patch_size, c.shape.num_patches()), (2, 256));
        assert_eq!(c.precision, Precision::Bf16);
        assert_eq!(c.dataset, "cifar10");
    }
    // What README.md there promises: 1600-2000 pretraining epochs with MAE's
    // masking and loss, a finetune of 100-200 epochs with layer decay and mixing.
    assert!((1600..=2000).contains(&p.epochs), "{}", p.epochs);
    assert!(p.norm_pix_loss && (p.mask_ratio - 0.75).abs() < 1e-12);
    assert!((100..=200).contains(&f.epochs), "{}", f.epochs);
    assert!(f.layer_decay < 1.0 && f.mixup > 0.0 && f.cutmix > 0.0);
}
