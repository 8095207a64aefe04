"""Side-by-side rounds of `maelab-worker bench` and the PyTorch eager reference
(benches/pytorch_mae.py, run as people run it: no allocator tunables), the two
alternating within each round, and the median ratio per mode. Prints a
markdown table for docs/benchmarks.md.

    python benches/trainer_rounds.py --worker target/release/maelab-worker --rounds 4
"""
import argparse
import os
import re
import statistics
import subprocess
import sys


def run(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    ips = float(re.search(r"^images_per_second ([\d.]+)", out, re.M).group(1))
    frac = re.search(r"^matmul_limit_fraction ([\d.]+)", out, re.M)
    return ips, (float(frac.group(1)) if frac else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", default="target/release/maelab-worker")
    ap.add_argument("--preset", default="vit-tiny/4")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--modes", default="pretrain,finetune")
    a = ap.parse_args()
    common = ["--preset", a.preset, "--batch", str(a.batch), "--steps", str(a.steps),
              "--warmup", str(a.warmup), "--threads", str(a.threads)]
    # The reference runs as installed: drop any malloc tunables of this shell.
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    here = os.path.dirname(os.path.abspath(__file__))
    print("| mode | round | maelab images/s | matmul-limit fraction | PyTorch eager images/s | ratio |")
    print("|---|---|---|---|---|---|")
    for mode in a.modes.split(","):
        ratios = []
        for r in range(1, a.rounds + 1):
            ours, frac = run([a.worker, "bench", "--mode", mode, *common], env)
            theirs, _ = run([sys.executable, os.path.join(here, "pytorch_mae.py"), "--mode", mode, *common], env)
            ratios.append(ours / theirs)
            f = f"{frac:.3f}" if frac is not None else "-"
            print(f"| {mode} | {r} | {ours:.1f} | {f} | {theirs:.1f} | {ours / theirs:.2f} |", flush=True)
        print(f"| **{mode} median** | | | | | **{statistics.median(ratios):.2f}** |", flush=True)


if __name__ == "__main__":
    main()
