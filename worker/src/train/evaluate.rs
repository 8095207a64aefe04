//! Test-set evaluation of a classifier (main_finetune.py `evaluate`): mean
//! cross-entropy, top-1 and top-5 accuracy in percent.

use tch::{Device, Kind, Reduction, Tensor};

use crate::data::{Dataset, to_tensor};
use crate::model::Classifier;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalStats {
    pub loss: f64,
    pub acc1: f64,
    pub acc5: f64,
}

/// Evaluate on every image of `ds`, `batch` at a time, without augmentation.
pub fn evaluate(
    model: &Classifier,
    ds: &Dataset,
    batch: usize,
    device: Device,
    kind: Kind,
) -> EvalStats {
    let n = ds.len();
    let (mut loss, mut top1, mut top5) = (0.0, 0.0, 0.0);
    tch::no_grad(|| {
        for start in (0..n).step_by(batch.max(1)) {
            let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
            let imgs = to_tensor(ds, &idx).to_device(device).to_kind(kind);
            let labels: Vec<i64> = idx.iter().map(|&i| i64::from(ds.labels[i])).collect();
            let labels = Tensor::from_slice(&labels).to_device(device);
            let logits = model.forward(&imgs, false);
            loss += logits
                .cross_entropy_loss(&labels, None::<Tensor>, Reduction::Sum, -100, 0.0)
                .double_value(&[]);
            let k = logits.size()[1].min(5);
            let (_, pred) = logits.topk(k, 1, true, true); // [B, k]
            let hit = pred.eq_tensor(&labels.unsqueeze(1)); // [B, k]
            top1 += hit.narrow(1, 0, 1).sum(Kind::Float).double_value(&[]);
            top5 += hit.sum(Kind::Float).double_value(&[]);
        }
    });
    let n = n.max(1) as f64;
    EvalStats {
        loss: loss / n,
        acc1: 100.0 * top1 / n,
        acc5: 100.0 * top5 / n,
    }
}
