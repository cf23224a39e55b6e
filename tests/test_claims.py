"""`classicnets claims`: the counting claims exactly, every training claim's experiment at a tiny budget (it
runs, writes a verdict, a figure and a report), the verdict rules, and the command line."""

from __future__ import annotations

import json
import math

import pytest

from classicnets.claims import CLAIMS, VERDICTS, get_claim, parse_budget, run_claim
from classicnets.claims.registry import NOT_AT_BUDGET, format_budget
from classicnets.claims import verdict as V
from classicnets.claims.verdict import Paired, paired
from classicnets.commands import main

TRAINING = [c.name for c in CLAIMS if c.kind == "training"]


def test_registry_is_complete_and_resolvable():
    import importlib

    names = [c.name for c in CLAIMS]
    assert len(names) == len(set(names))
    assert {c.net for c in CLAIMS} >= {"LeNet-5", "AlexNet", "VGG", "ResNet"}
    for c in CLAIMS:
        module, function = c.runner.split(":")
        assert callable(getattr(importlib.import_module(f"classicnets.claims.{module}"), function))
        assert (c.default_budget > 0) == (c.kind == "training")
    with pytest.raises(ValueError, match="did you mean activations"):
        get_claim("activation")


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("90", 90), ("10m", 600), ("1m30s", 90), ("1h", 3600),
                                           ("2.5m", 150), (45, 45)])  # fmt: skip
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("bad", ["", "ten minutes", "0", "-5m", "5x", "m"])
def test_parse_budget_refuses(bad):
    with pytest.raises(ValueError, match="budget"):
        parse_budget(bad)


def test_format_budget_round_trips():
    for s in (20.0, 60.0, 90.0, 600.0, 1275.0):
        assert parse_budget(format_budget(s)) == s


# ------------------------------------------------------------------------------------------ verdict rules
def test_paired_clear_is_a_one_sided_t_test_with_every_seed_agreeing():
    p = paired([0.30, 0.31, 0.32], [0.20, 0.21, 0.20])  # 10-12 points, every seed
    assert p.clear() and math.isclose(p.lower(), p.mean - 2.920 * p.se)
    assert not paired([0.30, 0.31, 0.19], [0.20, 0.21, 0.20]).clear()  # one seed disagrees
    assert not Paired((0.1,)).clear()  # one seed is never clear
    noisy = Paired((0.001, 0.05, 0.001))  # every seed agrees, but the mean (1.7 points) < t * se (4.8 points)
    assert noisy.wins == 3 and not noisy.clear()
    assert Paired((-0.1, -0.11, -0.12)).clear_opposite()
    assert not Paired((0.0004, 0.0005, 0.0006), resolution=0.0005).clear()  # below one test image


def test_at_most_rules_out_an_effect_only_when_the_upper_bound_is_below_it():
    assert Paired((0.001, -0.002, 0.0)).at_most(0.01)  # tight around zero: a 1-point gain is ruled out
    assert not Paired((0.002, 0.008, 0.018)).at_most(0.01)  # all positive, noisy: not shown to be small
    assert not Paired((0.03, -0.03, 0.0)).at_most(0.01)  # "no clear difference" is not "no difference"
    p = Paired((0.02, 0.01, 0.03))
    assert math.isclose(p.mean, 0.02) and math.isclose(p.sd, 0.01) and p.wins == 3
    assert p.text() == "+2.00 points (sd 1.00, 3/3 seeds)"


def test_decisions_cover_every_verdict():
    clear, reversed_, small, noisy = (Paired((0.05, 0.06, 0.055)), Paired((-0.05, -0.06, -0.055)),
                                      Paired((0.001, -0.001, 0.0)), Paired((0.03, -0.03, 0.01)))  # fmt: skip
    assert V.order({"a": clear, "b": clear}, True) == "holds"
    assert V.order({"a": clear, "b": noisy}, True) == "holds partly"
    assert V.order({"a": clear, "b": reversed_}, True) == "false"
    assert V.order({"a": noisy}, True) == NOT_AT_BUDGET
    assert V.order({"a": clear}, False) == NOT_AT_BUDGET  # nets that learned nothing decide nothing
    assert V.no_gain({"x": small, "y": small}, True) == "holds"  # LRN's gain ruled out in both nets
    assert V.no_gain({"x": clear, "y": clear}, True) == "false"  # LRN helps both
    assert V.no_gain({"x": small, "y": noisy}, True) == "holds partly"
    assert V.no_gain({"x": noisy, "y": noisy}, True) == NOT_AT_BUDGET  # not a "holds" by default
    assert V.beats(clear, True) == "holds" and V.beats(small, True) == "holds partly"
    assert V.beats(reversed_, True) == "false" and V.beats(noisy, True) == NOT_AT_BUDGET
    assert V.saturates(clear, small, True) == "holds"
    assert V.saturates(clear, noisy, True) == "holds partly"
    assert V.saturates(reversed_, small, True) == "false"
    assert V.saturates(noisy, noisy, True) == NOT_AT_BUDGET
    tiny_gain = Paired((0.004, 0.005, 0.006))
    assert V.marginal(tiny_gain, True)[0] == "holds"
    assert V.marginal(clear, True)[0] == "holds partly"  # B better by 5 points: not marginal
    assert V.marginal(reversed_, True)[0] == "holds partly"  # A better: A is enough, B's edge absent
    assert V.marginal(small, True)[0] == "holds partly"
    assert V.marginal(Paired((0.04, -0.04, 0.02)), True)[0] == NOT_AT_BUDGET


def test_fewer_than_three_seeds_never_decide():
    from classicnets.claims.experiment import Context, Outcome
    from classicnets.claims.run import _record

    for seeds, expected in (((0, 1), NOT_AT_BUDGET), ((0, 1, 2), "holds")):
        outcome = Outcome("holds", ["ReLU wins."], {})
        record = _record(get_claim("activations"), outcome, Context(get_claim("activations"), 60.0, seeds), 1.0, 1, "x")
        assert record["verdict"] == expected
        assert (record["settle"] == "3 or more seeds (--seeds 3)") == (len(seeds) < 3)


def test_plan_budget_buys_epochs_of_the_whole_set_or_a_subset():
    from classicnets.claims.experiment import plan_budget

    # 0.85 x 600 s / (3 seeds x 2 nets / 1000 img/s) = 85,000 images per run, each epoch also evaluates
    # 2 x 2000 images at a third of a training image's cost: 4 epochs of 85,000 / 4 - 1,333 = 19,916
    big = plan_budget(600, {"a": 1000.0, "b": 1000.0}, 3, 60_000)
    assert (big.subset, big.epochs, big.test_size) == (19_916, 4, 2000)
    full = plan_budget(6000, {"a": 1000.0}, 1, 60_000)  # 5.1M images: the whole set, capped at 60 epochs
    assert (full.subset, full.epochs) == (60_000, 60)
    tiny = plan_budget(1, {"a": 100.0}, 3, 60_000)
    assert tiny.subset == 256 and tiny.epochs == 1 and tiny.test_size == 200


# ------------------------------------------------------------------------------------------ counting, exact
def _numbers(tmp_path, name):
    record = run_claim(name, root=tmp_path, say=lambda m: None)
    assert record["verdict"] in VERDICTS
    assert (tmp_path / name / "report.md").read_text().startswith(f"# Claim `{name}`")
    assert f"`classicnets claims run {name}`" in (tmp_path / name / "report.md").read_text()
    assert json.loads((tmp_path / name / "verdict.json").read_text())["verdict"] == record["verdict"]
    return record


def test_lenet5_params(tmp_path):
    r = _numbers(tmp_path, "lenet5-params")
    assert r["numbers"] == {"lenet5": 60_000, "lenet5_modern": 61_706} and r["verdict"] == "holds"


def test_alexnet_size(tmp_path):
    r = _numbers(tmp_path, "alexnet-size")
    assert r["numbers"]["params"] == {"alexnet_paper": 60_965_224, "alexnet": 61_100_840}
    # conv1 55x55x96, conv2 27x27x256, conv3/conv4 13x13x384, conv5 13x13x256, fc6/fc7 4096, fc8 1000
    assert r["numbers"]["neurons"] == 55 * 55 * 96 + 27 * 27 * 256 + 2 * 13 * 13 * 384 + 13 * 13 * 256 + 2 * 4096 + 1000
    assert r["numbers"]["neurons"] == 659_272 and r["verdict"] == "holds"


def test_vgg16_fc_share(tmp_path):
    r = _numbers(tmp_path, "vgg16-fc-share")
    fc = (25088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert r["numbers"]["params"] == 138_357_544 and r["numbers"]["fc_params"] == fc == 123_642_856
    assert math.isclose(r["numbers"]["fc_share"], fc / 138_357_544) and r["verdict"] == "holds"


def test_shrink_grow_finds_alexnet_conv5(tmp_path):
    r = _numbers(tmp_path, "shrink-grow")
    assert r["verdict"] == "holds partly"
    assert r["numbers"]["stage_exceptions"] == []
    assert r["numbers"]["layer_exceptions"] == ["alexnet_paper features.10 (384 channels) -> features.12 (256)"]


def test_stacked_3x3(tmp_path):
    r = _numbers(tmp_path, "stacked-3x3")
    by = {row["layers"]: row for row in r["numbers"]["rows"]}
    assert (by["2 x 3x3"]["receptive field"], by["2 x 3x3"]["params"]) == (5, 18 * 64 * 64)
    assert (by["1 x 5x5"]["receptive field"], by["1 x 5x5"]["params"]) == (5, 25 * 64 * 64)
    assert (by["3 x 3x3"]["receptive field"], by["3 x 3x3"]["params"]) == (7, 27 * 64 * 64)
    assert (by["1 x 7x7"]["receptive field"], by["1 x 7x7"]["params"]) == (7, 49 * 64 * 64)
    assert r["verdict"] == "holds"


def test_resnet_skips(tmp_path):
    r = _numbers(tmp_path, "resnet-skips")
    rows = {row["net"]: row for row in r["numbers"]["rows"]}
    for depth in (20, 32, 44, 56, 110):  # basic blocks: (L - 2) / 2
        assert rows[f"resnet{depth}"]["layers L"] == depth
        assert rows[f"resnet{depth}"]["skip connections"] == (depth - 2) // 2
    for name, depth, blocks in (("resnet18", 18, 8), ("resnet34", 34, 16), ("resnet50", 50, 16),
                                ("resnet101", 101, 33), ("resnet152", 152, 50)):  # fmt: skip
        assert (rows[name]["layers L"], rows[name]["skip connections"]) == (depth, blocks)


def test_a_new_run_keeps_the_old_report(tmp_path):
    run_claim("stacked-3x3", root=tmp_path, say=lambda m: None)
    first = (tmp_path / "stacked-3x3" / "verdict.json").read_text()
    run_claim("stacked-3x3", root=tmp_path, say=lambda m: None)
    kept = list((tmp_path / "stacked-3x3" / "history").glob("*/verdict.json"))
    assert len(kept) == 1 and kept[0].read_text() == first
    assert (kept[0].parent / "report.md").exists()


# ------------------------------------------------------------------------------------------ training, tiny budget
@pytest.mark.parametrize("name", TRAINING)
def test_training_claim_runs_at_a_tiny_budget(tmp_path, name):
    record = run_claim(name, budget=2, seeds=1, threads=1, root=tmp_path, say=lambda m: None)
    out = tmp_path / name
    assert record["verdict"] in VERDICTS and record["seeds"] == [0]
    if record["verdict"] == NOT_AT_BUDGET:
        assert record["settle"]  # says what would settle it
    report = (out / "report.md").read_text()
    assert f"`classicnets claims run {name} --budget 2s --seeds 1 --threads 1`" in report
    assert record["verdict"] == NOT_AT_BUDGET  # one seed (and a 2 s budget) never decides
    assert f"**Verdict: {record['verdict']}**" in report
    figures = list(out.glob("*.png"))
    assert figures and all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000 for f in figures)
    assert all(f"]({f.name})" in report for f in figures)
    assert json.loads((out / "results.json").read_text())["numbers"] == json.loads(json.dumps(record["numbers"]))


def test_a_pinned_plan_replays_and_a_failed_run_keeps_the_report(tmp_path):
    first = run_claim("activations", budget=2, seeds=2, threads=1, root=tmp_path, say=lambda m: None)
    assert first["replay"].endswith(f"--subset {first['plan']['subset']} --epochs {first['plan']['epochs']}")
    again = run_claim("activations", budget=2, seeds=2, threads=1, root=tmp_path, say=lambda m: None,
                      pin={"subset": first["plan"]["subset"], "epochs": first["plan"]["epochs"]})  # fmt: skip
    assert again["numbers"] == first["numbers"]  # same plan, seeds, init and batches: the same numbers
    before = (tmp_path / "activations" / "verdict.json").read_text()
    with pytest.raises(ValueError):
        run_claim("activations", budget=2, seeds=2, data="no-such-data", root=tmp_path, say=lambda m: None)
    assert (tmp_path / "activations" / "verdict.json").read_text() == before
    assert not list(tmp_path.glob(".activations.partial-*"))


def test_a_malformed_verdict_reads_as_not_run(tmp_path, capsys):
    run_claim("stacked-3x3", root=tmp_path, say=lambda m: None)
    (tmp_path / "stacked-3x3" / "verdict.json").write_text('{"verdict": "holds"}')
    assert get_claim("stacked-3x3").status(tmp_path) is None
    assert main(["claims", "report", "--root", str(tmp_path), "--out", str(tmp_path / "doc" / "cs.md")]) == 0
    text = (tmp_path / "doc" / "cs.md").read_text()
    assert "Not run yet: `classicnets claims run stacked-3x3`" in text  # the malformed record is not trusted
    run_claim("stacked-3x3", root=tmp_path, say=lambda m: None)  # and a new run still keeps it
    assert len(list((tmp_path / "stacked-3x3" / "history").glob("*/verdict.json"))) == 1


def test_twins_share_initial_weights_and_batches(tmp_path):
    run_claim("activations", budget=2, seeds=2, threads=1, root=tmp_path, say=lambda m: None)
    runs = json.loads((tmp_path / "activations" / "results.json").read_text())["runs"]
    for seed in (0, 1):
        mine = [r for r in runs if r["seed"] == seed]
        assert [r["net"] for r in mine] == ["sigmoid", "tanh", "relu"]
        assert len({r["init_digest"] for r in mine}) == 1  # the activation is the only difference
        assert len({r["batch_digest"] for r in mine}) == 1  # the same batches in the same order
    assert runs[0]["init_digest"] != runs[3]["init_digest"]  # another seed, other weights


@pytest.mark.slow  # 8 nets x 2 seeds (~40 s); test_studies checks the same twins through the degradation study
def test_plain_and_residual_twins_share_initial_weights_and_batches(tmp_path):
    run_claim("plain-vs-residual", budget=2, seeds=2, threads=1, root=tmp_path, say=lambda m: None)
    runs = json.loads((tmp_path / "plain-vs-residual" / "results.json").read_text())["runs"]
    for seed in (0, 1):
        for depth in (20, 32, 44, 56):
            twins = [r for r in runs if r["seed"] == seed and r["net"] in (f"plain{depth}", f"resnet{depth}")]
            assert len(twins) == 2 and twins[0]["init_digest"] == twins[1]["init_digest"]
        assert len({r["batch_digest"] for r in runs if r["seed"] == seed}) == 1


# ------------------------------------------------------------------------------------------ command line
def test_cli_lists_claims_with_their_status(tmp_path, capsys):
    run_claim("lenet5-params", root=tmp_path, say=lambda m: None)
    assert main(["claims", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(c.name in out for c in CLAIMS)
    assert "HOLDS" in out.splitlines()[1] and out.count("not run") == len(CLAIMS) - 1
    assert main(["claims", "report", "--root", str(tmp_path), "--out", str(tmp_path / "doc" / "case.md")]) == 0
    text = (tmp_path / "doc" / "case.md").read_text()
    assert "| [lenet5-params](#lenet5-params) | LeNet-5 | holds |" in text
    assert "[claims/lenet5-params/report.md](claims/lenet5-params/report.md)" in text
    assert (tmp_path / "doc" / "claims" / "lenet5-params" / "verdict.json").exists()  # the run, copied beside it


def test_cli_runs_a_claim(tmp_path, capsys):
    assert main(["claims", "run", "identity", "--budget", "2s", "--seeds", "2", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "VERDICT:" in out and (tmp_path / "identity" / "report.md").exists()


@pytest.mark.parametrize("argv, message", [
    (["claims", "run", "nope"], "unknown claim 'nope'"),
    (["claims", "run", "identity", "--budget", "soon"], "budget must look like"),
    (["claims", "run", "identity", "--seeds", "0"], "--seeds must be >= 1"),
])  # fmt: skip
def test_cli_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "identity").exists()


@pytest.mark.parametrize("size", [5, 4, 1])
def test_band_lrn_is_torchs_local_response_norm(size):
    import torch

    from classicnets.claims.nets import BandLRN

    x = torch.randn(3, 7, 6, 5, generator=torch.Generator().manual_seed(size)) * 4
    ref = torch.nn.LocalResponseNorm(size, alpha=5e-4, beta=0.75, k=2.0)(x)
    # fp32: the window sums differ only in summation order, a few ulps of values of order |x|
    torch.testing.assert_close(BandLRN(size, 5e-4, 0.75, 2.0)(x), ref, rtol=1e-5, atol=1e-5)
