"""A small batch through every CUDA entry point, for compute-sanitizer memcheck (scripts/gpu_check.sh)."""

from __future__ import annotations

import numpy as np
import torch

import delira.augment as da
from delira.augment import functional as F

rng = np.random.default_rng(0)
data = torch.from_numpy(rng.standard_normal((2, 2, 9, 10, 11)).astype(np.float32)).cuda()
seg = torch.from_numpy(rng.integers(0, 3, (2, 1, 9, 10, 11)).astype(np.int16)).cuda()
for order in (0, 1, 3):
    for order_seg in (0, 1):
        t = da.Compose(
            [
                da.SpatialTransform(
                    (8, 12, 7), elastic_magnitude=(0, 2), order_data=order, order_seg=order_seg
                ),
                da.GaussianNoise(),
                da.Contrast(),
                da.Gamma(),
                da.ZScoreNormalize(),
                da.Mirror(),
            ],
            seed=order,
        )
        t(data=data, seg=seg)
F.gaussian_blur(data, 1.0)
F.flip(data, (2, 4))
F.affine_resample(data[0, 0], np.eye(4), (5, 5, 5), order=3, mode="nearest")
torch.cuda.synchronize()
print("memcheck case ran")
