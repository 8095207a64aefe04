//! Model presets for 32x32 inputs (ml.md, "Model presets"). Every field can be
//! overridden by a run's config; a preset only supplies the defaults.

use serde::{Deserialize, Serialize};

/// The shape of a ViT encoder and its MAE decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    pub img_size: u32,
    pub patch_size: u32,
    pub in_chans: u32,
    pub embed_dim: u32,
    pub depth: u32,
    pub num_heads: u32,
    pub decoder_embed_dim: u32,
    pub decoder_depth: u32,
    pub decoder_num_heads: u32,
    pub mlp_ratio: f64,
    pub num_classes: u32,
}

impl ModelShape {
    /// Patches along one side of the image.
    pub fn grid(&self) -> u32 {
        self.img_size / self.patch_size
    }

    /// Patches per image.
    pub fn num_patches(&self) -> u32 {
        // Saturating: validation computes this before it has range-checked
        // the sizes, and a submitted 2^32-1 must be refused, not overflow.
        self.grid().saturating_mul(self.grid())
    }
}

/// Names of the presets, in the order a form lists them.
pub const PRESET_NAMES: [&str; 3] = ["vit-micro/4", "vit-tiny/4", "vit-tiny/2"];

/// The preset called `name`, if there is one.
pub fn preset(name: &str) -> Option<ModelShape> {
    let (embed_dim, depth, num_heads, patch_size, dec_dim, dec_depth, dec_heads) = match name {
        "vit-micro/4" => (128, 6, 4, 4, 128, 2, 4),
        "vit-tiny/4" => (192, 12, 3, 4, 128, 4, 4),
        "vit-tiny/2" => (192, 12, 3, 2, 192, 4, 3),
        _ => return None,
    };
    Some(ModelShape {
        img_size: 32,
        patch_size,
        in_chans: 3,
        embed_dim,
        depth,
        num_heads,
        decoder_embed_dim: dec_dim,
        decoder_depth: dec_depth,
        decoder_num_heads: dec_heads,
        mlp_ratio: 4.0,
        num_classes: 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_design_table() {
        let tiny2 = preset("vit-tiny/2").expect("preset");
        assert_eq!(tiny2.num_patches(), 256);
        assert_eq!(
            (tiny2.embed_dim, tiny2.depth, tiny2.num_heads),
            (192, 12, 3)
        );
        assert_eq!(preset("vit-micro/4").expect("preset").num_patches(), 64);
        assert!(preset("vit-huge/14").is_none());
        for name in PRESET_NAMES {
            assert!(preset(name).is_some(), "{name}");
        }
    }
}
