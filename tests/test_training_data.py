"""random_patch: the paired crop / flip of training pairs."""

from __future__ import annotations

import pytest
import torch

from sapnet.training.data import random_patch


@pytest.mark.parametrize(("hflip", "vflip"), [(False, False), (True, False), (False, True), (True, True)])
def test_random_patch_crops_and_flips_every_image_alike(hflip: bool, vflip: bool) -> None:
    x = torch.arange(3 * 9 * 11, dtype=torch.float32).reshape(3, 9, 11)
    seen = set()
    for seed in range(16):
        a, b = random_patch((x, x + 1000), 4, torch.Generator().manual_seed(seed), hflip=hflip, vflip=vflip)
        assert a.shape == b.shape == (3, 4, 4) and a.is_contiguous()
        assert torch.equal(b, a + 1000)  # same place, same flips
        # The patch is a crop of x, flipped where the flags allow.
        found = False
        for dims in ([], [-1], [-2], [-1, -2]):
            if (-1 in dims and not hflip) or (-2 in dims and not vflip):
                continue
            y = a.flip(dims) if dims else a
            top, left = int(y[0, 0, 0]) // 11, int(y[0, 0, 0]) % 11
            if torch.equal(y, x[:, top : top + 4, left : left + 4]):
                found = True
                seen.add(tuple(dims))
        assert found
    assert len(seen) == 1 + hflip + vflip + (hflip and vflip)


def test_random_patch_is_a_function_of_the_generator() -> None:
    x = torch.rand(3, 20, 30)
    a = random_patch((x,), 8, torch.Generator().manual_seed(5))
    b = random_patch((x,), 8, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0])


def test_random_patch_refuses_images_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        random_patch((torch.rand(3, 8, 8), torch.rand(3, 8, 9)), 4, torch.Generator())
