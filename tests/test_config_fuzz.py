"""Fuzzing the config loader: whatever a recipe file, a dict or a --set string holds, the answer is a valid
TrainConfig or a ConfigError, never another exception, never a hang, and never a NaN that gets through."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from classicnets.train.config import FIELDS, ConfigError, TrainConfig, config_from_dict, load_recipe, parse_set

# CLASSICNETS_FUZZ_EXAMPLES=5000 for a deeper run; the default keeps the file at a few seconds.
FUZZ = settings(max_examples=int(os.environ.get("CLASSICNETS_FUZZ_EXAMPLES", 150)), deadline=5000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of stalling the suite

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["sgd", "adamw", "cosine", "multistep", "off", "1e-3", "-1", "nan", ".inf"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4), max_leaves=12)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))
documents = st.dictionaries(keys, values, max_size=8)


def accepted(config: TrainConfig) -> None:
    """What an accepted config promises: it validates, and no numeric field is NaN or infinite."""
    assert isinstance(config, TrainConfig)
    config.validate()
    for key in FIELDS:
        value = getattr(config, key)
        if isinstance(value, float):
            assert math.isfinite(value), (key, value)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def load_bytes(folder: Path, data: bytes) -> None:
    path = folder / "recipe.yaml"
    path.write_bytes(data)
    try:
        accepted(load_recipe(str(path)))
    except ConfigError:
        pass


@FUZZ
@given(values=documents)
@example(values={"lr": float("nan")})
@example(values={"momentum": float("inf"), "lr": 0.1})
@example(values={"backbone_lr_scale": float("nan")})
@example(values={"lr": "1e999"})
@example(values={1: 2, None: 3})
def test_random_dicts(values: dict) -> None:
    try:
        accepted(config_from_dict(values))
    except ConfigError:
        pass


@FUZZ
@given(values=documents)
def test_random_yaml_documents(folder: Path, values: dict) -> None:
    load_bytes(folder, yaml.safe_dump(values, allow_unicode=True).encode())


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@example(data=b"\xff\xfe lr: 0.1\n")  # not UTF-8
@example(data=b"lr: 2020-13-01\n")  # PyYAML raises ValueError for impossible dates
@example(data=b"lr: " + b"[" * 1100 + b"]" * 1100)  # nesting beyond Python's recursion limit
@example(data=b"lr: !!python/object/apply:os.system ['echo pwned']\n")
@example(data=b"a: &a [*a]\n")
@example(data=b"- 1\n- 2\n")
def test_random_bytes_as_a_recipe(folder: Path, data: bytes) -> None:
    load_bytes(folder, data)


@FUZZ
@given(assignments=st.lists(st.one_of(st.text(max_size=30), st.builds("{}={}".format, keys, st.text(max_size=20))),
                            max_size=4))
@example(assignments=["epochs=2020-13-01"])
@example(assignments=["lr=.nan"])
@example(assignments=["model_kwargs={a: [1, {b: ]"])
def test_random_set_assignments(assignments: list[str]) -> None:
    try:
        accepted(parse_set(assignments, TrainConfig()))
    except ConfigError:
        pass


def test_an_alias_bomb_loads_fast_or_is_refused(folder: Path) -> None:
    """'Billion laughs': nine levels of nine aliases. The loader keeps references; it must not expand them."""
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines.append("model_kwargs: {bomb: *a8}")
    load_bytes(folder, ("\n".join(lines) + "\n").encode())  # unknown key a0: ConfigError, at once
    load_bytes(folder, ("model_kwargs:\n" + "\n".join("  " + line for line in lines) + "\n").encode())
