"""InMemoryLoader: batched augmentation against a per-sample reference, determinism, sharding, padding."""

from __future__ import annotations

import pytest
import torch

from classicnets.data import ArrayDataset, InMemoryLoader, split_validation
from classicnets.data.loader import augment_batch

MEAN, STD = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)


def reference_augment(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                      padding: int) -> torch.Tensor:
    """The same augmentation, one sample at a time with torchvision's functional ops (slow; for tests)."""
    import torchvision.transforms.functional as TF

    out = []
    h, w = images.shape[-2:]
    for img, (dy, dx), flip in zip(images, offsets.tolist(), flips.tolist()):
        img = TF.pad(img, [padding]) if padding else img
        img = TF.crop(img, dy, dx, h, w)
        out.append(TF.hflip(img) if flip else img)
    return torch.stack(out)


def make_dataset(n: int = 50, c: int = 3, size: int = 12, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)
    return ArrayDataset(images, torch.arange(n) % 10)


def normalise(x_uint8: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x_uint8.float() / 255 - m) / s


def epoch(loader: InMemoryLoader, e: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader.set_epoch(e)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("padding", [0, 1, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_augmentation_equals_per_sample_reference(padding, seed):
    images = make_dataset(40, size=10, seed=seed).images
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, 2 * padding + 1, (40, 2), generator=g)
    flips = torch.rand(40, generator=g) < 0.5
    assert torch.equal(augment_batch(images, offsets, flips, padding),
                       reference_augment(images, offsets, flips, padding))


def test_augmentation_really_moves_and_flips():
    img = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    flipped = augment_batch(img, torch.tensor([[0, 0]]), torch.tensor([True]), 0)
    assert flipped[0, 0, 0].tolist() == [3, 2, 1, 0]
    # Offset (0, 2) in the 1-padded image: the window starts one row above the image, one column right.
    shifted = augment_batch(img, torch.tensor([[0, 2]]), torch.tensor([False]), 1)
    assert shifted[0, 0, 0].tolist() == [0, 0, 0, 0] and shifted[0, 0, 1].tolist() == [1, 2, 3, 0]


@pytest.mark.parametrize("world_size,rank", [(1, 0), (2, 1)])
def test_loader_output_equals_reference_pipeline(world_size, rank):
    ds = make_dataset(37)
    loader = InMemoryLoader(ds, 8, shuffle=True, mean=MEAN, std=STD, crop_padding=2, hflip=True, seed=5,
                            rank=rank, world_size=world_size)
    loader.set_epoch(3)
    plan = loader.plan()
    x, y = epoch(loader, 3)
    expected = normalise(reference_augment(ds.images[plan.indices], plan.offsets, plan.flips, 2))
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)
    assert torch.equal(y, ds.labels[plan.indices])
    assert plan.flips.any() and (~plan.flips).any() and plan.offsets.unique().numel() == 5


def test_same_seed_and_epoch_give_identical_batches_and_resume_matches():
    ds = make_dataset(64)
    kwargs = dict(shuffle=True, mean=MEAN, std=STD, crop_padding=2, hflip=True, seed=11)
    a, b = InMemoryLoader(ds, 16, **kwargs), InMemoryLoader(ds, 16, **kwargs)
    for e in range(3):
        epoch(a, e)  # a runs epochs 0..2; b "resumes" straight at epoch 2
    xa, ya = epoch(a, 2)
    xb, yb = epoch(b, 2)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x3, _ = epoch(a, 3)
    assert not torch.equal(a.plan(3).indices, a.plan(2).indices) and not torch.equal(x3, xa)
    other_seed = InMemoryLoader(ds, 16, **{**kwargs, "seed": 12})
    assert not torch.equal(other_seed.plan(2).indices, a.plan(2).indices)


def test_without_shuffle_order_is_the_dataset_order():
    ds = make_dataset(10)
    loader = InMemoryLoader(ds, 4, shuffle=False, mean=MEAN, std=STD)
    x, y = epoch(loader, 7)
    assert torch.equal(y, ds.labels) and len(loader) == 3
    torch.testing.assert_close(x, normalise(ds.images), rtol=0, atol=1e-5)


def test_two_ranks_are_disjoint_and_cover_the_epoch():
    ds = ArrayDataset(make_dataset(64).images, torch.arange(64))  # label = index, to track samples
    shards = [InMemoryLoader(ds, 10, shuffle=True, mean=MEAN, std=STD, seed=3, rank=r, world_size=2)
              for r in range(2)]
    ys = [epoch(s, 1)[1] for s in shards]
    assert len(ys[0]) == len(ys[1]) == 32 and len(shards[0]) == len(shards[1]) == 4
    assert not set(ys[0].tolist()) & set(ys[1].tolist())
    assert sorted(ys[0].tolist() + ys[1].tolist()) == list(range(64))


def test_uneven_shards_pad_or_drop():
    ds = ArrayDataset(make_dataset(11).images, torch.arange(11))
    padded = [epoch(InMemoryLoader(ds, 4, shuffle=True, mean=MEAN, std=STD, rank=r, world_size=3), 0)[1]
              for r in range(3)]
    assert [len(y) for y in padded] == [4, 4, 4]                  # 11 -> 12: one sample seen twice
    assert set(torch.cat(padded).tolist()) == set(range(11))
    dropped = [InMemoryLoader(ds, 2, shuffle=True, drop_last=True, mean=MEAN, std=STD, rank=r, world_size=3)
               for r in range(3)]
    ys = [epoch(d, 0)[1] for d in dropped]
    assert [d.num_samples for d in dropped] == [3, 3, 3] and [len(d) for d in dropped] == [1, 1, 1]
    assert [len(y) for y in ys] == [2, 2, 2]                      # last partial batch dropped
    assert len(set(torch.cat(ys).tolist())) == 6                  # still disjoint


def test_pad_to_centres_the_image_with_raw_zero():
    images = torch.full((3, 1, 28, 28), 255, dtype=torch.uint8)
    loader = InMemoryLoader(ArrayDataset(images, torch.zeros(3, dtype=torch.long)), 3, shuffle=False,
                            mean=(0.5,), std=(0.25,), pad_to=32)
    x, _ = epoch(loader, 0)
    assert x.shape == (3, 1, 32, 32)
    background, foreground = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    inner = torch.zeros(32, 32, dtype=torch.bool)
    inner[2:30, 2:30] = True
    assert torch.allclose(x[:, 0][:, inner], torch.tensor(foreground))
    assert torch.allclose(x[:, 0][:, ~inner], torch.tensor(background))


def test_pad_to_odd_margin_and_too_small():
    ds = ArrayDataset(torch.full((1, 1, 4, 4), 9, dtype=torch.uint8), torch.zeros(1, dtype=torch.long))
    loader = InMemoryLoader(ds, 1, shuffle=False, mean=(0.0,), std=(1 / 255,), pad_to=7)
    x = epoch(loader, 0)[0][0, 0]
    assert (x == 9).nonzero().min(0).values.tolist() == [1, 1]  # margins: 1 top/left, 2 bottom/right
    assert (x == 9).nonzero().max(0).values.tolist() == [4, 4]
    with pytest.raises(ValueError, match="pad_to=3 is smaller than the images"):
        InMemoryLoader(ds, 1, shuffle=False, mean=(0.0,), std=(1.0,), pad_to=3)


def test_channels_last_flag():
    ds = make_dataset(8)
    plain = InMemoryLoader(ds, 4, shuffle=False, mean=MEAN, std=STD, hflip=True)
    cl = InMemoryLoader(ds, 4, shuffle=False, mean=MEAN, std=STD, hflip=True, channels_last=True)
    xp, xc = next(iter(plain)), next(iter(cl))
    assert xc[0].is_contiguous(memory_format=torch.channels_last)
    assert not xp[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(xp[0], xc[0]) and xc[0].dtype == torch.float32


def test_empty_dataset_gives_no_batches():
    empty = make_dataset(10).subset([])
    loader = InMemoryLoader(empty, 4, shuffle=True, mean=MEAN, std=STD, crop_padding=2, world_size=2)
    assert len(loader) == 0 and loader.num_samples == 0 and list(loader) == []


def test_loader_length_and_arguments():
    ds = make_dataset(10)
    assert len(InMemoryLoader(ds, 3, shuffle=True, mean=MEAN, std=STD)) == 4
    assert len(InMemoryLoader(ds, 3, shuffle=True, drop_last=True, mean=MEAN, std=STD)) == 3
    bad = [dict(batch_size=0), dict(mean=(0.5,)), dict(std=(0.1, 0.0, 0.1)), dict(crop_padding=-1),
           dict(rank=2, world_size=2)]
    for override in bad:
        kwargs = dict(batch_size=2, shuffle=True, mean=MEAN, std=STD) | override
        with pytest.raises(ValueError):
            InMemoryLoader(ds, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loader_on_cuda_matches_cpu():
    ds = make_dataset(33)
    kwargs = dict(shuffle=True, mean=MEAN, std=STD, crop_padding=2, hflip=True, seed=4)
    x_cpu, y_cpu = epoch(InMemoryLoader(ds, 8, **kwargs), 1)
    x_gpu, y_gpu = epoch(InMemoryLoader(ds, 8, device="cuda", **kwargs), 1)
    assert x_gpu.is_cuda and torch.equal(y_gpu.cpu(), y_cpu)
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ split_validation

def test_validation_split_is_disjoint_and_deterministic():
    ds = ArrayDataset(make_dataset(100).images, torch.arange(100))
    train, val = split_validation(ds, 0.1, seed=0)
    assert (len(train), len(val)) == (90, 10)
    assert sorted(train.labels.tolist() + val.labels.tolist()) == list(range(100))
    again_train, again_val = split_validation(ds, 0.1, seed=0)
    assert torch.equal(val.labels, again_val.labels) and torch.equal(train.images, again_train.images)
    assert not torch.equal(split_validation(ds, 0.1, seed=1)[1].labels, val.labels)
    assert torch.equal(val.labels, val.labels.sort().values)  # original order kept
    assert torch.equal(val.images, ds.images[val.labels])


def test_validation_split_edges():
    ds = make_dataset(20)
    train, val = split_validation(ds, 0.0)
    assert (len(train), len(val)) == (20, 0)
    for fraction in (-0.1, 1.0, 1.5, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="fraction must be in"):
            split_validation(ds, fraction)


def test_array_dataset_checks_and_subset():
    ds = make_dataset(5)
    sub = ds.subset([4, 0])
    assert torch.equal(sub.images, ds.images[[4, 0]]) and sub.labels.tolist() == [4, 0]
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(ds.images.float(), ds.labels)
    with pytest.raises(ValueError, match="one label per image"):
        ArrayDataset(ds.images, ds.labels[:3])
