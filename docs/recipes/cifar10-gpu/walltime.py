"""The GPU recipe's wall time, projected from a measurement (README.md here).

Either from one measured epoch of each stage (what scripts/gpu-check writes:
log.txt lines with `epoch_seconds` and `images_per_second`):

    python3 docs/recipes/cifar10-gpu/walltime.py \\
        --pretrain-log OUT/pretrain-log.txt --finetune-log OUT/finetune-log.txt

or from bench numbers alone (`maelab-worker bench ... --precision bf16` at the
recipe's batch sizes), which leave out data loading and evaluation:

    python3 docs/recipes/cifar10-gpu/walltime.py --pretrain-ips 9000 --finetune-ips 4000

Per stage: epochs x seconds per epoch, where a measured epoch's seconds are
taken whole (training, evaluation, reconstructions, checkpoint), and a bench's
are train_images / images_per_second.
"""
import argparse
import json
import pathlib
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
TRAIN_IMAGES = 50_000  # CIFAR-10's training split


def epochs(stage):
    return tomllib.loads((HERE / f"{stage}.toml").read_text())["epochs"]


def measured(log):
    rows = [json.loads(line) for line in pathlib.Path(log).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "epoch_seconds" in r]
    if not rows:
        raise SystemExit(f"{log}: no epoch row (did the epoch run fail?)")
    return rows[-1]


def hours(seconds):
    return f"{seconds / 3600:.1f} h"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for stage in ("pretrain", "finetune"):
        ap.add_argument(f"--{stage}-log", help="log.txt of one measured epoch")
        ap.add_argument(f"--{stage}-ips", type=float, help="bench images/s at the recipe's batch")
    a = ap.parse_args()
    total = 0.0
    for stage in ("pretrain", "finetune"):
        n = epochs(stage)
        log, ips = getattr(a, f"{stage}_log"), getattr(a, f"{stage}_ips")
        if log:
            row = measured(log)
            per_epoch = row["epoch_seconds"]
            how = (f"{per_epoch:.1f} s per measured epoch "
                   f"({row.get('images_per_second', 0):.0f} images/s training)")
        elif ips:
            per_epoch = TRAIN_IMAGES / ips
            how = f"{TRAIN_IMAGES} images / {ips:.0f} images/s (bench; no loading, no evaluation)"
        else:
            raise SystemExit(f"give --{stage}-log or --{stage}-ips")
        total += n * per_epoch
        print(f"{stage}: {n} epochs x {how} = {hours(n * per_epoch)}")
    print(f"recipe (pretrain + finetune): {hours(total)}")


if __name__ == "__main__":
    main()
