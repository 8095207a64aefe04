"""Where a training step's time goes, per ATen op, in the PyTorch eager reference
(benches/pytorch_mae.py's models and step, as that script runs them):
torch.profiler over a few full steps after warm-up, sorted by self CPU time. The
reference is the same program as `maelab-worker bench` op for op outside the
Linear and attention layers, so this separates the matmuls from the work between
them without perf's unwinding.

    python benches/pytorch_op_profile.py --mode pretrain --threads 2 --steps 4
"""
import importlib.util
import os

from torch.profiler import ProfilerActivity, profile


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("pytorch_mae", os.path.join(here, "pytorch_mae.py"))
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ap = ref.parser()
    ap.add_argument("--rows", type=int, default=25, help="ops listed")
    a = ap.parse_args()
    _, step = ref.setup(a)
    for _ in range(a.warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=50))


if __name__ == "__main__":
    main()
