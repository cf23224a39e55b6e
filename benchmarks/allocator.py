"""glibc malloc vs jemalloc: the same throughput run in alternating subprocesses, medians over rounds.

    python benchmarks/allocator.py --models resnet20 --rounds 3 --threads 1
    python benchmarks/allocator.py --models lenet5_modern,resnet20,resnet56 --rounds 3

Besides glibc vs jemalloc for each path, it prints the ratio of the two recipes *as each is run by default*:
the standard recipe under glibc malloc (plain ``python``) against classicnets under jemalloc (what the
``classicnets`` training commands re-exec themselves under), next to the same-allocator ratios.

The allocator is chosen when a process starts (LD_PRELOAD), so it cannot be switched inside one process:
each round runs ``throughput.py --allocator glibc`` and ``--allocator jemalloc`` one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="lenet5_modern,resnet20")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    print(f"# load {C.load()}; command: python {' '.join(sys.argv)}")
    rates: dict[tuple[str, str, str], list[float]] = {}
    for rnd in range(args.rounds):
        for alloc in ("glibc", "jemalloc") if rnd % 2 == 0 else ("jemalloc", "glibc"):  # cancel drift
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                cmd = [sys.executable, str(HERE / "throughput.py"), "--quick", "--no-memory", "--repeats", "2",
                       "--models", args.models, "--allocator", alloc, "--json", f.name]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
                subprocess.run(cmd, check=True, capture_output=True, env=env)
                res = json.loads(Path(f.name).read_text())
            for model, m in res["models"].items():
                for row in m["rows"]:
                    rates.setdefault((model, row["variant"], alloc), []).append(row["img_s"])
            print(f"round {rnd + 1} {alloc}: done; load {C.load()}", flush=True)
    print(f"\n{'model':<15} {'variant':<14} {'glibc img/s':>12} {'jemalloc img/s':>15} {'ratio':>6}")
    for model in args.models.split(","):
        for variant in ("standard", "classicnets"):
            g, j = rates[(model, variant, "glibc")], rates[(model, variant, "jemalloc")]
            print(f"{model:<15} {variant:<14} {statistics.median(g):>12,.0f} {statistics.median(j):>15,.0f} "
                  f"{statistics.median(j) / statistics.median(g):>6.2f}   (glibc {[round(x) for x in g]}, "
                  f"jemalloc {[round(x) for x in j]})")
    # The two recipes as each is run by default: `python train.py` uses glibc malloc; `classicnets train`
    # re-execs itself under jemalloc (classicnets/commands/__init__.py). Same rounds, so the same load.
    print(f"\n{'model':<15} {'standard, glibc':>16} {'classicnets, jemalloc':>22} {'ratio':>6} "
          f"{'ratio, both jemalloc':>21} {'ratio, both glibc':>18}")
    for model in args.models.split(","):
        med = {(v, a): statistics.median(rates[(model, v, a)]) for v in ("standard", "classicnets")
               for a in ("glibc", "jemalloc")}
        print(f"{model:<15} {med['standard', 'glibc']:>16,.0f} {med['classicnets', 'jemalloc']:>22,.0f} "
              f"{med['classicnets', 'jemalloc'] / med['standard', 'glibc']:>6.2f} "
              f"{med['classicnets', 'jemalloc'] / med['standard', 'jemalloc']:>21.2f} "
              f"{med['classicnets', 'glibc'] / med['standard', 'glibc']:>18.2f}")
    print(f"# load {C.load()}")


if __name__ == "__main__":
    main()
