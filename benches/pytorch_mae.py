"""PyTorch eager reference for `maelab-worker bench`: the same MAE / ViT
classifier (models_mae.py / timm VisionTransformer with global pool), the same
synthetic full training steps (forward, backward, AdamW), images/second and
peak RSS. Plain torch, no timm, so it runs in the project's venv.

    python benches/pytorch_mae.py --preset vit-tiny/4 --mode pretrain --batch 128 --steps 10 --threads 2

`--dtype bf16` runs the forward pass under torch.autocast(dtype=torch.bfloat16) on
the device (fp32 weights, gradients and AdamW state, no GradScaler), as
`maelab-worker bench --precision bf16` does; `--device cuda` for a GPU.
"""
import contextlib
import argparse
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {  # dim, depth, heads, patch, dec dim, dec depth, dec heads
    "vit-micro/4": (128, 6, 4, 4, 128, 2, 4),
    "vit-tiny/4": (192, 12, 3, 4, 128, 4, 4),
    "vit-tiny/2": (192, 12, 3, 2, 192, 4, 3),
}


def sincos_2d(dim, grid):
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1, 1).double() * omega.reshape(1, -1)
        return torch.cat([out.sin(), out.cos()], dim=1)

    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    # numpy meshgrid order of the official code: the first half encodes columns
    emb = torch.cat([one_d(dim // 2, xs), one_d(dim // 2, ys)], dim=1)
    emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0)
    return emb.float().unsqueeze(0)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


def drop_path(x, p, training):
    if p == 0.0 or not training:
        return x
    keep = 1 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)  # timm: scale the mask, not the product


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0, dp=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.dp = dp

    def forward(self, x):
        x = x + drop_path(self.attn(self.norm1(x)), self.dp, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.dp, self.training)


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class MAE(nn.Module):
    def __init__(self, dim, depth, heads, patch, ddim, ddepth, dheads, img=32):
        super().__init__()
        self.patch, grid = patch, img // patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(sincos_2d(dim, grid), requires_grad=False)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, ddim) * 0.02)
        self.decoder_pos_embed = nn.Parameter(sincos_2d(ddim, grid), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(ddim, dheads) for _ in range(ddepth)])
        self.decoder_norm = nn.LayerNorm(ddim, eps=1e-6)
        self.decoder_pred = nn.Linear(ddim, patch * patch * 3)
        self.apply(init_weights)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))

    def patchify(self, imgs):
        p = self.patch
        n, c, h, w = imgs.shape
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)

    def forward(self, imgs, mask_ratio=0.75):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        n, l, d = x.shape
        keep = int(l * (1 - mask_ratio))
        noise = torch.rand(n, l, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep].unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones(n, l, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(n, -1, -1)
        x = torch.cat([cls, x], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        mt = self.mask_token.repeat(n, l + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mt], 1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], 1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        target = self.patchify(imgs)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()


class ViT(nn.Module):
    def __init__(self, dim, depth, heads, patch, classes=10, dp=0.1, img=32):
        super().__init__()
        grid = img // patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(sincos_2d(dim, grid), requires_grad=False)
        dpr = [x.item() for x in torch.linspace(0, dp, depth)]
        self.blocks = nn.ModuleList([Block(dim, heads, dp=dpr[i]) for i in range(depth)])
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)

    def forward(self, imgs):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.fc_norm(x[:, 1:, :].mean(1)))


def parser():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="vit-tiny/4")
    ap.add_argument("--mode", choices=["pretrain", "finetune"], default="pretrain")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    return ap


def setup(a):
    """The model and a closure running one full training step (forward,
    backward, AdamW) on synthetic data, for the arguments of `parser()`."""
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dim, depth, heads, patch, ddim, ddepth, dheads = PRESETS[a.preset]
    dev = torch.device(a.device)
    if a.mode == "pretrain":
        model = MAE(dim, depth, heads, patch, ddim, ddepth, dheads).to(dev)
        betas = (0.9, 0.95)
    else:
        model = ViT(dim, depth, heads, patch).to(dev)
        betas = (0.9, 0.999)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1 and "token" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim <= 1 or "token" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4, betas=betas)
    imgs = torch.randn(a.batch, 3, 32, 32, device=dev)
    labels = torch.randint(0, 10, (a.batch,), device=dev)
    model.train()

    def autocast():
        if a.dtype == "bf16":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        opt.zero_grad()
        with autocast():
            if a.mode == "pretrain":
                loss = model(imgs)
            else:
                loss = F.cross_entropy(model(imgs), labels, label_smoothing=0.1)
        loss.backward()
        opt.step()
        return loss.item()

    return model, step


def main():
    a = parser().parse_args()
    dev = torch.device(a.device)
    model, step = setup(a)
    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    secs = time.perf_counter() - t
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"pytorch {torch.__version__} preset {a.preset} mode {a.mode} batch {a.batch} steps {a.steps} device {a.device} dtype {a.dtype} threads {torch.get_num_threads()}")
    print(f"n_parameters {n_params}")
    print(f"images_per_second {a.steps * a.batch / secs:.1f}")
    print(f"last_loss {loss:.4f}")
    print(f"peak_rss_mib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
    if dev.type == "cuda":
        print(f"cuda_peak_memory_mib {torch.cuda.max_memory_allocated() / 2**20:.0f}")


if __name__ == "__main__":
    main()
