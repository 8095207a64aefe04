//! AdamW over a VarStore's trainable variables, written out so that its state
//! (the first and second moments and the step count) can be checkpointed and a
//! resumed run continues exactly; tch's `nn::Optimizer` keeps its state inside
//! libtorch. Parameter groups give no weight decay to biases, norms, the cls and
//! mask tokens and position embeddings, and scale the lr per layer (MAE's
//! util/lr_decay.py: scale = decay^(L - layer), L = depth + 1).
//!
//! A step runs libtorch's fused AdamW kernel (`torch.optim.AdamW(fused=True)`,
//! through `crate::torch_ext`) once per group of equal lr scale and weight
//! decay: one pass over each tensor instead of nine elementwise ops.
//! The same update op by op stays as the fallback where the fused kernel fails
//! and as the reference the tests compare it to ([`AdamW::step_per_tensor`]).

use std::collections::HashMap;

use tch::{Kind, Tensor, nn};

use crate::torch_ext;

/// Names that never get weight decay besides 1-D tensors (biases, norms).
const NO_DECAY: [&str; 4] = ["cls_token", "mask_token", "pos_embed", "decoder_pos_embed"];

/// One trainable tensor with its optimizer state.
#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub var: Tensor,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    /// Multiplies the scheduled lr (layer-wise decay; 1.0 without it).
    pub lr_scale: f64,
    /// Weight decay of this tensor (0 for the no-decay group).
    pub weight_decay: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// Layer-wise lr decay; 1.0 turns it off.
    pub layer_decay: f64,
    /// Encoder depth; with layer decay the layers are 0 (embeddings), 1..=depth
    /// (blocks) and depth + 1 (everything after).
    pub depth: u32,
}

#[derive(Debug)]
pub struct AdamW {
    pub params: Vec<Param>,
    pub step: u64,
    cfg: AdamWConfig,
    /// Indices into `params` sharing (lr scale, weight decay): one fused call each.
    groups: Vec<Vec<usize>>,
    /// The step count as the fused kernel reads it: a float scalar per device.
    step_tensors: HashMap<tch::Device, Tensor>,
    /// Set after the fused kernel failed once (logged); then op by op.
    fused_off: bool,
}

/// Indices of `params` grouped by equal (lr scale, weight decay), in order of
/// first appearance.
fn group_indices(params: &[Param]) -> Vec<Vec<usize>> {
    let mut groups: Vec<((f64, f64), Vec<usize>)> = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let key = (p.lr_scale, p.weight_decay);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// Whether `name` (of a tensor with `dim` dimensions) is in the no-decay group.
pub fn no_weight_decay(name: &str, dim: usize) -> bool {
    dim <= 1 || NO_DECAY.contains(&name)
}

/// The layer of a parameter for layer-wise decay (util/lr_decay.py
/// `get_layer_id_for_vit`): cls, position and patch embeddings are layer 0,
/// `blocks.k` is layer k + 1, anything else `num_layers` = depth + 1.
pub fn layer_id(name: &str, num_layers: u32) -> u32 {
    if matches!(name, "cls_token" | "mask_token" | "pos_embed") || name.starts_with("patch_embed") {
        0
    } else if let Some(rest) = name.strip_prefix("blocks.") {
        rest.split('.')
            .next()
            .and_then(|k| k.parse::<u32>().ok())
            .map_or(num_layers, |k| k + 1)
    } else {
        num_layers
    }
}

/// decay^(num_layers - layer_id(name)), num_layers = depth + 1.
pub fn layer_scale(name: &str, depth: u32, decay: f64) -> f64 {
    let num_layers = depth + 1;
    decay.powi((num_layers - layer_id(name, num_layers)) as i32)
}

impl AdamW {
    /// Groups every trainable variable of `vs`, in name order (stable across
    /// runs, so checkpoints line up).
    pub fn new(vs: &nn::VarStore, cfg: AdamWConfig) -> Self {
        let vars = vs.variables();
        let mut names: Vec<&String> = vars.keys().filter(|n| vars[*n].requires_grad()).collect();
        names.sort();
        let params: Vec<Param> = names
            .into_iter()
            .map(|name| {
                let var = vars[name].shallow_clone();
                let wd = if no_weight_decay(name, var.dim()) {
                    0.0
                } else {
                    cfg.weight_decay
                };
                Param {
                    name: name.clone(),
                    exp_avg: var.zeros_like().detach(),
                    exp_avg_sq: var.zeros_like().detach(),
                    lr_scale: layer_scale(name, cfg.depth, cfg.layer_decay),
                    weight_decay: wd,
                    var,
                }
            })
            .collect();
        let groups = group_indices(&params);
        Self {
            params,
            step: 0,
            cfg,
            groups,
            step_tensors: HashMap::new(),
            fused_off: false,
        }
    }

    /// Drop every gradient (torch's `zero_grad(set_to_none=True)`): the next
    /// backward writes fresh gradients instead of adding into zeroed ones, one
    /// pass less per tensor. Zeroes in place where that fails.
    pub fn zero_grad(&self) {
        for p in &self.params {
            if !p.var.grad().defined() {
                continue;
            }
            if let Err(e) = torch_ext::clear_grad(&p.var) {
                tracing::debug!("clearing the gradient of {}: {e}; zeroing it", p.name);
                let _ = p.var.grad().detach_().zero_();
            }
        }
    }

    /// The global L2 norm of the gradients; scales them down to `max_norm` when
    /// above it (torch's `clip_grad_norm_`). Returns the norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.var.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.to_kind(Kind::Float).norm())
            .collect();
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            for mut g in grads {
                let _ = g.g_mul_scalar_(coef);
            }
        }
        total
    }

    /// One AdamW step at scheduled learning rate `lr` (each group applies its
    /// own scale), as torch.optim.AdamW: decoupled decay, bias-corrected
    /// moments. Tensors without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        let t = self.step + 1;
        for g in 0..self.groups.len() {
            if !self.fused_off {
                match self.fused_group(g, lr, t) {
                    Ok(()) => continue,
                    // The kernel checks its arguments before it writes.
                    Err(e) => {
                        tracing::warn!("fused AdamW failed ({e}); stepping op by op from now on");
                        self.fused_off = true;
                    }
                }
            }
            let members = self.groups[g].clone();
            self.update_per_tensor(&members, lr, t);
        }
        self.step = t;
    }

    /// [`Self::step`] op by op for each tensor: the reference the fused kernel
    /// is tested against.
    pub fn step_per_tensor(&mut self, lr: f64) {
        let t = self.step + 1;
        let all: Vec<usize> = (0..self.params.len()).collect();
        self.update_per_tensor(&all, lr, t);
        self.step = t;
    }

    /// Group `g`'s tensors with a gradient through libtorch's fused kernel, at
    /// step count `t` (after this step).
    fn fused_group(&mut self, g: usize, lr: f64, t: u64) -> Result<(), torch_ext::TorchExtError> {
        let live: Vec<&Param> = self.groups[g]
            .iter()
            .map(|&i| &self.params[i])
            .filter(|p| p.var.grad().defined())
            .collect();
        let Some(first) = live.first() else {
            return Ok(());
        };
        let device = first.var.device();
        let step = self
            .step_tensors
            .entry(device)
            .or_insert_with(|| Tensor::zeros([], (Kind::Float, device)));
        let _ = step.fill_(t as f64);
        let grads: Vec<Tensor> = live.iter().map(|p| p.var.grad()).collect();
        torch_ext::fused_adamw(
            &live.iter().map(|p| &p.var).collect::<Vec<_>>(),
            &grads.iter().collect::<Vec<_>>(),
            &live.iter().map(|p| &p.exp_avg).collect::<Vec<_>>(),
            &live.iter().map(|p| &p.exp_avg_sq).collect::<Vec<_>>(),
            step,
            lr * first.lr_scale,
            self.cfg.betas,
            first.weight_decay,
            self.cfg.eps,
        )
    }

    /// The update of `params[i]` for each i in `members`, op by op, at step
    /// count `t` (after this step).
    fn update_per_tensor(&mut self, members: &[usize], lr: f64, t: u64) {
        let (b1, b2) = self.cfg.betas;
        let t = t as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let eps = self.cfg.eps;
        tch::no_grad(|| {
            for &i in members {
                let p = &mut self.params[i];
                let g = p.var.grad();
                if !g.defined() {
                    continue;
                }
                let lr = lr * p.lr_scale;
                let mut var = p.var.shallow_clone();
                if p.weight_decay > 0.0 {
                    let _ = var.g_mul_scalar_(1.0 - lr * p.weight_decay);
                }
                let _ = p.exp_avg.lerp_(&g, 1.0 - b1);
                let _ = p.exp_avg_sq.g_mul_scalar_(b2);
                let _ = p.exp_avg_sq.addcmul_(&g, &(&g * (1.0 - b2)));
                let step_size = lr / bc1;
                if step_size == 0.0 {
                    continue; // lr 0 (first warmup step): moments move, weights do not
                }
                // var -= step_size * m / (sqrt(v) / bc2_sqrt + eps), folded into
                // one addcdiv with the denominator pre-scaled by -1 / step_size.
                let mut denom = p.exp_avg_sq.sqrt();
                let _ = denom.g_mul_scalar_(1.0 / bc2_sqrt);
                let _ = denom.g_add_scalar_(eps);
                let _ = denom.g_mul_scalar_(-1.0 / step_size);
                let _ = var.addcdiv_(&p.exp_avg, &denom);
            }
        });
    }

    /// The largest lr among the groups at scheduled lr `lr` (what the official
    /// finetune log calls `train_lr`).
    pub fn max_group_lr(&self, lr: f64) -> f64 {
        self.params.iter().map(|p| p.lr_scale).fold(0.0, f64::max) * lr
    }

    /// The optimizer state as named tensors for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            out.push((
                format!("optim.exp_avg.{}", p.name),
                p.exp_avg.shallow_clone(),
            ));
            out.push((
                format!("optim.exp_avg_sq.{}", p.name),
                p.exp_avg_sq.shallow_clone(),
            ));
        }
        out
    }

    /// Restore the moments from checkpoint tensors; the name of the first one
    /// missing or of the wrong shape is the error.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> Result<(), String> {
        tch::no_grad(|| {
            for p in &mut self.params {
                for (key, dst) in [
                    ("exp_avg", &mut p.exp_avg),
                    ("exp_avg_sq", &mut p.exp_avg_sq),
                ] {
                    let name = format!("optim.{key}.{}", p.name);
                    let src = tensors
                        .get(&name)
                        .ok_or_else(|| format!("missing tensor `{name}`"))?;
                    if src.size() != dst.size() {
                        return Err(format!(
                            "tensor `{name}` has shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        ));
                    }
                    dst.copy_(src);
                }
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}
