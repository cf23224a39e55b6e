"""The counting claims: exact, instant, from classicnets.summary's per-layer table (one forward pass)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models import create_model, model_card
from ..studies.report import markdown_table
from ..summary import summary
from .experiment import Context, Outcome
from .registry import FALSE, HOLDS, PARTLY

CONV_TYPES = ("Conv2d", "PartialConv2d")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def weightless(name: str) -> nn.Module:
    """The registered model with its parameters on the meta device: shapes and counts without the memory or
    the initialization (VGG-16's 138M parameters would take seconds to initialize)."""
    with torch.device("meta"):
        return create_model(name)


def _within(value: float, claimed: float, tolerance: float) -> bool:
    return abs(value - claimed) <= tolerance * claimed


def _layer_table(s: Any, types: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"layer": r.name, "type": r.type, "output": "x".join(map(str, r.output_shape or ())), "params": r.params}
            for r in s.rows if r.type in types]  # fmt: skip


def lenet5_params(ctx: Context) -> Outcome:
    rows, numbers = [], {}
    for name in ("lenet5", "lenet5_modern"):
        s = summary(weightless(name))
        numbers[name] = s.total_params
        rows += [{**r, "net": name} for r in _layer_table(s, ("Conv2d", "PartialConv2d", "Subsampling", "Linear"))]
    holds = _within(numbers["lenet5"], 60_000, 0.05) and _within(numbers["lenet5_modern"], 60_000, 0.05)
    reading = [f"lenet5 (the paper's form) has {numbers['lenet5']:,} trainable parameters; lenet5_modern (ReLU, "
               f"max-pool, full C3, linear output) has {numbers['lenet5_modern']:,}: both about 60k.",
               "The paper's C3 connects each of its 16 maps to 3, 4 or 6 of S2's 6 maps (1,516 parameters); the "
               "modern full C3 has 2,416; the RBF output's centres are fixed, not trained."]  # fmt: skip
    table = markdown_table(rows, ["net", "layer", "type", "output", "params"])
    return Outcome(HOLDS if holds else FALSE, reading, numbers, [("Per layer", table)], rows)


def count_neurons(model: nn.Module, input_size: tuple[int, ...]) -> list[dict[str, Any]]:
    """Units per conv and FC layer output (one image): what Krizhevsky et al. call neurons."""
    counts: list[dict[str, Any]] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        counts.append({"layer": names[module], "type": type(module).__name__, "output": "x".join(map(str, output.shape[1:])),
                       "neurons": output[0].numel()})  # fmt: skip

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=_device(model)))
    finally:
        for h in handles:
            h.remove()
    return counts


def alexnet_size(ctx: Context) -> Outcome:
    paper = weightless("alexnet_paper")
    params = {"alexnet_paper": sum(p.numel() for p in paper.parameters()),
              "alexnet": sum(p.numel() for p in weightless("alexnet").parameters())}  # fmt: skip
    layers = count_neurons(paper, model_card("alexnet_paper").default_input_size)
    neurons = sum(r["neurons"] for r in layers)
    numbers = {"params": params, "neurons": neurons, "neurons_650M_claim": "false"}
    ok = _within(params["alexnet_paper"], 60e6, 0.05) and _within(neurons, 650_000, 0.05)
    reading = [
        f"alexnet_paper has {params['alexnet_paper']:,} parameters (torchvision's one-tower alexnet: "
        f"{params['alexnet']:,}): about 60 million.",
        f"Neurons (every unit of every conv and FC layer's output for one 227x227 image): {neurons:,}, about "
        f"650 thousand as the paper says. \"650 million\" is a misquote, {650e6 / neurons:,.0f}x too many.",
        f"conv1 alone holds {layers[0]['neurons']:,} of them ({layers[0]['neurons'] / neurons:.0%}). The paper's "
        f"Section 3 lists 253,440 for conv1, a figure no input size reproduces (253,440 / 96 = 2,640 is not a "
        f"square; the 227x227 input that makes the stride-4 11x11 conv fit gives 55x55x96 = 290,400), which would make the total "
        f"{neurons - layers[0]['neurons'] + 253_440:,}: either way about 650 thousand.",
    ]  # fmt: skip
    table = markdown_table(layers, ["layer", "type", "output", "neurons"])
    return Outcome(HOLDS if ok else FALSE, reading, numbers, [("Neurons per layer (alexnet_paper)", table)], layers)


def vgg16_fc_share(ctx: Context) -> Outcome:
    s = summary(weightless("vgg16"))
    fc = [r for r in s.rows if r.type == "Linear"]
    conv = [r for r in s.rows if r.type == "Conv2d"]
    fc_params, conv_params = sum(r.params for r in fc), sum(r.params for r in conv)
    share = fc_params / s.total_params
    fc_macs = sum(r.macs for r in fc) / s.total_macs
    numbers = {"params": s.total_params, "fc_params": fc_params, "conv_params": conv_params, "fc_share": share,
               "fc_share_of_macs": fc_macs, "first_fc_params": fc[0].params}  # fmt: skip
    reading = [f"vgg16 has {s.total_params:,} parameters (Table 2: 138M).",
               f"Its three FC layers hold {fc_params:,} = {share:.1%} of them (fc6 alone, 25,088 -> 4,096: "
               f"{fc[0].params:,} = {fc[0].params / s.total_params:.1%}); the 13 convs hold {conv_params:,}.",
               f"The compute is the other way round: the FC layers do {fc_macs:.1%} of the multiply-accumulates."]  # fmt: skip
    rows = _layer_table(s, ("Conv2d", "Linear"))
    ok = _within(s.total_params, 138e6, 0.01) and share > 0.5
    return Outcome(HOLDS if ok else FALSE, reading, numbers, [("Per layer", markdown_table(rows, list(rows[0])))], rows)


SHRINK_NETS = ("lenet5", "alexnet_paper", "vgg16", "resnet50")


def shrink_grow(ctx: Context) -> Outcome:
    """Per-stage (the cards' stages) and per-conv-layer output shapes; exceptions to 'shrink and grow'."""
    stage_rows, exceptions, layer_exceptions, layer_notes = [], [], [], []
    for name in SHRINK_NETS:
        model, card = weightless(name), model_card(name)
        s = summary(model)
        by_name = {r.name: r for r in s.rows}
        previous = None
        for st in card.stages:
            shape = _stage_shape(model, st.name, card.default_input_size, by_name)
            row = {"net": name, "stage": st.name, "channels": shape[0], "height x width": f"{shape[1]}x{shape[2]}"}
            stage_rows.append(row)
            if previous is not None:
                if shape[1] * shape[2] > previous[1] * previous[2]:
                    exceptions.append(f"{name}: {st.name} is larger than the stage before it")
                if shape[0] < previous[0]:
                    exceptions.append(f"{name}: {st.name} has fewer channels ({shape[0]}) than the stage before "
                                      f"({previous[0]})")  # fmt: skip
            previous = shape
        convs = [r for r in s.rows if r.type in CONV_TYPES and r.output_shape]
        narrow = [(a, b) for a, b in zip(convs, convs[1:]) if b.output_shape[0] < a.output_shape[0]]
        inside = [(a, b) for a, b in narrow if b.name.endswith(".conv1") and ".layer" in f".{b.name}"]
        main = [(a, b) for a, b in narrow if (a, b) not in inside]
        if inside:
            layer_notes.append(f"{name}: {len(inside)} of its bottleneck blocks narrow with a 1x1 conv and widen "
                               "back (by design, inside the block)")  # fmt: skip
        layer_exceptions += [f"{name} {a.name} ({a.output_shape[0]} channels) -> {b.name} ({b.output_shape[0]})"
                             for a, b in main]  # fmt: skip
    reading = ["Height x width shrink at every stage of every net: " + ("yes." if not any("larger" in e for e in exceptions) else "no.")]
    reading.append("Channels never shrink from one stage to the next: " + ("yes, in every net." if not exceptions
                   else "no: " + "; ".join(exceptions) + "."))  # fmt: skip
    reading.append("Layer by layer along the main path: " + ("channels never shrink." if not layer_exceptions else
                   "the channels shrink at " + "; ".join(layer_exceptions) + "."))  # fmt: skip
    reading += [f"Inside blocks: {n}." for n in layer_notes]
    verdict = HOLDS if not exceptions and not layer_exceptions else PARTLY
    numbers = {"stage_exceptions": exceptions, "layer_exceptions": layer_exceptions, "inside_blocks": layer_notes}
    table = markdown_table(stage_rows, ["net", "stage", "height x width", "channels"])
    return Outcome(verdict, reading, numbers, [("Per stage (the model cards' stages)", table)], stage_rows)


def _stage_shape(model: nn.Module, module_name: str, input_size: tuple[int, ...], by_name: dict) -> tuple[int, ...]:
    if module_name in by_name and by_name[module_name].output_shape:
        return tuple(by_name[module_name].output_shape)
    seen: dict[str, tuple[int, ...]] = {}
    module = dict(model.named_modules())[module_name]

    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen.setdefault("shape", tuple(out.shape[1:]))

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=_device(model)))
    finally:
        handle.remove()
    return seen["shape"]


def stacked_3x3(ctx: Context, channels: int = 64) -> Outcome:
    rows = []
    for n in (1, 2, 3):
        big = 2 * n + 1
        stack = nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(n)])
        single = nn.Conv2d(channels, channels, big, padding=n, bias=False)
        for label, net in ((f"{n} x 3x3", stack), (f"1 x {big}x{big}", single)):
            s = summary(net, input_size=(channels, 32, 32))
            rf = s.rows[-1].receptive_field
            rows.append({"layers": label, "receptive field": rf, "params": s.total_params,
                         "params / C^2": s.total_params // channels**2, "MACs at 32x32": s.total_macs})  # fmt: skip
    by = {r["layers"]: r for r in rows}
    checks = {"5x5": by["2 x 3x3"]["receptive field"] == by["1 x 5x5"]["receptive field"] == 5
              and by["2 x 3x3"]["params / C^2"] == 18 and by["1 x 5x5"]["params / C^2"] == 25,
              "7x7": by["3 x 3x3"]["receptive field"] == by["1 x 7x7"]["receptive field"] == 7
              and by["3 x 3x3"]["params / C^2"] == 27 and by["1 x 7x7"]["params / C^2"] == 49}  # fmt: skip
    reading = [f"Two 3x3 convs: receptive field {by['2 x 3x3']['receptive field']}, {by['2 x 3x3']['params / C^2']}C^2 "
               f"parameters; one 5x5: {by['1 x 5x5']['receptive field']}, {by['1 x 5x5']['params / C^2']}C^2 "
               f"({1 - 18 / 25:.0%} fewer for the stack).",
               f"Three 3x3 convs: receptive field {by['3 x 3x3']['receptive field']}, {by['3 x 3x3']['params / C^2']}C^2; "
               f"one 7x7: {by['1 x 7x7']['receptive field']}, {by['1 x 7x7']['params / C^2']}C^2 ({1 - 27 / 49:.0%} fewer).",
               f"C = {channels}, no biases; receptive fields from classicnets.summary's RF column. The stack also "
               "puts a ReLU between its convs (2 or 3 nonlinearities instead of 1)."]  # fmt: skip
    verdict = HOLDS if all(checks.values()) else FALSE
    return Outcome(verdict, reading, {"checks": checks, "rows": rows}, [("Stacks vs one big conv", markdown_table(rows, list(rows[0])))], rows)  # fmt: skip


SKIP_NETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18", "resnet34", "resnet50",
             "resnet101", "resnet152")  # fmt: skip


def resnet_skips(ctx: Context) -> Outcome:
    rows = []
    for name in SKIP_NETS:
        model = weightless(name)
        s = summary(model)
        depth = sum(1 for r in s.rows if r.type == "Linear") + sum(
            1 for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and ".downsample" not in n)
        rows.append({"net": name, "layers L": depth, "skip connections": s.skip_connections,
                     "skips / L": s.skip_connections / depth, "L(L+1)/2 (dense)": depth * (depth + 1) // 2})  # fmt: skip
    ok = all(0.25 <= r["skips / L"] <= 0.5 for r in rows)
    reading = ["Skip connections per weighted layer: " + ", ".join(f"{r['net']} {r['skip connections']}/{r['layers L']}"
               for r in rows) + ".",
               "Basic-block nets (two convs per block) have (L-2)/2 skips, bottleneck nets (three) (L-2)/3: on the "
               "order of L/2, against the L(L+1)/2 of a net that connects every layer to every later one "
               f"(DenseNet): {rows[4]['L(L+1)/2 (dense)']:,} for L = {rows[4]['layers L']}."]  # fmt: skip
    return Outcome(HOLDS if ok else FALSE, reading, {"rows": rows}, [("Per net", markdown_table(rows, list(rows[0])))], rows)
