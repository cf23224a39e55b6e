"""Run a claim and write ``runs/claims/NAME/``: report.md (the command that regenerates it at the top),
verdict.json, results.csv / results.json (every raw number) and the figures.

A directory that already holds a report is kept: its files move to ``history/<its time>/`` first, so a new
run never loses an old one.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .registry import CLAIMS_DIR, NOT_AT_BUDGET, Claim, format_budget, get_claim

OUTPUTS = ("report.md", "verdict.json", "results.csv", "results.json")


def command_for(claim: Claim, budget_s: float, seeds: int, data: str, threads: int | None,
                pin: dict[str, int] | None = None) -> str:  # fmt: skip
    parts = ["classicnets claims run", claim.name]
    if claim.kind == "training":
        parts += ["--budget", format_budget(budget_s), "--seeds", str(seeds)]
        if data != "fashion-mnist":
            parts += ["--data", data]
        if threads:
            parts += ["--threads", str(threads)]
        for key, value in (pin or {}).items():
            parts += [f"--{key}", str(value)]
    return " ".join(parts)


def pinned(plan: dict | None) -> dict[str, int]:
    """The plan a run used, as the flags that replay it (sizing from measured speed varies between machines)."""
    plan = plan or {}
    if "subset" in plan and "epochs" in plan:
        return {"subset": int(plan["subset"]), "epochs": int(plan["epochs"])}
    if "steps" in plan:
        return {"steps": int(plan["steps"])}
    if plan and all(isinstance(v, dict) and "subset" in v for v in plan.values()):  # several trials (lrn)
        first = next(iter(plan.values()))
        return {"subset": int(first["subset"]), "epochs": int(first["epochs"])}
    return {}


def run_claim(name: str, *, budget: float | None = None, seeds: int = 3, data: str = "fashion-mnist",
              data_dir: str | None = None, device: str = "auto", threads: int | None = None,
              root: str | Path | None = None, say: Callable[[str], None] = print, cache: dict | None = None,
              pin: dict[str, int] | None = None) -> dict:  # fmt: skip
    """Run claim ``name`` and write its directory under ``root`` (default runs/claims); returns verdict.json's
    record. ``budget`` in seconds (default: the claim's); ``seeds``: how many (0, 1, ...); ``pin``: fix the
    plan (``subset``/``epochs`` or ``steps``) instead of sizing it to the budget.

    The run writes into a fresh hidden directory beside ``root/NAME`` and moves its files in only when it
    has finished: a run that fails (bad data, a diverging net, Ctrl-C) leaves the last report untouched."""
    import torch

    from ..studies.setup import resolve_device, torch_threads
    from .experiment import Context

    claim = get_claim(name)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds must be a positive integer (how many seeds), got {seeds!r}")
    budget_s = float(budget if budget is not None else claim.default_budget)
    out = Path(root or CLAIMS_DIR) / claim.name
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory; move it or pass another --root")
    dev = resolve_device(device)  # a bad device fails here, before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{claim.name}.partial-", dir=out.parent))
    try:
        ctx = Context(claim, budget_s, tuple(range(seeds)), data, data_dir, dev, threads, work, say,
                      cache if cache is not None else {}, dict(pin or {}))  # fmt: skip
        module, function = claim.runner.split(":")
        runner = getattr(importlib.import_module(f"classicnets.claims.{module}"), function)
        t0 = time.perf_counter()
        with torch_threads(threads):
            outcome = runner(ctx)
            used_threads = torch.get_num_threads()
        elapsed = time.perf_counter() - t0
        record = _record(claim, outcome, ctx, elapsed, used_threads, torch.__version__)
        _write(work, claim, outcome, record)
        _keep_previous(out)
        out.mkdir(exist_ok=True)
        for f in work.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record


def _record(claim: Claim, outcome, ctx, elapsed: float, threads: int, torch_version: str) -> dict:
    training = claim.kind == "training"
    n = len(ctx.seeds)
    verdict, settle = outcome.verdict, outcome.settle
    if training and n < 3 and verdict != NOT_AT_BUDGET:  # the rule: verdicts over >= 3 seeds
        outcome.reading.append(f"With {n} seed{'s' if n > 1 else ''} the data would say '{verdict}'; a verdict needs "
                               "3 or more seeds.")  # fmt: skip
        verdict, settle = NOT_AT_BUDGET, "3 or more seeds (--seeds 3)"
        outcome.verdict, outcome.settle = verdict, settle
    return {
        "claim": claim.name, "net": claim.net, "kind": claim.kind, "statement": claim.statement,
        "verdict": verdict, "headline": outcome.reading[0] if outcome.reading else "",
        "reading": outcome.reading, "settle": settle, "numbers": outcome.numbers,
        "budget_s": ctx.budget_s if training else None, "seeds": list(ctx.seeds) if training else None,
        "data": ctx.data if training else None, "plan": outcome.plan, "elapsed_s": round(elapsed, 1),
        "threads": threads, "device": str(ctx.device), "torch": torch_version,
        "command": command_for(claim, ctx.budget_s, n, ctx.data, ctx.threads),
        "replay": command_for(claim, ctx.budget_s, n, ctx.data, ctx.threads, pinned(outcome.plan)) if training else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip


def _keep_previous(out: Path) -> None:
    """Move an earlier run's files into ``history/<its date>/`` (never overwritten, never deleted)."""
    files = [f for f in out.iterdir() if f.is_file()] if out.is_dir() else []
    if not files:
        return
    try:
        stamp = json.loads((out / "verdict.json").read_text()).get("date", "")
    except (OSError, ValueError, AttributeError):
        stamp = ""
    if not isinstance(stamp, str) or not stamp:
        stamp = datetime.fromtimestamp(max(f.stat().st_mtime for f in files), timezone.utc).isoformat()
    stamp = "".join(ch for ch in stamp if ch.isalnum() or ch in "-+T.")
    dest, n = out / "history" / stamp, 1
    while dest.exists():
        dest, n = out / "history" / f"{stamp}-{n}", n + 1
    dest.mkdir(parents=True)
    for f in files:
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
             f"Regenerate every number below: `{record['replay'] or record['command']}`"
             + (f" (the plan this run bought with `{record['command']}`, pinned)" if record.get("replay") else ""), "",
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
