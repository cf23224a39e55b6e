"""``classicnets claims``: list the case study's claims with their last verdict; ``claims run NAME|all`` runs
them (torch is imported only to run)."""

from __future__ import annotations

import argparse
import sys

from ..claims.registry import CLAIMS, claim_names, format_budget, get_claim, parse_budget


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("claims", help="the case study, tested: every claim about the classic nets, with a verdict")
    p.add_argument("--root", default=None, metavar="DIR", help="where the reports live (default runs/claims)")
    p.set_defaults(handler=cmd_list)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    r = actions.add_parser("run", help="run one claim (or all) and write runs/claims/NAME/ (report.md, verdict)")
    r.add_argument("name", help=f"a claim ({', '.join(claim_names())}) or 'all'")
    r.add_argument("--budget", default=None, help="wall-time budget per claim, e.g. 90s, 10m (default: the claim's)")
    r.add_argument("--seeds", type=int, default=3, help="how many seeds (0, 1, ...); verdicts need >= 2 (default 3)")
    r.add_argument("--data", default="fashion-mnist", help="fashion-mnist (default), mnist, mnist-5k, cifar10, ...")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--device", default="auto")
    r.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    r.add_argument("--root", default=None, metavar="DIR", help="where to write (default runs/claims)")
    for key, what in (("subset", "training images per run"), ("epochs", "epochs per run"),
                      ("steps", "steps per run (relu-6x, identity, gradient-flow)")):  # fmt: skip
        r.add_argument(f"--{key}", type=int, default=None, help=f"pin the plan: {what} instead of sizing to --budget "
                       "(a report's first line gives the pinned command that replays it)")  # fmt: skip
    r.set_defaults(handler=cmd_run)
    d = actions.add_parser("report", help="write the case study (markdown, plus each claim's last run copied beside it) from runs/claims")
    d.add_argument("--out", default="docs/case-study.md", help="the markdown file (default %(default)s)")
    d.add_argument("--root", default=None, metavar="DIR", help="where the reports live (default runs/claims)")
    d.set_defaults(handler=cmd_report)


def cmd_list(args: argparse.Namespace) -> int:
    from pathlib import Path

    root = Path(args.root) if args.root else None
    print(f"{'claim':<18} {'net':<8} {'kind':<9} {'budget':>7}  status")
    for c in CLAIMS:
        status = c.status(root)
        budget = format_budget(c.default_budget) if c.default_budget else "-"
        if status is None:
            state = "not run"
        else:
            seeds = f", {len(status['seeds'])} seeds, {format_budget(status['budget_s'])}" if status.get("seeds") else ""
            state = f"{status['verdict'].upper()} ({status.get('date', '')[:10]}{seeds})"
        print(f"{c.name:<18} {c.net:<8} {c.kind:<9} {budget:>7}  {state}")
        print(f"{'':<18} {c.statement}")
    print("\nrun one: classicnets claims run NAME [--budget 10m] [--seeds 3]; all: classicnets claims run all")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    names = claim_names() if args.name == "all" else [get_claim(args.name).name]
    budget = parse_budget(args.budget) if args.budget is not None else None
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    pin = {k: getattr(args, k) for k in ("subset", "epochs", "steps") if getattr(args, k) is not None}
    if any(v < 1 for v in pin.values()):
        raise ValueError(f"--subset, --epochs and --steps must be >= 1, got {pin}")
    from ..claims.run import run_claim
    from .errors import UserError

    cache: dict = {}
    verdicts = []
    for name in names:
        print(f"== {name}: {get_claim(name).statement}", flush=True)
        try:
            record = run_claim(name, budget=budget, seeds=args.seeds, data=args.data, data_dir=args.data_dir,
                               device=args.device, threads=args.threads, root=args.root, cache=cache, pin=pin,
                               say=lambda m: print(f"   {m}", flush=True))  # fmt: skip
        except RuntimeError as exc:  # a net that diverged: one line, the last report kept
            raise UserError(f"{name}: {exc}; its last report is unchanged") from None
        for line in record["reading"]:
            print(f"   - {line}")
        settle = f" (would settle: {record['settle']})" if record.get("settle") else ""
        print(f"   VERDICT: {record['verdict']}{settle}  [{record['elapsed_s']:.0f} s]", flush=True)
        verdicts.append((name, record["verdict"]))
    if len(verdicts) > 1:
        print("\n" + "\n".join(f"{n:<18} {v}" for n, v in verdicts))
    root = args.root or "runs/claims"
    print(f"reports: {root}/<claim>/report.md", file=sys.stdout)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..claims.casestudy import write_case_study

    out = write_case_study(Path(args.out), Path(args.root) if args.root else None)
    print(f"case study: {out}")
    return 0
