"""GanSampleGrid: the PNG grid of generated samples, decoded independently (a zlib + CRC decoder
written here, and Pillow) and compared with a grid built here from the generator's own output."""

from __future__ import annotations

import math
import struct
import types
import zlib

import numpy as np
import pytest

from delira.training.callbacks import GanSampleGrid


def decode_png_gray8(blob: bytes) -> np.ndarray:
    """A minimal reference decoder: 8-bit grayscale, no interlace, every row with filter type 0;
    checks the signature, every chunk's CRC and the chunk order."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, data = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", blob[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data), f"bad CRC in {kind!r}"
        chunks.append((kind, data))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 0, 0, 0, 0)
    raw = zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, width + 1)
    assert (rows[:, 0] == 0).all(), "a row uses a filter other than 0"
    return rows[:, 1:].copy()


def expected_grid(images: np.ndarray) -> np.ndarray:
    """The grid the callback documents, built another way: first channel, middle slice of 3D,
    scaled over the batch, tiles padded on top/left by 2 and the whole padded bottom/right by 2."""
    x = images[:, 0].astype(np.float64)
    if x.ndim == 4:
        x = x[:, x.shape[1] // 2]
    u = np.round((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)
    n, h, w = u.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = np.zeros((rows * cols, h, w), np.uint8)
    tiles[:n] = u
    tiles = np.pad(tiles, ((0, 0), (2, 0), (2, 0)))
    grid = (
        tiles.reshape(rows, cols, h + 2, w + 2).transpose(0, 2, 1, 3).reshape(rows * (h + 2), cols * (w + 2))
    )
    return np.pad(grid, ((0, 2), (0, 2)))


def fake_trainer(net, framework, main=True):
    return types.SimpleNamespace(network=net, framework=framework, is_main_process=main)


def check_png(path, reference_images):
    from PIL import Image

    ours = decode_png_gray8(path.read_bytes())
    with Image.open(path) as img:
        assert img.mode == "L"
        pillow = np.asarray(img)
    expected = expected_grid(reference_images)
    np.testing.assert_array_equal(ours, pillow)
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)


# --- PyTorch -------------------------------------------------------------------------------------
def torch_gan(spatial_dims=2, image_size=16):
    import torch

    from delira.models.torch import DCGAN

    torch.manual_seed(0)
    return DCGAN(
        spatial_dims=spatial_dims,
        latent_dim=8,
        channels=1,
        image_size=image_size,
        generator_features=4,
        discriminator_features=4,
    )


@pytest.mark.torch
@pytest.mark.parametrize(("spatial_dims", "num_samples"), [(2, 5), (3, 4)])
def test_torch_grid_equals_the_generator_output(tmp_path, spatial_dims, num_samples):
    import torch

    net = torch_gan(spatial_dims, 16 if spatial_dims == 2 else 8)
    net.train()
    net.discriminator.eval()  # a mixed state: each module's own mode must come back
    callback = GanSampleGrid(tmp_path / "samples", num_samples=num_samples, seed=7)
    rng_before = torch.get_rng_state()
    callback.on_epoch_end(fake_trainer(net, "torch"), 2, {})
    assert torch.equal(torch.get_rng_state(), rng_before)  # the fixed latent batch draws from numpy
    assert net.generator.training and not net.discriminator.training
    assert all(m.training for m in net.generator.modules())
    z = np.random.default_rng(7).standard_normal((num_samples, 8)).astype(np.float32)
    net.generator.eval()
    with torch.no_grad():
        reference = net.generator(torch.from_numpy(z)).numpy()
    check_png(tmp_path / "samples" / "samples_epoch_003.png", reference)
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["samples_epoch_003.png"]  # no temp left


@pytest.mark.torch
def test_torch_trainer_writes_one_grid_per_due_epoch_on_rank_0(tmp_path):
    import torch

    from delira.training import PyTorchNetworkTrainer

    net = torch_gan()
    data = np.random.default_rng(0).standard_normal((8, 1, 16, 16)).astype(np.float32)
    batches = [{"data": data[:4]}, {"data": data[4:]}]
    trainer = PyTorchNetworkTrainer(
        net,
        {"adversarial": torch.nn.BCEWithLogitsLoss()},
        callbacks=[GanSampleGrid(tmp_path / "every2", num_samples=4, every=2)],
        verbose=False,
    )
    trainer.fit(batches, epochs=3)
    assert sorted(p.name for p in (tmp_path / "every2").iterdir()) == ["samples_epoch_002.png"]
    # the latest weights: the file of a last epoch equals the generator's output after training
    callback = GanSampleGrid(tmp_path / "final", num_samples=4)
    callback.on_epoch_end(trainer, 2, {})
    z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    net.eval()
    with torch.no_grad():
        reference = net(torch.from_numpy(z)).numpy()
    check_png(tmp_path / "final" / "samples_epoch_003.png", reference)
    # another rank writes nothing
    GanSampleGrid(tmp_path / "rank1").on_epoch_end(fake_trainer(net, "torch", main=False), 0, {})
    assert not (tmp_path / "rank1").exists()


# --- TensorFlow ----------------------------------------------------------------------------------
@pytest.mark.tf
def test_keras_grid_equals_the_generator_output_in_inference_mode(tmp_path):
    import keras

    from delira.models.tf import DCGAN

    keras.utils.set_random_seed(0)
    net = DCGAN(
        spatial_dims=2,
        latent_dim=8,
        channels=1,
        image_size=16,
        generator_features=4,
        discriminator_features=4,
    )
    stats = [v.numpy() for v in net.generator.non_trainable_variables]
    GanSampleGrid(tmp_path, num_samples=6, seed=1).on_epoch_end(fake_trainer(net, "keras"), 0, {})
    # training=False: the batch-norm statistics were not updated
    for before, after in zip(stats, net.generator.non_trainable_variables):
        np.testing.assert_array_equal(before, after.numpy())
    z = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    reference = net.generator(z, training=False).numpy()
    check_png(tmp_path / "samples_epoch_001.png", reference)


# --- arguments and the encoder -------------------------------------------------------------------
def test_encoder_round_trips_and_arguments_are_checked(tmp_path):
    from PIL import Image

    from delira.training.callbacks import encode_png_gray8, tile_grid

    picture = np.random.default_rng(0).integers(0, 256, (5, 9), dtype=np.uint8)
    (tmp_path / "p.png").write_bytes(encode_png_gray8(picture))
    with Image.open(tmp_path / "p.png") as img:
        np.testing.assert_array_equal(np.asarray(img), picture)
    np.testing.assert_array_equal(decode_png_gray8(encode_png_gray8(picture)), picture)
    assert (tile_grid(np.ones((3, 1, 4, 4))) == 0).all()  # a constant batch: all black, no division by 0
    with pytest.raises(ValueError, match="uint8"):
        encode_png_gray8(picture.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        tile_grid(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        tile_grid(np.full((1, 1, 4, 4), np.nan))
    for kwargs in ({"num_samples": 0}, {"every": 0}, {"seed": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            GanSampleGrid(tmp_path, **kwargs)
    with pytest.raises(AttributeError, match="latent_dim"):
        GanSampleGrid(tmp_path).on_epoch_end(fake_trainer(object(), "torch"), 0, {})
