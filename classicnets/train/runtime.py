"""Device, precision, determinism and process-group setup: everything that depends on the machine."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.distributed as dist


# The CPU classes this project tells apart, slowest first. What differs between them for training:
# AVX2 has no bf16 arithmetic (bf16 convolutions and matmuls run 35-50x slower than fp32 there), AVX512 has wider
# fp32 vectors, AVX512-BF16 multiplies bf16 natively (2-5x its fp32 matmul rate), AMX adds bf16 tile units.
CPU_CLASSES = ("pre-AVX2", "AVX2", "AVX512", "AVX512-BF16", "AMX")
_NATIVE_BF16 = ("AVX512-BF16", "AMX")


def _isa_rank(name: str) -> int:
    """The CPU_CLASSES index a oneDNN ISA name (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) allows at most."""
    name = name.strip().upper()
    if name in ("", "ALL", "DEFAULT") or "AMX" in name:
        return 4
    if name.startswith(("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10")):
        return 3
    if name.startswith("AVX512"):
        return 2
    if name.startswith("AVX2"):
        return 1
    return 0


def classify_cpu(flags: str | set[str], aten_capability: str | None = None, onednn_max_isa: str | None = None) -> str:
    """The CPU class (one of CPU_CLASSES, or "other" off x86) from the /proc/cpuinfo ``flags`` line,
    capped by what ATen's kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``, which honours
    ATEN_CPU_CAPABILITY) and by oneDNN's ISA limit (ONEDNN_MAX_CPU_ISA). The caps make an emulated class
    honest: on an AVX512-BF16 machine, ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` reads as AVX2."""
    flags = set(flags.split()) if isinstance(flags, str) else set(flags)
    if not flags & {"sse2", "avx", "avx2"}:
        return "other"
    rank = 0
    if {"avx2", "fma"} <= flags:
        rank = 1
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            rank = 2 + ("avx512_bf16" in flags) + ({"amx_tile", "amx_bf16", "avx512_bf16"} <= flags)
    cap = (aten_capability or "").upper()
    if cap.startswith("AVX2"):
        rank = min(rank, 1)
    elif cap and not cap.startswith("AVX512"):  # DEFAULT / NO AVX: ATen's generic kernels
        rank = 0
    if onednn_max_isa:
        rank = min(rank, _isa_rank(onednn_max_isa))
    return CPU_CLASSES[rank]


@lru_cache(maxsize=None)
def cpu_class() -> str:
    """This machine's CPU class as this process sees it (see :func:`classify_cpu`)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[-1] for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return classify_cpu(flags, torch.backends.cpu.get_cpu_capability(), isa)


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), so autocast pays off."""
    return cpu_class() in _NATIVE_BF16


def device_class(device: torch.device | str) -> str:
    """What the run header and the benchmarks print: the CPU class, or the GPU's name."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return f"CPU class {cpu_class()}"


def allocator() -> str:
    """The malloc this process runs on: "jemalloc"/"tcmalloc" when preloaded (see commands.reexec_with_jemalloc)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "unknown"
    return next((name for name in ("jemalloc", "tcmalloc") if f"lib{name}" in maps), "system malloc")


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return device


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device``, or None for full fp32."""
    if mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group ``torchrun`` describes through RANK/WORLD_SIZE/LOCAL_RANK (gloo on CPU,
    NCCL on CUDA); a plain single process gets the default DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    resolve_device(device_name, local)  # a bad or unavailable device: one line per rank, before any CUDA call
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto",) or device_name.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        backend = "nccl" if use_cuda else "gloo"
        restart = elastic_restarts()[0]
        if restart > 0:
            # torchrun --standalone keeps its store across restarts, holding the dead group's keys (rank 0's old
            # gloo address): a restarted rank 1 could read it and fail with "Connection refused". Each attempt
            # gets its own key prefix.
            store, _, _ = next(dist.rendezvous("env://"))
            store = dist.PrefixStore(f"classicnets/attempt_{restart}", store)
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
        else:
            dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def elastic_restarts() -> tuple[int, int]:
    """``(restart_count, max_restarts)`` of a ``torchrun --max-restarts N`` worker group, (0, 0) otherwise.
    torchrun restarts a failed group with the same command line and TORCHELASTIC_RESTART_COUNT > 0."""

    def env_int(key: str) -> int:
        try:
            return int(os.environ.get(key, "0") or 0)
        except ValueError:
            return 0

    return env_int("TORCHELASTIC_RESTART_COUNT"), env_int("TORCHELASTIC_MAX_RESTARTS")


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
