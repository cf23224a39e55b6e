"""Train, over three seeds, every weight classicnets ships, and package them into classicnets/weights/.

    python scripts/train_weights.py train   [--runs DIR] [--only NAME ...]   # fit each (weight, seed)
    python scripts/train_weights.py package [--runs DIR]                      # safetensors + weights.json

Each weight is a recipe run three times (seeds 0, 1, 2) with --deterministic and one thread (the summation
order, so the weights, depend on the thread count; one thread also keeps a shared machine fast). ``package`` evaluates every
seed's best.pt on the test set in fp32 (no autocast, so the figure is the same on every CPU), ships the
seed whose accuracy is the median, and records the mean and standard deviation over the three seeds, the
shipped seed's own accuracy, the recipe, the resolved config, the SHA-256 of the file and the command that
reproduces it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)

# name -> (recipe, overrides). The name is "<dataset>:<model>", as --weights and pretrained= take it.
SPECS: dict[str, tuple[str, dict]] = {
    "fashion-mnist:lenet5_modern": ("fashion-fast", {}),
    "fashion-mnist:lenet5": ("lenet5-fast", {}),
    "fashion-mnist:resnet20": ("fashion-resnet20", {"epochs": 4}),
    "fashion-mnist:plain20": ("fashion-resnet20", {"model": "plain20", "epochs": 4}),
    "mnist-5k:lenet5_modern": ("fashion-fast", {"data": "mnist-5k", "hflip": False, "epochs": 30}),
    "mnist-5k:lenet5": ("lenet5-fast", {"data": "mnist-5k", "hflip": False, "epochs": 30}),
}


def command_line(name: str, seed: int) -> str:
    recipe, overrides = SPECS[name]
    sets = " ".join(f"--set {k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items())
    return f"classicnets train --recipe {recipe} {sets} --seed {seed} --threads 1 --deterministic".replace("  ", " ")


def run_name(name: str, seed: int) -> str:
    return f"{name.replace(':', '-')}-seed{seed}"


def train(runs: Path, only: list[str]) -> None:
    from classicnets.train.config import config_from_dict, load_recipe
    from classicnets.train.engine import fit

    for name in only or SPECS:
        recipe, overrides = SPECS[name]
        for seed in SEEDS:
            if (runs / run_name(name, seed) / "result.json").is_file():
                print(f"{run_name(name, seed)}: done already", flush=True)
                continue
            config = config_from_dict({**overrides, "seed": seed, "deterministic": True, "threads": 1, "out_dir": str(runs),
                                       "name": run_name(name, seed), "progress": False, "tensorboard": False},
                                      base=load_recipe(recipe))  # fmt: skip
            result = fit(config)
            print(f"{run_name(name, seed)}: test {result.test_acc:.4f} in {result.wall_time_s:.0f} s", flush=True)


def portable(config: dict) -> dict:
    """The resolved config without what names this machine's folders (out_dir, the run name)."""
    return {k: v for k, v in config.items() if k not in ("out_dir", "name")}


def package(runs: Path) -> None:
    """Evaluate every seed in fp32, ship the median seed of each weight, write files/ and weights.json."""
    import dataclasses
    import hashlib
    import json
    import statistics

    import torch
    from safetensors.torch import save_file

    from classicnets.checkpoint import model_from_checkpoint
    from classicnets.inference import evaluate_checkpoint
    from classicnets.weights import MANIFEST, WEIGHTS_DIR, WeightRecord

    torch.use_deterministic_algorithms(True)
    files = WEIGHTS_DIR / "files"
    files.mkdir(exist_ok=True)
    records = []
    for name in SPECS:
        accs, preds = {}, {}
        for seed in SEEDS:
            best = runs / run_name(name, seed) / "best.pt"
            m = evaluate_checkpoint(best, device="cpu", amp="off", plot=False)  # fp32: the same on every CPU
            accs[seed], preds[seed] = m["acc"], m["pred"]
        ranked = sorted(SEEDS, key=lambda s: accs[s])
        seed = ranked[len(ranked) // 2]  # the median seed is the one shipped
        model, run, state = model_from_checkpoint(runs / run_name(name, seed) / "best.pt")
        path = files / f"{name.replace(':', '-')}.safetensors"
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(path), metadata={"format": "classicnets", "weight": name})
        recipe, _ = SPECS[name]
        records.append(WeightRecord(
            name=name, file=path.name, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            run=dataclasses.replace(run, amp="off"), recipe=recipe, config=portable(state["config"]), seed=seed,
            test_acc=accs[seed], test_acc_mean=statistics.mean(accs.values()), test_acc_std=statistics.stdev(accs.values()),
            seed_accs=accs, command=command_line(name, seed),
            test_predictions="".join(chr(48 + int(p)) for p in preds[seed]),
        ).to_dict())  # fmt: skip
        print(f"{name}: ship seed {seed} ({accs[seed]:.2%}); mean {statistics.mean(accs.values()):.2%} "
              f"+- {statistics.stdev(accs.values()):.2%} over seeds {list(SEEDS)}; {path.stat().st_size / 1e6:.2f} MB")
    MANIFEST.write_text(json.dumps(records, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("train", "package"))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "weights")
    parser.add_argument("--only", nargs="*", default=[], choices=list(SPECS))
    args = parser.parse_args(argv)
    if args.phase == "train":
        train(args.runs, args.only)
    else:
        package(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
