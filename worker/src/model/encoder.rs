//! The ViT trunk shared by the MAE encoder and the classifier: patch embedding,
//! cls token, fixed position embeddings and the blocks, under the official
//! parameter names (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N`),
//! so a classifier loads a pretrain checkpoint's encoder by name.

use tch::{Tensor, nn};

use super::ModelError;
use super::block::{AttnKind, Block, BlockConfig, TokenLayout};
use super::patch_embed::PatchEmbed;
use super::pos_embed::sincos_2d_tensor;
use maelab_core::config::ModelShape;

#[derive(Debug)]
pub struct Encoder {
    pub patch_embed: PatchEmbed,
    pub cls_token: Tensor,
    pub pos_embed: Tensor,
    pub blocks: Vec<Block>,
    pub grid: i64,
}

impl Encoder {
    /// `drop_path` is the rate of the last block; earlier blocks get a linear
    /// ramp from 0 (timm's `dpr`).
    pub fn new(
        p: &nn::Path,
        shape: &ModelShape,
        drop_path: f64,
        attn: AttnKind,
    ) -> Result<Self, ModelError> {
        let dim = i64::from(shape.embed_dim);
        if dim % 4 != 0 {
            return Err(ModelError::Shape(format!(
                "embed_dim {dim} must be divisible by 4 for 2-D sin-cos position embeddings"
            )));
        }
        let grid = i64::from(shape.grid());
        let patch_embed = PatchEmbed::new(
            p / "patch_embed",
            i64::from(shape.in_chans),
            i64::from(shape.patch_size),
            dim,
        );
        let cls_token = p.var(
            "cls_token",
            &[1, 1, dim],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        );
        let pos_embed = p.add("pos_embed", sincos_2d_tensor(dim, grid, p.device()), false);
        let depth = i64::from(shape.depth);
        let blocks = (0..depth)
            .map(|i| {
                let rate = if depth > 1 {
                    drop_path * i as f64 / (depth - 1) as f64
                } else {
                    drop_path
                };
                let cfg = BlockConfig {
                    dim,
                    num_heads: i64::from(shape.num_heads),
                    mlp_ratio: shape.mlp_ratio,
                    drop_path: rate,
                    attn,
                };
                Block::new(p / "blocks" / i, &cfg)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            grid,
        })
    }

    /// Patch tokens with their position embeddings: [B, C, H, W] -> [B, L, D].
    pub fn embed(&self, imgs: &Tensor) -> Tensor {
        let x = self.patch_embed.forward(imgs);
        &x + self
            .pos_embed
            .narrow(1, 1, self.grid * self.grid)
            .to_kind(x.kind())
    }

    /// Prepend the cls token (with its position embedding): [B, L, D] -> [B, 1 + L, D].
    pub fn prepend_cls(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let cls = (&self.cls_token + self.pos_embed.narrow(1, 0, 1)).to_kind(x.kind());
        Tensor::cat(&[cls.expand([b, -1, -1], false), x.shallow_clone()], 1)
    }

    /// Run the blocks: [B, N, D] -> [B, N, D].
    pub fn blocks(&self, x: Tensor, ids_keep: Option<&Tensor>, train: bool) -> Tensor {
        let layout = TokenLayout {
            grid: (self.grid, self.grid),
            prefix_tokens: 1,
            ids_keep,
        };
        self.blocks
            .iter()
            .fold(x, |x, blk| blk.forward(&x, &layout, train))
    }
}
