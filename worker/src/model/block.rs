//! A pre-norm transformer block (timm `Block`): x + attn(norm1(x)), then
//! x + mlp(norm2(x)), each branch under stochastic depth.
//!
//! The token mixer is an enum so Wave-MAE can put Wave-ViT's attention in a
//! block without touching the encoder or decoder; every mixer gets the
//! [`TokenLayout`] (grid size, prefix tokens, which grid cells are present).

use tch::{Tensor, nn};

use super::ModelError;
use super::attention::Attention;
use super::drop_path::drop_path;
use super::layers::LayerNorm;
use super::mlp::Mlp;
use super::wave::WaveAttention;

/// Where the tokens of a sequence sit on the patch grid. A mixer that needs the
/// spatial layout (wavelet attention) reads it from here.
#[derive(Debug, Clone, Copy)]
pub struct TokenLayout<'a> {
    /// Patch grid height and width.
    pub grid: (i64, i64),
    /// Tokens before the patch tokens (1: the cls token).
    pub prefix_tokens: i64,
    /// For a masked encoder: the grid index of each patch token, [B, L_keep].
    /// `None` when the sequence holds the whole grid in row-major order.
    pub ids_keep: Option<&'a Tensor>,
}

/// Which token mixer a block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKind {
    /// Plain multi-head self-attention.
    Plain,
    /// Wave-ViT's wavelet attention (Wave-MAE), keys/values strided by `sr`.
    Wave { sr: i64 },
}

/// The token mixer of a block.
#[derive(Debug)]
pub enum Mixer {
    Attention(Attention),
    /// Boxed: it is ten times the size of the plain mixer.
    Wave(Box<WaveAttention>),
}

impl Mixer {
    /// [B, N, D] -> [B, N, D]
    pub fn forward(&self, x: &Tensor, layout: &TokenLayout, train: bool) -> Tensor {
        match self {
            Self::Attention(a) => a.forward(x),
            Self::Wave(a) => {
                let (h, w) = layout.grid;
                // Its convs and BatchNorms hold fp32 weights: run it in fp32.
                let x32 = x.to_kind(tch::Kind::Float);
                let out = match layout.ids_keep {
                    Some(ids) => a.forward_masked(&x32, ids, None, h, w, train),
                    None => a.forward(&x32, h, w, train),
                };
                out.to_kind(x.kind())
            }
        }
    }
}

/// The shape of one block.
#[derive(Debug, Clone, Copy)]
pub struct BlockConfig {
    pub dim: i64,
    pub num_heads: i64,
    pub mlp_ratio: f64,
    pub drop_path: f64,
    pub attn: AttnKind,
}

#[derive(Debug)]
pub struct Block {
    norm1: LayerNorm,
    attn: Mixer,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: f64,
}

impl Block {
    /// Fails only for wave attention on a width it cannot split (see
    /// [`WaveAttention::new`]).
    pub fn new(p: nn::Path, cfg: &BlockConfig) -> Result<Self, ModelError> {
        let attn = match cfg.attn {
            AttnKind::Plain => {
                Mixer::Attention(Attention::new(&p / "attn", cfg.dim, cfg.num_heads))
            }
            // Every sequence of the MAE family starts with the cls token.
            AttnKind::Wave { sr } => Mixer::Wave(Box::new(WaveAttention::new(
                &p / "attn",
                cfg.dim,
                cfg.num_heads,
                sr,
                1,
            )?)),
        };
        let hidden = (cfg.dim as f64 * cfg.mlp_ratio) as i64;
        Ok(Self {
            norm1: LayerNorm::new(&p / "norm1", cfg.dim),
            attn,
            norm2: LayerNorm::new(&p / "norm2", cfg.dim),
            mlp: Mlp::new(&p / "mlp", cfg.dim, hidden),
            drop_path: cfg.drop_path,
        })
    }

    /// [B, N, D] -> [B, N, D]
    pub fn forward(&self, x: &Tensor, layout: &TokenLayout, train: bool) -> Tensor {
        let x = x + drop_path(
            &self.attn.forward(&self.norm1.forward(x), layout, train),
            self.drop_path,
            train,
        );
        &x + drop_path(
            &self.mlp.forward(&self.norm2.forward(&x)),
            self.drop_path,
            train,
        )
    }
}
