"""Shared pieces of the benchmarks: allocator, threads, machine facts, the standard-recipe data path.

The *standard recipe* is what a PyTorch user writes first: a torchvision-style ``Dataset`` that turns each
stored uint8 image into a PIL image and runs per-sample transforms (Pad, RandomCrop, RandomHorizontalFlip,
ToTensor, Normalize) in a ``DataLoader``; an fp32 NCHW model; a plain ``zero_grad / backward / step`` loop.
It is built from the same in-memory uint8 tensors classicnets uses, so only the data path and the
numerics differ: that is what torchvision's FashionMNIST/CIFAR10 classes do after loading their files.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
# Keep freed pages: on these VMs pages given back to the host must be faulted in again on the next step.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def ensure_allocator(allocator: str) -> None:
    """Re-exec this script with jemalloc preloaded (``allocator="jemalloc"``) unless it already is.

    ``glibc`` leaves the process as it is. The re-exec happens before torch is imported.
    """
    if allocator != "jemalloc" or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    if not Path(JEMALLOC).is_file():
        print(f"warning: {JEMALLOC} not found (apt-get install libjemalloc2); running with glibc malloc",
              file=sys.stderr)
        return
    env = dict(os.environ, LD_PRELOAD=JEMALLOC, MALLOC_CONF=os.environ.get("MALLOC_CONF", JEMALLOC_CONF))
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def allocator_in_use() -> str:
    pre = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in pre:
        return f"jemalloc (LD_PRELOAD, MALLOC_CONF={os.environ.get('MALLOC_CONF', '')})"
    if "tcmalloc" in pre:
        return "tcmalloc (LD_PRELOAD)"
    return "glibc malloc"


def set_threads(n: int | None) -> int:
    import torch

    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line(device: str) -> str:
    import torch
    import torchvision

    dev = torch.cuda.get_device_name() if device.startswith("cuda") else f"{cpu_model()}, {os.cpu_count()} cores"
    return (f"{dev}; torch {torch.__version__}, torchvision {torchvision.__version__}, Python "
            f"{platform.python_version()}; allocator: {allocator_in_use()}")


def peak_rss_mb() -> float:
    """The process's peak resident set (VmHWM), in MiB; Linux only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: Any, n: int = 4096, seconds: float = 3.0) -> tuple[float, int]:
    """Best GFLOP/s of an n x n x n matmul in ``dtype`` (a high quantile of the repeats), and the n used.

    ``n`` shrinks (to no less than 512) where one product would take over ~0.3 s: bf16 on a CPU without native
    bf16 (AVX2) runs at a few GFLOP/s, and a 4096^3 product there takes about a minute.
    """
    import torch

    def one(size: int) -> float:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        out = torch.empty(size, size, device=device, dtype=dtype)
        torch.mm(a, b, out=out)
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        return time.perf_counter() - t0

    t512 = one(512)
    while n > 512 and t512 * (n / 512) ** 3 > 0.3:
        n //= 2
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    sync(device)
    rates, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(rates) < 3:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    rates.sort()
    return rates[-max(1, len(rates) // 4)], n  # a high quantile: the peak, robust to one lucky run


# ---------------------------------------------------------------------------------------------- standard recipe
class TorchvisionStyleDataset:
    """What torchvision's MNIST/FashionMNIST/CIFAR10 ``__getitem__`` does: uint8 array -> PIL -> transform."""

    def __init__(self, images: Any, labels: Any, transform: Any) -> None:
        # torchvision keeps the images as a numpy uint8 array (CIFAR: N x H x W x C) and the labels as ints
        self.images = images.permute(0, 2, 3, 1).numpy()
        if self.images.shape[-1] == 1:
            self.images = self.images[..., 0]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.images[i])
        return self.transform(img), self.labels[i]


def standard_transform(pad_to: int | None, crop_padding: int, hflip: bool, mean: Sequence[float],
                       std: Sequence[float], size: int) -> Any:
    from torchvision import transforms as T

    steps = []
    if pad_to:
        steps.append(T.Pad(((pad_to - size) // 2 if size < pad_to else 0)))
    if crop_padding:
        steps.append(T.RandomCrop(pad_to or size, padding=crop_padding))
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def standard_loader(images: Any, labels: Any, batch_size: int, *, pad_to: int | None, crop_padding: int,
                    hflip: bool, mean: Sequence[float], std: Sequence[float], num_workers: int,
                    shuffle: bool = True, seed: int = 0) -> Any:
    import torch

    transform = standard_transform(pad_to, crop_padding, hflip, mean, std, images.shape[-1])
    ds = TorchvisionStyleDataset(images, labels, transform)
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                                       persistent_workers=num_workers > 0, drop_last=False, generator=g)


def standard_model(name: str, num_classes: int, in_chans: int, **kwargs: Any) -> Any:
    """The standard recipe's network: torchvision's where one exists, classicnets' otherwise.

    torchvision has no LeNet-5 and no CIFAR ResNets (resnet20/56), so those come from classicnets (the same
    layers a user would write). ``resnet18`` with ``stem="cifar"`` is torchvision's ResNet-18 with the usual
    CIFAR stem: a 3x3 stride-1 first convolution and no max-pool.
    """
    import torchvision
    from torch import nn

    from classicnets import create_model

    if name == "alexnet":
        return torchvision.models.alexnet(num_classes=num_classes)
    if name == "vgg16":
        return torchvision.models.vgg16(num_classes=num_classes)
    if name == "resnet18":
        m = torchvision.models.resnet18(num_classes=num_classes)
        if kwargs.get("stem", "imagenet") == "cifar":
            m.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
            m.maxpool = nn.Identity()
        elif in_chans != 3:
            m.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        return m
    return create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)


def git_rev(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def cpu_class() -> str:
    """``AMX``, ``AVX512-BF16``, ``AVX512``, ``AVX2-only`` or ``other``: what decides bf16 speed on a CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return "unknown"
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    if "avx512f" in flags:
        return "AVX512"
    return "AVX2-only" if "avx2" in flags else "other"
