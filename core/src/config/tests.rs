use super::*;

fn toml_err(text: &str) -> ConfigErrors {
    RunConfig::from_toml_str(text).expect_err("config should be rejected")
}

#[test]
fn empty_document_resolves_to_the_pretrain_recipe() {
    let c = RunConfig::from_toml_str("").expect("defaults are valid");
    assert_eq!(c.kind, RunKind::Pretrain);
    assert_eq!(c.preset, "vit-micro/4");
    assert_eq!(c.mask_ratio, 0.75);
    assert_eq!(c.blr, 1.5e-4);
    assert!((c.peak_lr() - 1.5e-4 * 128.0 / 256.0).abs() < 1e-12);
}

#[test]
fn finetune_defaults_follow_the_finetune_recipe() {
    let c =
        RunConfig::from_toml_str("kind = \"finetune\"\npreset = \"vit-tiny/4\"").expect("valid");
    assert_eq!((c.blr, c.layer_decay, c.drop_path), (1e-3, 0.75, 0.1));
    assert_eq!(c.shape.depth, 12);
}

#[test]
fn overrides_replace_preset_fields() {
    let c = RunConfig::from_toml_str("preset = \"vit-tiny/4\"\ndepth = 3\nembed_dim = 96")
        .expect("valid");
    assert_eq!(
        (c.shape.depth, c.shape.embed_dim, c.shape.num_heads),
        (3, 96, 3)
    );
}

#[test]
fn unknown_key_is_named() {
    let e = toml_err("mask_ratoi = 0.5");
    assert!(e.first().reason.contains("mask_ratoi"), "{e}");
}

#[test]
fn wrong_type_names_the_field() {
    let e = toml_err("batch_size = \"big\"");
    assert_eq!(e.first().field, "batch_size", "{e}");
    let e = RunConfig::from_json_str(r#"{"epochs": -3}"#).expect_err("negative epochs");
    assert_eq!(e.first().field, "epochs", "{e}");
    let e = RunConfig::from_json_str(r#"{"epochs": 1e40}"#).expect_err("huge epochs");
    assert_eq!(e.first().field, "epochs", "{e}");
}

#[test]
fn patch_size_must_divide_image_size() {
    let e = toml_err("patch_size = 5");
    assert!(
        e.for_field("patch_size")
            .is_some_and(|r| r.contains("does not divide")),
        "{e}"
    );
}

#[test]
fn mask_ratio_must_be_inside_the_open_interval() {
    for bad in ["0.0", "1.0", "1.5", "-0.1", "nan"] {
        let e = toml_err(&format!("mask_ratio = {bad}"));
        assert!(e.for_field("mask_ratio").is_some(), "{bad}: {e}");
    }
    assert!(RunConfig::from_toml_str("mask_ratio = 0.9").is_ok());
}

#[test]
fn batch_zero_is_rejected() {
    assert!(toml_err("batch_size = 0").for_field("batch_size").is_some());
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let e = toml_err("batch_size = 0\nepochs = 0\nmask_ratio = 2.0");
    let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
    for f in ["batch_size", "epochs", "mask_ratio"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
}

#[test]
fn unknown_preset_lists_the_known_ones() {
    let e = toml_err("preset = \"vit-huge/14\"");
    assert_eq!(e.first().field, "preset");
    assert!(e.first().reason.contains("vit-tiny/4"));
}

#[test]
fn wave_mae_on_an_odd_grid_names_preset_and_patch_size() {
    // 32 / 32 = a 1x1 grid; 24 / 8 = 3x3.
    let e = toml_err("model = \"wave_mae\"\nimg_size = 24\npatch_size = 8");
    let reason = e.for_field("wave_in").expect("wave_in rejected");
    assert!(
        reason.contains("vit-micro/4") && reason.contains("patch_size 8"),
        "{reason}"
    );
    let ok = RunConfig::from_toml_str("model = \"wave_mae\"").expect("even grid");
    assert_eq!(ok.wave_in, Some(WaveIn::Decoder));
}

#[test]
fn wave_in_needs_wave_mae() {
    assert!(
        toml_err("wave_in = \"encoder\"")
            .for_field("wave_in")
            .is_some()
    );
}

#[test]
fn pretrain_cannot_name_a_parent() {
    let e = toml_err("parent_run = \"6f1c1a34-4a7c-4d7d-9a0e-58a4ad7e1f1b\"");
    assert!(e.for_field("parent_run").is_some());
}

#[test]
fn resolved_config_round_trips_through_json_and_input() {
    let c = RunConfig::from_toml_str("kind = \"finetune\"\nclip_grad = 1.0\ntags = [\"a\"]")
        .expect("valid");
    let json = serde_json::to_value(&c).expect("serialize");
    let back: RunConfig = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back, c);
    assert_eq!(RunConfig::resolve(c.to_input()).expect("valid"), c);
}

#[test]
fn control_characters_in_names_are_rejected() {
    assert!(toml_err("name = \"a\\u0000b\"").for_field("name").is_some());
    let c = RunConfig::from_toml_str("name = \"<script>alert(1)</script> ☃\"")
        .expect("odd but printable");
    assert!(c.name.contains('☃'));
}
