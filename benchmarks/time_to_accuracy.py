"""Wall time from start to a target test accuracy on Fashion-MNIST: classicnets vs the standard recipe.

    python benchmarks/time_to_accuracy.py --model lenet5_modern                  # 91.0%, 3 seeds, both paths
    python benchmarks/time_to_accuracy.py --model resnet20 --paths classicnets   # 94.0%, 3 seeds
    python benchmarks/time_to_accuracy.py --model lenet5_modern --set label_smoothing=0 --paths classicnets

The clock starts before the data is loaded and stops when the end-of-epoch test evaluation first reaches
``--target``; evaluation time is inside the wall time and also reported on its own. Test accuracy is
measured only at the end of each epoch, and only to decide when to stop (as airbench and the DAWNBench
time-to-accuracy rules do): the whole 60,000-image training set is used for training (no validation
split), since nothing is being selected.

* ``classicnets``: a recipe (``--recipe``, default ``fashion-lenet-fast`` / ``fashion-resnet20``) run
  through the library's own pieces: ``build_data`` (InMemoryLoader, batched pad/crop/flip on uint8),
  ``create_model``, the engine's optimizer, ``lr_at`` schedule, autocast and ``evaluate`` (test-time flip
  if the recipe asks), with the training step of ``classicnets.train.engine.fit`` (``train_step``). No checkpoints or logs
  are written, so the figure is the training itself.
* ``standard``: the same architecture, optimizer, schedule and epochs, but torchvision-style per-sample
  transforms in a DataLoader, fp32, NCHW, no label smoothing and no test-time flip; evaluation through a
  DataLoader too.

``--eval-from K`` evaluates the classicnets path only after epoch K onward (and after the last epoch): a
speedrun recipe reaches its target only at the end of its schedule, and each evaluation is in the clock.
``--max-minutes M`` ends a run (either path) at its first evaluation past M minutes and reports it as
"not reached in M min": the standard recipe beside a speedrun need not run to the end.

Each (path, seed) runs in a fresh subprocess, paths alternating per seed, and the report gives the median
and the spread (min-max) over seeds, with the load average before and after each run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common as C  # noqa: E402

DEFAULTS = {
    "lenet5_modern": ("fashion-lenet-fast", 0.91),
    "resnet20": ("fashion-resnet20", 0.94),
    "resnet18": ("fashion-resnet18", 0.95),  # the GPU target (torchvision's ResNet-18, CIFAR stem)
    "speedrun_resnet": ("fashion-speedrun", 0.94),  # classicnets.models.speedrun (issue 15's speedrun)
    "speedrun_plain": ("fashion-speedrun", 0.94),
}


def _config(args: argparse.Namespace, seed: int):
    from classicnets.train.config import load_recipe, parse_set

    config = load_recipe(args.recipe)
    config = parse_set([f"model={args.model}", "val_fraction=0", f"seed={seed}", "data=fashion-mnist",
                        *(args.set or [])], config)
    return config


def run_classicnets(args: argparse.Namespace, seed: int) -> dict:
    t_start = time.perf_counter()
    import torch
    from torch import nn

    from classicnets import create_model, model_card
    from classicnets.train.data import build_data
    from classicnets.train.engine import build_optimizer
    from classicnets.train.runtime import DistInfo, amp_dtype, resolve_device, seed_everything
    from classicnets.train.schedule import lr_at
    from classicnets.train.step import EMA, evaluate, set_lr, train_step

    config = _config(args, seed)
    device = resolve_device(args.device)
    seed_everything(config.seed, False)
    data = build_data(config, model_card(config.model), device, DistInfo())
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=len(data.classes), in_chans=data.in_chans,
                         **config.model_kwargs).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config, model)
    train_model = torch.compile(model) if config.compile else model
    dtype = amp_dtype(config.amp, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    steps_per_epoch = len(data.train)
    total_steps = min(config.epochs * steps_per_epoch, config.max_steps or math.inf)
    ema = EMA(model, config.ema_decay) if config.ema_decay else None  # evaluated instead of the model, as fit
    epochs = math.ceil(total_steps / steps_per_epoch)
    step, eval_s, history, reached = 0, 0.0, [], None
    for epoch in range(epochs):
        data.train.set_epoch(epoch)
        model.train()
        for x, y in data.train:  # the step of classicnets.train.engine.fit
            if step >= total_steps:
                break
            set_lr(optimizer, lr_at(step, config, steps_per_epoch, total_steps))
            train_step(model, optimizer, x, y, loss_fn=loss_fn, amp=dtype, forward=train_model, ema=ema)
            step += 1
        if not _evaluates(args, epoch, epochs, t_start):
            continue
        t0 = time.perf_counter()
        acc = evaluate(ema.model if ema else model, data.test, len(data.classes), amp=dtype,
                       tta_flip=config.tta_flip)["acc"]
        eval_s += time.perf_counter() - t0
        reached = _record_epoch(history, epoch, acc, t_start, args.target)
        if reached is not None or _out_of_time(args, t_start):
            break
    return {"reached_s": reached, "eval_s": eval_s, "epochs": history[-1][0], "final_acc": history[-1][1],
            "capped": reached is None and _out_of_time(args, t_start), "history": history,
            "config": config.to_dict()}


def _evaluates(args: argparse.Namespace, epoch: int, epochs: int, t_start: float) -> bool:
    """Evaluate after this (0-based) epoch? From epoch ``--eval-from`` on, after the last one, and after any
    epoch that ends past the ``--max-minutes`` cap (so a capped run still reports where it got)."""
    return epoch + 1 >= args.eval_from or epoch + 1 == epochs or _out_of_time(args, t_start)


def _out_of_time(args: argparse.Namespace, t_start: float) -> bool:
    return args.max_minutes is not None and time.perf_counter() - t_start > 60 * args.max_minutes


def _record_epoch(history: list, epoch: int, acc: float, t_start: float, target: float) -> float | None:
    """Append (epoch, test acc, elapsed s), print it, and return the elapsed time if the target is reached."""
    history.append((epoch + 1, round(acc, 4), round(time.perf_counter() - t_start, 2)))
    print(f"  epoch {epoch + 1}: test {acc:.2%} at {history[-1][2]:.1f} s; load {C.load()}", file=sys.stderr,
          flush=True)
    return time.perf_counter() - t_start if acc >= target else None


def run_standard(args: argparse.Namespace, seed: int) -> dict:
    """The same architecture, optimizer and schedule, the standard way (see the module docstring)."""
    t_start = time.perf_counter()
    import torch
    import torch.nn.functional as F

    from classicnets import model_card
    from classicnets.data import load_dataset
    from classicnets.data.inputs import plan_input
    from classicnets.data.arrays import seeded_generator
    from classicnets.train.engine import build_optimizer
    from classicnets.train.schedule import lr_at

    config = _config(args, seed)
    device = torch.device(args.device)
    torch.manual_seed(config.seed)
    s = load_dataset("fashion-mnist", quiet=True)
    min_size = model_card(config.model).min_input_size[0]  # the same input plan as classicnets: pad 28 -> 32 only
    pad_to = plan_input(s.shape[-1], min_size, config.image_size, config.model).pad_to  # where the net needs it
    images, labels = s.train.images, s.train.labels
    if config.subset is not None and config.subset < len(labels):  # --set subset=N: the same N images
        pick = torch.randperm(len(labels), generator=seeded_generator(config.seed, "subset"))[: config.subset]
        images, labels = images[pick.sort().values], labels[pick.sort().values]
    train = C.standard_loader(images, labels, config.batch_size, pad_to=pad_to,
                              crop_padding=config.crop_padding, hflip=config.hflip, mean=s.mean, std=s.std,
                              num_workers=args.workers, seed=config.seed)
    test = C.standard_loader(s.test.images, s.test.labels, 1000, pad_to=pad_to, crop_padding=0, hflip=False,
                             mean=s.mean, std=s.std, num_workers=args.workers, shuffle=False)
    torch.manual_seed(config.seed)
    model = C.standard_model(config.model, 10, 1, **config.model_kwargs).to(device)
    optimizer = build_optimizer(config, model)
    steps_per_epoch = len(train)
    total_steps = config.epochs * steps_per_epoch
    step, eval_s, history, reached = 0, 0.0, [], None
    for epoch in range(config.epochs):
        model.train()
        for x, y in train:  # (evaluated every epoch: --eval-from is the classicnets path's, as its recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config, steps_per_epoch, total_steps)
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
        t0 = time.perf_counter()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
        acc = correct / len(test.dataset)
        eval_s += time.perf_counter() - t0
        reached = _record_epoch(history, epoch, acc, t_start, args.target)
        if reached is not None or _out_of_time(args, t_start):
            break
    return {"reached_s": reached, "eval_s": eval_s, "epochs": history[-1][0], "final_acc": history[-1][1],
            "capped": reached is None and _out_of_time(args, t_start), "history": history}


def child(args: argparse.Namespace) -> None:
    C.set_threads(args.threads)
    fn = run_classicnets if args.child_path == "classicnets" else run_standard
    out = fn(args, args.child_seed)
    print("RESULT " + json.dumps(out))


def fmt_s(v: float | None, cap: float | None = None) -> str:
    if v is None:
        return "not reached" + (f" in {cap:g} min" if cap is not None else "")
    return f"{v:.1f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="lenet5_modern", choices=sorted(DEFAULTS))
    p.add_argument("--recipe", default=None, help="classicnets recipe (name or path); default per model")
    p.add_argument("--target", type=float, default=None, help="test accuracy to reach (0.91 or 91)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--paths", default="classicnets,standard", help="classicnets, standard or both")
    p.add_argument("--set", action="append", help="override a recipe key (classicnets and standard), key=value")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the standard path")
    p.add_argument("--allocator", choices=("jemalloc", "glibc"), default="jemalloc")
    p.add_argument("--eval-from", type=int, default=1, metavar="K",
                   help="classicnets path: evaluate only after epoch K onward (and after the last); default 1")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="stop a run after the first evaluation past M minutes (it reports 'not reached in M min')")
    p.add_argument("--json", default=None)
    p.add_argument("--child-path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-seed", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    recipe, target = DEFAULTS[args.model]
    args.recipe = args.recipe or recipe
    args.target = target if args.target is None else (args.target / 100 if args.target > 1 else args.target)
    C.ensure_allocator(args.allocator)
    if args.child_path:
        return child(args)

    seeds = [int(s) for s in args.seeds.split(",")]
    paths = args.paths.split(",")
    print(f"# {C.machine_line(args.device)}; threads {args.threads or 'all cores'}; load {C.load()}")
    print(f"# command: {' '.join(['python', *sys.argv])}")
    print(f"# {args.model} to {args.target:.1%} test accuracy on Fashion-MNIST; recipe {args.recipe} "
          f"{' '.join(args.set or [])}")
    runs: dict[str, list[dict]] = {path: [] for path in paths}
    for seed in seeds:
        for path in paths:
            cmd = [sys.executable, *sys.argv, "--child-path", path, "--child-seed", str(seed)]
            before = C.load()
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr: per-epoch progress
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(out.stdout[-2000:], file=sys.stderr)
                raise SystemExit(f"{path} seed {seed} failed")
            r = json.loads(line[len("RESULT "):])
            r.update(seed=seed, load_before=before, load_after=C.load())
            runs[path].append(r)
            curve = " ".join(f"{e}:{a:.2%}@{t:.0f}s" for e, a, t in r["history"])
            print(f"{path:<12} seed {seed}: {fmt_s(r['reached_s'], args.max_minutes if r['capped'] else None)} ({r['epochs']} epochs, eval {r['eval_s']:.1f} s, "
                  f"final {r['final_acc']:.2%}); load {before} -> {r['load_after']}\n    {curve}", flush=True)
    print()
    summary = {}
    for path, rs in runs.items():
        times = [r["reached_s"] for r in rs]
        ok = [t for t in times if t is not None]
        evals = [r["eval_s"] for r in rs]
        if len(ok) == len(times):
            med = statistics.median(ok)
            line = f"median {med:.1f} s (min {min(ok):.1f}, max {max(ok):.1f}; spread {max(ok) - min(ok):.1f} s)"
        else:
            med = None
            caps = [args.max_minutes if r["capped"] else None for r in rs]
            line = f"reached in {len(ok)}/{len(times)} seeds ({', '.join(fmt_s(t, c) for t, c in zip(times, caps))})"
        summary[path] = {"median_s": med, "times": times, "eval_s": evals}
        print(f"{path:<12} {args.model} to {args.target:.1%}: {line}; of which evaluation median "
              f"{statistics.median(evals):.1f} s; epochs {[r['epochs'] for r in rs]}")
    if "classicnets" in summary and "standard" in summary and summary["classicnets"]["median_s"] and \
            summary["standard"]["median_s"]:
        print(f"speed-up: {summary['standard']['median_s'] / summary['classicnets']['median_s']:.2f}x")
    print(f"# load now {C.load()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
