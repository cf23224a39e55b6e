"""Run a claim and write ``runs/claims/NAME/``: report.md (the command that regenerates it at the top),
verdict.json, results.csv / results.json (every raw number) and the figures.

A directory that already holds a report is kept: its files move to ``history/<its time>/`` first, so a new
run never loses an old one.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .registry import CLAIMS_DIR, Claim, format_budget, get_claim

OUTPUTS = ("report.md", "verdict.json", "results.csv", "results.json")


def command_for(claim: Claim, budget_s: float, seeds: int, data: str, threads: int | None) -> str:
    parts = ["classicnets claims run", claim.name]
    if claim.kind == "training":
        parts += ["--budget", format_budget(budget_s), "--seeds", str(seeds)]
        if data != "fashion-mnist":
            parts += ["--data", data]
        if threads:
            parts += ["--threads", str(threads)]
    return " ".join(parts)


def run_claim(name: str, *, budget: float | None = None, seeds: int = 3, data: str = "fashion-mnist",
              data_dir: str | None = None, device: str = "auto", threads: int | None = None,
              root: str | Path | None = None, say: Callable[[str], None] = print, cache: dict | None = None) -> dict:  # fmt: skip
    """Run claim ``name`` and write its directory under ``root`` (default runs/claims); returns verdict.json's
    record. ``budget`` in seconds (default: the claim's); ``seeds``: how many (0, 1, ...)."""
    import torch

    from ..studies.setup import resolve_device, torch_threads
    from .experiment import Context

    claim = get_claim(name)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds must be a positive integer (how many seeds), got {seeds!r}")
    budget_s = float(budget if budget is not None else claim.default_budget)
    out = Path(root or CLAIMS_DIR) / claim.name
    _keep_previous(out)
    out.mkdir(parents=True, exist_ok=True)
    command = command_for(claim, budget_s, seeds, data, threads)
    ctx = Context(claim, budget_s, tuple(range(seeds)), data, data_dir, resolve_device(device), threads, out, say,
                  cache if cache is not None else {})  # fmt: skip
    module, function = claim.runner.split(":")
    runner = getattr(importlib.import_module(f"classicnets.claims.{module}"), function)
    t0 = time.perf_counter()
    with torch_threads(threads):
        outcome = runner(ctx)
        used_threads = torch.get_num_threads()
    elapsed = time.perf_counter() - t0
    record = {
        "claim": claim.name, "net": claim.net, "kind": claim.kind, "statement": claim.statement,
        "verdict": outcome.verdict, "headline": outcome.reading[0] if outcome.reading else "",
        "reading": outcome.reading, "settle": outcome.settle, "numbers": outcome.numbers,
        "budget_s": budget_s if claim.kind == "training" else None,
        "seeds": list(ctx.seeds) if claim.kind == "training" else None, "data": data if claim.kind == "training" else None,
        "plan": outcome.plan, "elapsed_s": round(elapsed, 1), "threads": used_threads, "device": str(ctx.device),
        "torch": torch.__version__, "command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    _write(out, claim, outcome, record)
    return record


def _keep_previous(out: Path) -> None:
    """Move an earlier run's files into ``history/<its date>/`` (never overwritten, never deleted)."""
    old = out / "verdict.json"
    if not old.exists():
        return
    try:
        stamp = json.loads(old.read_text()).get("date", "")
    except ValueError:
        stamp = ""
    stamp = (stamp or datetime.fromtimestamp(old.stat().st_mtime, timezone.utc).isoformat()).replace(":", "")
    dest = out / "history" / stamp
    n = 1
    while dest.exists():
        dest, n = out / "history" / f"{stamp}-{n}", n + 1
    dest.mkdir(parents=True)
    for f in out.iterdir():
        if f.is_file():
            shutil.move(str(f), dest / f.name)


def _write(out: Path, claim: Claim, outcome, record: dict) -> None:
    from ..studies.report import write_csv, write_json, write_text

    if outcome.rows:
        columns = list(dict.fromkeys(k for r in outcome.rows for k in r))
        write_csv(out / "results.csv", outcome.rows, columns)
    write_json(out / "results.json", {"numbers": outcome.numbers, "plan": outcome.plan, **outcome.raw})
    write_text(out / "report.md", render_report(claim, outcome, record))
    write_json(out / "verdict.json", record)  # last: its presence means the run finished


def render_report(claim: Claim, outcome, record: dict) -> str:
    lines = [f"# Claim `{claim.name}` ({claim.net}): {claim.statement}", "",
             f"Regenerate every number below: `{record['command']}`", "",
             f"**Verdict: {outcome.verdict}**" + (f". What would settle it: {outcome.settle}." if outcome.settle else ""),
             "", f"- Source: {claim.source}", f"- Experiment: {claim.experiment}"]  # fmt: skip
    if claim.kind == "training":
        plan = outcome.plan or {}
        bought = (f"{plan['subset']:,} training images x {plan['epochs']} epochs per variant and seed, test error on "
                  f"{plan['test_size']:,} test images" if "subset" in plan else
                  ", ".join(f"{k}: {v}" for k, v in plan.items() if not isinstance(v, dict)) or "see results.json")  # fmt: skip
        lines += [f"- Budget {format_budget(record['budget_s'])}, seeds {record['seeds']}, data {record['data']}: "
                  f"{bought}", f"- Ran in {record['elapsed_s']:.0f} s on {record['device']} with {record['threads']} "
                  f"threads, torch {record['torch']}, {record['date']}"]  # fmt: skip
    lines += ["", "## Reading", ""] + [f"- {r}" for r in outcome.reading]
    for title, table in outcome.tables:
        lines += ["", f"## {title}", "", table]
    if outcome.figures:
        lines += ["", "## Figures", ""] + [f"![{f.stem}]({f.name})" for f in outcome.figures]
    files = [f for f in OUTPUTS[1:] if f != "results.csv" or outcome.rows]
    lines += ["", "Raw numbers: " + ", ".join(f"`{f}`" for f in files) + ".", ""]
    return "\n".join(lines)
