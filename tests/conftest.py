"""Shared fixtures: small, real data kept fast for a 2-core CI machine."""

from __future__ import annotations

import os

import pytest
import torch

# One intra-op thread per test process: the CI machine has 2 cores, and oversubscribed OpenMP threads
# spin-wait each other into 10x slowdowns.
torch.set_num_threads(int(os.environ.get("CLASSICNETS_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the user's dataset cache from a test (downloads go to a temp dir)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
