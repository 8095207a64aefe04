//! Wave-ViT's wavelet attention (<https://arxiv.org/abs/2207.04978>,
//! `WaveAttention` in YehLi/ImageNetModel `classification/wavevit.py`), and
//! the masked-encoder variant Wave-MAE needs.
//!
//! On a token grid `H x W` with width `C` (ml.md, "Wave-MAE"):
//! 1. `q`: Linear(C, C) on the tokens;
//! 2. `reduce`: Conv1x1(C, C/4) + BatchNorm + ReLU on the grid;
//! 3. Haar DWT: `[B, C/4, H, W]` -> `[B, C, H/2, W/2]`, lossless;
//! 4. `filter`: Conv3x3(C, C) + BatchNorm + ReLU;
//! 5. IDWT back to `[B, C/4, H, W]`: one C/4-wide token per grid cell;
//! 6. keys and values from the filtered DWT output (`kv_embed`: a stride-sr
//!    conv when sr > 1), `kv`: LayerNorm + Linear(C, 2C), so N/(4 sr^2) of them;
//! 7. `proj`: Linear(C + C/4, C) on `[attention output, IDWT tokens]`.
//!
//! Tokens before the grid (MAE's cls token, `prefix` of them) query like the
//! others but are not on the grid: their IDWT part is zero.
//!
//! Trainable parameters (C = dim, r = sr), the formula the tests check:
//! - `q`:        C*C + C
//! - `reduce`:   C*C/4 + C/4 (conv) + 2*C/4 (BatchNorm weight, bias)
//! - `filter`:   9*C*C + C (conv) + 2*C (BatchNorm)
//! - `kv_embed`: r*r*C*C + C, only when r > 1
//! - `kv`:       2*C (LayerNorm) + 2*C*C + 2*C (Linear)
//! - `proj`:     (C + C/4)*C + C
//!
//! BatchNorm running statistics are buffers, saved but not trained.

use tch::Tensor;
use tch::nn::{self, Module, ModuleT};

use super::WaveError;
use super::haar::Haar;

/// LayerNorm eps: maelab's MAE uses 1e-6 everywhere (ml.md).
const LN_EPS: f64 = 1e-6;

/// MAE's init for every Linear: xavier-uniform weight, zero bias.
fn xavier_linear(p: nn::Path, fan_in: i64, fan_out: i64) -> nn::Linear {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, fan_in, fan_out, cfg)
}

/// Wave-ViT's conv init: normal(0, sqrt(2 / fan_out)), zero bias.
fn conv_config(k: i64, out: i64, stride: i64, padding: i64) -> nn::ConvConfig {
    let std = (2.0 / (k * k * out) as f64).sqrt();
    nn::ConvConfig {
        stride,
        padding,
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        },
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    }
}

/// Conv + BatchNorm + ReLU, Wave-ViT's `reduce` and `filter`
/// (`nn.Sequential`, hence the `0` and `1` in the parameter names).
#[derive(Debug)]
struct ConvBnRelu {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBnRelu {
    fn new(p: nn::Path, cin: i64, cout: i64, k: i64) -> Self {
        let conv = nn::conv2d(&p / 0, cin, cout, k, conv_config(k, cout, 1, k / 2));
        let bn_cfg = nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        let bn = nn::batch_norm2d(&p / 1, cout, bn_cfg);
        Self { conv, bn }
    }

    /// `[B, cin, H, W]` -> `[B, cout, H, W]`; BatchNorm uses batch statistics
    /// (and updates its running ones) when `train`.
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(x), train).relu()
    }
}

/// Wave-ViT's wavelet attention over a token grid, see the module docs.
#[derive(Debug)]
pub struct WaveAttention {
    dim: i64,
    num_heads: i64,
    sr: i64,
    prefix: i64,
    q: nn::Linear,
    reduce: ConvBnRelu,
    filter: ConvBnRelu,
    kv_embed: Option<nn::Conv2D>,
    kv_norm: nn::LayerNorm,
    kv: nn::Linear,
    proj: nn::Linear,
    haar: Haar,
}

impl WaveAttention {
    /// `dim` must be a multiple of 4 (the reduced grid is C/4 wide and its DWT
    /// C wide) and of `num_heads`; `sr` >= 1 strides the keys/values; `prefix`
    /// is the number of tokens before the grid (1 for MAE's cls token).
    pub fn new(
        p: nn::Path,
        dim: i64,
        num_heads: i64,
        sr: i64,
        prefix: i64,
    ) -> Result<Self, WaveError> {
        if dim <= 0 || dim % 4 != 0 {
            return Err(WaveError::Dim { dim });
        }
        if num_heads <= 0 || dim % num_heads != 0 {
            return Err(WaveError::Heads { dim, num_heads });
        }
        if sr < 1 {
            return Err(WaveError::Sr { sr });
        }
        if prefix < 0 {
            return Err(WaveError::Prefix { prefix });
        }
        let kv_embed = (sr > 1)
            .then(|| nn::conv2d(&p / "kv_embed", dim, dim, sr, conv_config(sr, dim, sr, 0)));
        let ln_cfg = nn::LayerNormConfig {
            eps: LN_EPS,
            ..Default::default()
        };
        Ok(Self {
            dim,
            num_heads,
            sr,
            prefix,
            q: xavier_linear(&p / "q", dim, dim),
            reduce: ConvBnRelu::new(&p / "reduce", dim, dim / 4, 1),
            filter: ConvBnRelu::new(&p / "filter", dim, dim, 3),
            kv_embed,
            kv_norm: nn::layer_norm(&p / "kv" / 0, vec![dim], ln_cfg),
            kv: xavier_linear(&p / "kv" / 1, dim, 2 * dim),
            proj: xavier_linear(&p / "proj", dim + dim / 4, dim),
            haar: Haar::new(p.device()),
        })
    }

    /// Whether an `h x w` grid works: the DWT halves it, and the halved grid
    /// must divide by `sr`.
    pub fn check_grid(&self, h: i64, w: i64) -> Result<(), WaveError> {
        let ok = |n: i64| n > 0 && n % 2 == 0 && (n / 2) % self.sr == 0;
        if ok(h) && ok(w) {
            Ok(())
        } else {
            Err(WaveError::Grid { h, w, sr: self.sr })
        }
    }

    /// Plain Wave-ViT attention: `x` is `[B, prefix + h*w, C]`, the grid
    /// tokens in row-major order after the prefix. Returns `[B, prefix + h*w, C]`.
    ///
    /// # Panics
    /// On shapes that do not match (like any tch layer); see [`Self::check_grid`].
    pub fn forward(&self, x: &Tensor, h: i64, w: i64, train: bool) -> Tensor {
        // [B, h*w, C]
        let grid = x.narrow(1, self.prefix, h * w);
        self.attend(x, &grid, None, h, w, train)
    }

    /// The masked-encoder variant (`wave_in = encoder`): `x` is
    /// `[B, prefix + L_keep, C]`, the visible tokens that sit at `ids_keep`
    /// (`[B, L_keep]`, int64) of the `h x w` grid. Queries come from the visible
    /// tokens only; the wavelet branch and the keys/values see the whole grid
    /// with the masked cells filled by `fill` (`[C]`, e.g. a mask token) or
    /// zeros; the IDWT tokens are gathered back at the visible cells.
    /// Returns `[B, prefix + L_keep, C]`.
    pub fn forward_masked(
        &self,
        x: &Tensor,
        ids_keep: &Tensor,
        fill: Option<&Tensor>,
        h: i64,
        w: i64,
        train: bool,
    ) -> Tensor {
        let (b, l_keep) = (x.size()[0], ids_keep.size()[1]);
        // [B, L_keep, C]
        let visible = x.narrow(1, self.prefix, l_keep);
        // [B, h*w, C]
        let base = match fill {
            Some(t) => t
                .reshape([1, 1, self.dim])
                .expand([b, h * w, self.dim], false),
            None => Tensor::zeros([b, h * w, self.dim], (x.kind(), x.device())),
        };
        let index = ids_keep.unsqueeze(-1).expand([b, l_keep, self.dim], false);
        let grid = base.scatter(1, &index, &visible);
        self.attend(x, &grid, Some(ids_keep), h, w, train)
    }

    /// Steps 1-7 with queries from `x` (`[B, M, C]`) and the wavelet branch
    /// on `grid` (`[B, h*w, C]`); `keep` picks the grid cells whose IDWT
    /// tokens go with the non-prefix queries (all of them when `None`).
    fn attend(
        &self,
        x: &Tensor,
        grid: &Tensor,
        keep: Option<&Tensor>,
        h: i64,
        w: i64,
        train: bool,
    ) -> Tensor {
        let (b, m, c) = (x.size()[0], x.size()[1], self.dim);
        let heads = self.num_heads;
        let d = c / heads;
        // 1. [B, heads, M, d]
        let q = self.q.forward(x).view([b, m, heads, d]).transpose(1, 2);
        // 2. [B, C, H, W] -> [B, C/4, H, W]
        let g = grid.transpose(1, 2).reshape([b, c, h, w]);
        let reduced = self.reduce.forward(&g, train);
        // 3-4. [B, C, H/2, W/2]
        let x_dwt = self.filter.forward(&self.haar.dwt(&reduced), train);
        // 5. [B, C/4, H, W] -> [B, h*w, C/4]
        let mut x_idwt = self.haar.idwt(&x_dwt).flatten(2, 3).transpose(1, 2);
        if let Some(ids) = keep {
            let l_keep = ids.size()[1];
            let index = ids.unsqueeze(-1).expand([b, l_keep, c / 4], false);
            // [B, L_keep, C/4]
            x_idwt = x_idwt.gather(1, &index, false);
        }
        if self.prefix > 0 {
            let zeros = Tensor::zeros([b, self.prefix, c / 4], (x_idwt.kind(), x_idwt.device()));
            // [B, M, C/4]
            x_idwt = Tensor::cat(&[zeros, x_idwt], 1);
        }
        // 6. [B, C, H/(2sr), W/(2sr)] -> [B, N', C] -> [B, N', 2C]
        let kv_src = match &self.kv_embed {
            Some(conv) => conv.forward(&x_dwt),
            None => x_dwt,
        };
        let kv_tokens = kv_src.flatten(2, 3).transpose(1, 2);
        let kv = self.kv.forward(&self.kv_norm.forward(&kv_tokens));
        let n_kv = kv.size()[1];
        // [2, B, heads, N', d]
        let kv = kv.view([b, n_kv, 2, heads, d]).permute([2, 0, 3, 1, 4]);
        // unbind: one stack in backward, not two zero-filled select copies.
        let kv = kv.unbind(0);
        let (k, v) = (&kv[0], &kv[1]);
        // [B, heads, M, d] -> [B, M, C]
        let attn =
            Tensor::scaled_dot_product_attention(&q, k, v, None::<Tensor>, 0.0, false, None, false)
                .transpose(1, 2)
                .reshape([b, m, c]);
        // 7. [B, M, C + C/4] -> [B, M, C]
        self.proj.forward(&Tensor::cat(&[attn, x_idwt], 2))
    }
}
