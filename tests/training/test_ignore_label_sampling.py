"""Foreground oversampling with ``data.ignore_label``: unannotated voxels are never "foreground".

References by hand: a random patch's lower corner is ``rng.integers(0, n - p + 1)`` per axis with the
key's seed (PatchDataset's documented rule), and a foreground patch away from the borders has the
drawn voxel at its centre ``p // 2``.
"""

from __future__ import annotations

import numpy as np
import pytest

from delira.data import PatchDataset, PatchKey, class_locations
from delira.training.config import load_config
from delira.training.tasks import task_for

SHAPE, PATCH, IGNORE = (24, 24, 24), (8, 8, 8), 3


def _case(real: bool) -> dict:
    rng = np.random.default_rng(0)
    seg = np.zeros((1, *SHAPE), np.int16)
    seg[0, 18:, :, :] = IGNORE  # a large unannotated slab
    if real:
        seg[0, 10:13, 9:13, 10:14] = 1  # a real class away from the borders
    data = rng.standard_normal((1, *SHAPE)).astype(np.float32)
    # as delira.data.preprocessing caches them: every label > 0 located, the ignore label included
    return {"data": data, "seg": seg, "class_locations": class_locations(seg)}


def _random_lower(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(rng.integers(0, n - p + 1)) for n, p in zip(SHAPE, PATCH)]


def _centre_label(patch: dict) -> int:
    return int(patch["seg"][(0, *(p // 2 for p in PATCH))])


@pytest.mark.parametrize("cached", [True, False])
def test_a_case_with_only_the_ignore_label_gets_random_patches(cached):
    case = _case(real=False)
    if not cached:
        del case["class_locations"]  # located from seg on the fly
    patches = PatchDataset([case], PATCH, ignore_label=IGNORE)
    for seed in range(25):
        assert list(patches[PatchKey(0, True, seed)]["patch_lower"]) == _random_lower(seed)
    # without ignore_label (before the fix) the same keys centre on the ignore label
    old = PatchDataset([case], PATCH)
    assert all(_centre_label(old[PatchKey(0, True, s)]) == IGNORE for s in range(25))


def test_with_a_real_class_foreground_patches_centre_on_it_only():
    case = _case(real=True)
    patches = PatchDataset([case], PATCH, ignore_label=IGNORE)
    assert all(_centre_label(patches[PatchKey(0, True, s)]) == 1 for s in range(40))
    old = [_centre_label(PatchDataset([case], PATCH)[PatchKey(0, True, s)]) for s in range(40)]
    assert set(old) == {1, IGNORE}  # before: the ignore label was one of the "classes" drawn
    assert class_locations(case["seg"], ignore_label=IGNORE).keys() == {1}
    with pytest.raises(TypeError, match="ignore_label"):
        PatchDataset([case], PATCH, ignore_label="3")


def test_patch_training_passes_data_ignore_label_to_the_patches():
    config = load_config(
        {
            "name": "seg",
            "model": {
                "name": "unet",
                "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [4, 8]},
            },
            "data": {
                "phantom": {"num_cases": 2, "shape": list(SHAPE), "num_classes": 3, "seed": 1},
                "transforms": "none",
                "patch_size": list(PATCH),
                "foreground_fraction": 1.0,
                "batches_per_epoch": 10,  # 20 patches: by chance all on class 1 without the fix: 2**-20
                "ignore_label": IGNORE,
            },
            "training": {"batch_size": 2, "workers": 0},
        }
    )
    cases = [_case(real=True), _case(real=True)]
    train, _ = task_for(config).loaders(cases, cases, fold=0)
    batches = list(train)
    assert batches
    for batch in batches:  # every sample is a foreground patch: centred on class 1, never on 3
        seg = np.asarray(batch["seg"])
        assert all(int(seg[(i, 0, *(p // 2 for p in PATCH))]) == 1 for i in range(len(seg)))
