"""Small batches through every CUDA entry point, for compute-sanitizer memcheck (scripts/gpu_check.sh).

Covers the fused pass for each data order x label order x label dtype, in 3D and 2D, float32 and
float64, data or seg alone, strided / non-contiguous / negative-stride (cupy) inputs, elastic fields,
every program stage (pointwise ops, contrast, gamma with retained statistics, z-score), the standalone
program, the gaussian filter, flip, SimulateLowResolution, RandomApply, and two threads on two streams
at once. Prints "memcheck case ran" at the end; any CUDA error raises.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

import delira.augment as da
from delira.augment import functional as F

rng = np.random.default_rng(0)
data = torch.from_numpy(rng.standard_normal((2, 2, 9, 10, 11)).astype(np.float32)).cuda()
labels = rng.integers(0, 3, (2, 1, 9, 10, 11))

for seg_dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
    seg = torch.from_numpy(labels).to(seg_dtype).cuda()
    for order in (0, 1, 3):
        for order_seg in (0, 1):
            t = da.Compose(
                [
                    da.SpatialTransform(
                        (8, 12, 7),
                        elastic_magnitude=(0, 2),
                        order_data=order,
                        order_seg=order_seg,
                        mode_data="nearest" if order == 3 else "constant",
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

# float64, 2D, data alone, seg alone, non-contiguous inputs
d64 = data.double()
F.spatial_transform(d64, None, affine=np.stack([np.eye(3, 4)] * 2), patch_size=(9, 10, 11), order_data=3)
d2 = data[:, :, 4]
F.spatial_transform(
    d2, d2[:, :1].round().to(torch.int16), affine=np.stack([np.eye(2, 3)] * 2), patch_size=(7, 13)
)
F.spatial_transform(
    None, seg[:, :, ::2], affine=np.stack([np.eye(3, 4)] * 2), patch_size=(4, 4, 4), order_seg=1
)
F.spatial_transform(
    data.permute(0, 1, 4, 3, 2), None, affine=np.stack([np.eye(3, 4)] * 2), patch_size=(5, 5, 5)
)

# standalone program, blur, flip, affine_resample, low resolution, RandomApply
F.gamma(data, [0.7, 1.4])
F.gaussian_noise(d64, 0.1, seed=1)
F.gaussian_blur(data, [1.0, 0.0])
F.gaussian_blur(d64, 2.0)
F.flip(data, (2, 4))
F.flip(data.permute(0, 4, 2, 3, 1), (1,))
F.affine_resample(data[0, 0], np.eye(4), (5, 5, 5), order=3, mode="nearest")
da.SimulateLowResolution(p=1.0, seed=0)(data=data)
da.RandomApply(da.GaussianNoise(), p=0.5, seed=0)(data=data, seg=seg)

try:
    import cupy

    x = cupy.asarray(rng.standard_normal((2, 1, 8, 9, 10)).astype(np.float32))
    F.spatial_transform(x[..., ::-1], None, affine=np.stack([np.eye(3, 4)] * 2), patch_size=(8, 9, 10))
    F.flip(x[:, :, ::-2], (3,))
    cupy.cuda.get_current_stream().synchronize()
except ImportError:
    pass

# two threads, two streams, at once (inputs complete before the side streams read them)
torch.cuda.synchronize()
errors: list[BaseException] = []


def worker(seed: int) -> None:
    try:
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            for _ in range(3):
                t = da.Compose(
                    [da.SpatialTransform((8, 8, 8), elastic_magnitude=(0, 2)), da.Gamma()], seed=seed
                )
                t(data=data, seg=seg)
        stream.synchronize()
    except BaseException as exc:  # re-raised in the main thread
        errors.append(exc)


threads = [threading.Thread(target=worker, args=(s,)) for s in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    raise errors[0]
torch.cuda.synchronize()
print("memcheck case ran")
