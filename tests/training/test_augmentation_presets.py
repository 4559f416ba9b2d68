"""``data.transforms``: the presets (canonical, mirror, light, nnunet, none), the list form, its
validation, ``--set`` from the CLI, test-time mirroring and the augmentation preview's title."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import delira.augment as da
from delira.training.builders import build_transforms, mirror_axes
from delira.training.config import ConfigError, load_config
from delira.training.prediction import tta_axes

PRESETS = ("canonical", "mirror", "light", "nnunet", "none")


def _config(transforms, shape=(16, 16, 16), **data):
    """The default job on phantoms of ``shape`` (2D or 3D) with ``data.transforms`` set."""
    dims = len(shape)
    section = {"phantom": {"shape": list(shape)}, "transforms": transforms, **data}
    if dims == 2:
        section.setdefault("augmentation", {})["rotation"] = [-180.0, 180.0]
    return load_config({"model": {"args": {"spatial_dims": dims, "features": [4, 8]}}, "data": section})


def _batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(2, 1, *shape)).astype(np.float32)
    seg = (rng.random((2, 1, *shape)) < 0.3).astype(np.int16) * 2
    return {"data": data, "seg": seg}


def _run(transform, shape, rng=7):
    return transform(rng=rng, **_batch(shape))


@pytest.mark.parametrize("shape", [(16, 16, 16), (16, 16)], ids=["3d", "2d"])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_builds_and_runs_on_a_tiny_batch(preset, shape):
    config = _config(preset, shape)
    transform = build_transforms(config, shape, seed=0)
    if preset == "none":
        assert transform is None
        return
    out = _run(transform, shape)
    assert out["data"].shape == (2, 1, *shape) and out["data"].dtype == np.float32
    assert out["seg"].shape == (2, 1, *shape) and np.issubdtype(out["seg"].dtype, np.integer)
    assert set(np.unique(out["seg"])) <= {0, 2}  # labels are resampled, never blended
    assert np.all(np.isfinite(out["data"]))
    again = _run(build_transforms(config, shape, seed=0), shape)  # the same seed, the same output
    np.testing.assert_array_equal(out["data"], again["data"])
    np.testing.assert_array_equal(out["seg"], again["seg"])
    assert not np.array_equal(out["data"], _run(transform, shape, rng=8)["data"])


def test_nnunet_runs_per_channel_on_multi_channel_batches():
    """Two channels (brightness, contrast and gamma then run after the fused pass): deterministic per
    seed, and the channels' brightness factors differ (an identical pair of channels drifts apart)."""
    shape = (16, 16, 16)
    rng = np.random.default_rng(0)
    one = rng.normal(size=(8, 1, *shape)).astype(np.float32) + 3.0
    batch = {"data": np.concatenate([one, one], axis=1), "seg": np.zeros((8, 1, *shape), np.int16)}
    members = build_transforms(_config("nnunet", shape), shape).transforms
    bright = next(t for t in members if type(t).__name__ == "BrightnessMultiplicative")
    out = da.Compose([bright], seed=0)(**{k: v.copy() for k, v in batch.items()})
    ratios = out["data"].reshape(8, 2, -1) / batch["data"].reshape(8, 2, -1)
    changed = ~np.all(np.isclose(ratios, 1.0), axis=(1, 2))
    assert changed.any() and not np.allclose(ratios[changed, 0], ratios[changed, 1])
    full = build_transforms(_config("nnunet", shape), shape, seed=0)
    a = full(rng=3, **{k: v.copy() for k, v in batch.items()})
    b = build_transforms(_config("nnunet", shape), shape, seed=0)(
        rng=3, **{k: v.copy() for k, v in batch.items()}
    )
    assert a["data"].shape == (8, 2, *shape) and np.all(np.isfinite(a["data"]))
    np.testing.assert_array_equal(a["data"], b["data"])


def test_canonical_is_the_pipeline_it_was():
    """``canonical`` unchanged: the objects the builder made before the presets, built by hand."""
    shape = (16, 16, 16)
    config = _config("canonical", shape)
    aug = config["data"]["augmentation"]
    by_hand = da.Compose(
        [
            da.SpatialTransform(
                shape,
                rotation=tuple(aug["rotation"]),
                scale=tuple(aug["scale"]),
                elastic_alpha=(0.0, 200.0),
                elastic_sigma=(9.0, 13.0),
                p_rotation=aug["p_rotation"],
                p_scale=aug["p_scale"],
                p_elastic=aug["p_elastic"],
                order_data=1,
                order_seg=0,
            ),
            da.GaussianNoise(std=(0.0, 0.01)),
            da.BrightnessMultiplicative((0.9, 1.1)),
            da.Gamma((0.8, 1.25), retain_stats=True),
            da.Mirror((0, 1, 2), p_per_axis=0.5),
        ]
    )
    for rng in (0, 1, 2):
        got, want = _run(build_transforms(config, shape), shape, rng), _run(by_hand, shape, rng)
        np.testing.assert_array_equal(got["data"], want["data"])
        np.testing.assert_array_equal(got["seg"], want["seg"])


def test_nnunet_preset_has_nnunet_v2s_ops_and_probabilities():
    """Against nnU-Net v2's nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py,
    ``nnUNetTrainer.get_training_transforms`` (numbers copied from there by hand: the reference):
    SpatialTransform(p_elastic_deform=0, p_rotation=0.2, p_scaling=0.2, scaling=(0.7, 1.4),
    p_synchronize_scaling_across_axes=1); RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1),
    synchronize_channels=True), 0.1); RandomTransform(GaussianBlurTransform(blur_sigma=(0.5, 1.),
    synchronize_channels=False, synchronize_axes=False, p_per_channel=0.5), 0.2);
    RandomTransform(MultiplicativeBrightnessTransform(BGContrast((0.75, 1.25)), synchronize_channels=False,
    p_per_channel=1), 0.15); RandomTransform(ContrastTransform(BGContrast((0.75, 1.25)), preserve_range=True,
    synchronize_channels=False, p_per_channel=1), 0.15);
    RandomTransform(SimulateLowResolutionTransform(scale=(0.5, 1), synchronize_channels=False,
    synchronize_axes=True, p_per_channel=0.5), 0.25); RandomTransform(GammaTransform(BGContrast((0.7,
    1.5)), p_invert_image=1, synchronize_channels=False, p_per_channel=1, p_retain_stats=1), 0.1);
    RandomTransform(GammaTransform(BGContrast((0.7, 1.5)), p_invert_image=0, synchronize_channels=False,
    p_per_channel=1, p_retain_stats=1), 0.3); MirrorTransform(allowed_axes=mirror_axes)."""
    shape = (16, 16, 16)
    config = _config("nnunet", shape, augmentation={"rotation": [-30.0, 30.0]})
    members = build_transforms(config, shape).transforms
    assert [type(t).__name__ for t in members] == [
        "SpatialTransform",
        "GaussianNoise",
        "GaussianBlur",
        "BrightnessMultiplicative",
        "Contrast",
        "SimulateLowResolution",
        "Gamma",
        "Gamma",
        "Mirror",
    ]
    spatial, noise, blur, bright, contrast, lowres, inv_gamma, gamma, mirror = members
    assert spatial.patch_size == shape
    assert (spatial.p_rotation, spatial.p_scale, spatial.p_elastic) == (0.2, 0.2, 0.0)
    assert tuple(spatial.scale) == (0.7, 1.4) and not spatial.scale_per_axis
    assert tuple(spatial.rotation) == (-30.0, 30.0)  # nnU-Net's 3D rotation_for_DA, in degrees
    assert (noise.p, tuple(noise.std)) == (0.1, (0.0, 0.1))
    assert (blur.p, tuple(blur.sigma), blur.per_axis) == (0.2, (0.5, 1.0), True)
    assert (bright.p, tuple(bright.factor)) == (0.15, (0.75, 1.25))
    assert (contrast.p, tuple(contrast.factor), contrast.preserve_range) == (0.15, (0.75, 1.25), True)
    assert (lowres.p, tuple(lowres.zoom)) == (0.25, (0.5, 1.0))
    assert (inv_gamma.p, tuple(inv_gamma.gamma), inv_gamma.invert, inv_gamma.retain_stats) == (
        0.1,
        (0.7, 1.5),
        True,
        True,
    )
    assert (gamma.p, tuple(gamma.gamma), gamma.invert, gamma.retain_stats) == (0.3, (0.7, 1.5), False, True)
    assert (mirror.axes, mirror.p_per_axis) == ((0, 1, 2), 0.5)
    # per-channel draws where the class offers them (nnU-Net: synchronize_channels=False, p_per_channel 0.5)
    for t, p_channel in (
        (blur, 0.5),
        (lowres, 0.5),
        (bright, 1.0),
        (contrast, 1.0),
        (inv_gamma, 1.0),
        (gamma, 1.0),
    ):
        assert (t.per_channel, t.p_per_channel) == (True, p_channel)
    assert noise.per_channel is False and noise.p_per_channel == 1.0  # synchronize_channels=True
    # BGContrast: half the factors below 1, half above
    assert [t.sampling for t in (bright, contrast, inv_gamma, gamma)] == ["bg"] * 4
    if hasattr(lowres, "per_axis"):
        assert lowres.per_axis is False  # synchronize_axes=True


def test_nnunet_preset_uses_dummy_2d_for_flat_patches_as_nnunet_decides():
    """nnU-Net's configure_rotation_dummyDA_mirroring_and_inital_patch_size: a 3D patch with
    ``max(patch) / patch[0] > 3`` (ANISO_THRESHOLD) gets dummy-2D augmentation: in-plane rotation
    (+-180 deg there; here data.augmentation.rotation's range about axis 0, which ``delira plan`` sets
    to +-180) and ``ignore_axes=(0,)`` for the low-resolution simulation."""
    import inspect

    params = inspect.signature(da.SpatialTransform).parameters
    if "dummy_2d_axis" not in params:
        pytest.skip("SpatialTransform has no dummy_2d_axis yet")
    planned = {"rotation": [[-180.0, 180.0], [-10.0, 10.0], [-10.0, 10.0]]}
    flat, cube = (4, 16, 16), (16, 16, 16)
    members = build_transforms(_config("nnunet", cube, augmentation=planned), flat).transforms
    spatial, lowres = members[0], members[5]
    assert spatial.dummy_2d_axis == 0 and tuple(spatial.rotation) == (-180.0, 180.0)
    assert tuple(lowres.ignore_axes) == (0,)
    out = _run(build_transforms(_config("nnunet", cube, augmentation=planned), flat), flat)
    assert out["data"].shape == (2, 1, *flat)
    members = build_transforms(_config("nnunet", cube, augmentation=planned), cube).transforms
    assert members[0].dummy_2d_axis is None and members[5].ignore_axes is None
    # 4 x 12 x 12 is exactly 3x: no dummy 2D (nnU-Net's test is strictly greater)
    assert build_transforms(_config("nnunet", cube), (4, 12, 12)).transforms[0].dummy_2d_axis is None


def test_light_preset_is_small_rotation_scale_noise_brightness_and_mirror():
    shape = (16, 16, 16)
    members = build_transforms(_config("light", shape), shape).transforms
    assert [type(t).__name__ for t in members] == [
        "SpatialTransform",
        "GaussianNoise",
        "BrightnessMultiplicative",
        "Mirror",
    ]
    spatial, noise, bright, mirror = members
    assert tuple(spatial.rotation) == (-15.0, 15.0) and tuple(spatial.scale) == (0.9, 1.1)
    assert (spatial.p_rotation, spatial.p_scale, spatial.p_elastic) == (0.2, 0.2, 0.0)
    assert not spatial.has_elastic or spatial.p_elastic == 0.0
    assert (noise.p, tuple(noise.std)) == (0.15, (0.0, 0.05))
    assert (bright.p, tuple(bright.factor)) == (0.15, (0.9, 1.1))
    assert mirror.axes == (0, 1, 2)


@pytest.mark.parametrize("preset", ["canonical", "light", "nnunet", "mirror"])
def test_presets_mirror_data_augmentation_mirror_axes(preset):
    shape = (16, 16, 16)
    config = _config(preset, shape, augmentation={"mirror_axes": [1, 2]})
    assert mirror_axes(config) == (1, 2)
    members = build_transforms(config, shape).transforms
    assert [t.axes for t in members if isinstance(t, da.Mirror)] == [(1, 2)]


LIST = [
    {"name": "SpatialTransform", "rotation": [-20, 20], "scale": [0.9, 1.2], "p_elastic": 0.0},
    {"name": "GaussianNoise", "std": [0, 0.1], "p": 0.5},
    {"name": "Gamma", "gamma": [0.7, 1.5], "invert": True, "p": 0.4},
    {"name": "GaussianBlur", "sigma": [0.5, 1.0], "p": 0.3},
    {"name": "Mirror", "axes": [0, 2]},
]


@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 16, 8)])
def test_the_list_form_builds_what_the_same_objects_built_by_hand_give(shape):
    config = _config(LIST, (16, 16, 16))
    built = build_transforms(config, shape, seed=0)
    by_hand = da.Compose(
        [
            da.SpatialTransform(shape, rotation=(-20, 20), scale=(0.9, 1.2), p_elastic=0.0),
            da.GaussianNoise(std=(0, 0.1), p=0.5),
            da.Gamma(gamma=(0.7, 1.5), invert=True, p=0.4),
            da.GaussianBlur(sigma=(0.5, 1.0), p=0.3),
            da.Mirror(axes=(0, 2)),
        ]
    )
    assert built.transforms[0].patch_size == shape  # filled in from the training shape
    for rng in (0, 3):
        got, want = _run(built, shape, rng), _run(by_hand, shape, rng)
        np.testing.assert_array_equal(got["data"], want["data"])
        np.testing.assert_array_equal(got["seg"], want["seg"])


def test_a_given_patch_size_is_kept_and_mirror_without_axes_mirrors_the_configured_axes():
    entries = [{"name": "SpatialTransform", "patch_size": [8, 8, 8]}, {"name": "Mirror"}]
    config = _config(entries, augmentation={"mirror_axes": [0, 1]})
    spatial, mirror = build_transforms(config, (16, 16, 16)).transforms
    assert spatial.patch_size == (8, 8, 8)
    assert mirror.axes == (0, 1)
    assert mirror_axes(config) == (0, 1)


def test_an_empty_list_is_no_augmentation():
    config = _config([])
    assert build_transforms(config, (16, 16, 16)) is None
    assert mirror_axes(config) == ()


def test_test_time_mirroring_follows_the_lists_mirror_entries():
    with_mirror = _config([{"name": "GaussianNoise"}, {"name": "Mirror", "axes": [2]}])
    assert mirror_axes(with_mirror) == (2,) and tta_axes(with_mirror) == (2,)
    two = _config([{"name": "Mirror", "axes": [2]}, {"name": "Mirror", "axes": [0]}])
    assert mirror_axes(two) == (0, 2)
    without = _config([{"name": "GaussianNoise"}])
    assert mirror_axes(without) == () and tta_axes(without) == ()
    assert tta_axes(without, mirror=True) == (0, 1, 2)  # asked for: all axes, as for `none`
    default_axes = _config([{"name": "Mirror"}])
    assert mirror_axes(default_axes) == (0, 1, 2)
    assert mirror_axes(_config("none")) == () and mirror_axes(_config("nnunet")) == (0, 1, 2)


def _problems(entries, shape=(16, 16, 16), **data):
    with pytest.raises(ConfigError) as info:
        _config(entries, shape, **data)
    return info.value.problems


def test_an_unknown_transform_name_suggests_the_closest():
    (problem,) = _problems([{"name": "GausianNoise"}])
    assert problem.startswith("data.transforms[0]: 'GausianNoise' is not a delira.augment transform")
    assert "did you mean 'GaussianNoise'?" in problem
    assert "Mirror" in problem and "SpatialTransform" in problem  # the valid names are listed


def test_an_unknown_argument_lists_the_accepted_ones():
    (problem,) = _problems([{"name": "Mirror"}, {"name": "Gamma", "gama": [0.7, 1.5]}])
    assert problem.startswith("data.transforms[1] (Gamma): unknown argument 'gama'; did you mean 'gamma'?")
    for name in ("gamma", "invert", "retain_stats", "p"):
        assert re.search(rf"\b{name}\b", problem.split("accepts", 1)[1])


def test_a_wrong_value_carries_the_constructors_own_message_and_the_position():
    with pytest.raises(ValueError) as own:
        da.Gamma(gamma=(-1.0, 2.0))
    (problem,) = _problems(
        [{"name": "Mirror"}, {"name": "GaussianNoise"}, {"name": "Gamma", "gamma": [-1.0, 2.0]}]
    )
    assert problem.startswith("data.transforms[2] (Gamma): ")
    assert str(own.value) in problem
    with pytest.raises(ValueError) as own_p:
        da.GaussianNoise(p=1.5)
    (problem,) = _problems([{"name": "GaussianNoise", "p": 1.5}])
    assert problem.startswith("data.transforms[0] (GaussianNoise): ") and str(own_p.value) in problem


def test_entries_that_are_not_transforms_are_refused_with_the_fix():
    problems = _problems(
        [
            3,
            {"std": [0, 0.1]},
            {"name": "Compose"},
            {"name": "GaussianNoise", "seed": 1},
            {"name": "SpatialTransform", "p": 0.5},
            {"name": "Mirror", "axes": [0, 3]},
        ]
    )
    assert len(problems) == 6  # all of them at once
    assert problems[0].startswith("data.transforms[0]: expected a mapping with a transform name")
    assert problems[1].startswith("data.transforms[1]: expected a mapping with a transform name")
    assert problems[2].startswith("data.transforms[2]: 'Compose' is the list itself; give its members")
    assert "data.transforms[3] (GaussianNoise): 'seed' is not set per entry" in problems[3]
    assert (
        problems[4]
        == "data.transforms[4] (SpatialTransform): 'p' is set by SpatialTransform itself; remove it"
    )
    assert problems[5].startswith("data.transforms[5] (Mirror): axes [0, 3] do not fit 3D data")


def test_one_of_and_random_apply_hold_nested_entries():
    entries = [
        {
            "name": "OneOf",
            "transforms": [{"name": "GaussianNoise", "std": [0, 0.1]}, {"name": "GaussianBlur"}],
        },
        {"name": "RandomApply", "transform": {"name": "Mirror", "axes": [1]}, "p": 0.3},
    ]
    shape = (16, 16, 16)
    config = _config(entries, shape)
    built = build_transforms(config, shape)
    by_hand = da.Compose(
        [
            da.OneOf([da.GaussianNoise(std=(0, 0.1)), da.GaussianBlur()]),
            da.RandomApply(da.Mirror(axes=(1,)), p=0.3),
        ]
    )
    for rng in (0, 1):
        got, want = _run(built, shape, rng), _run(by_hand, shape, rng)
        np.testing.assert_array_equal(got["data"], want["data"])
        np.testing.assert_array_equal(got["seg"], want["seg"])
    assert mirror_axes(config) == (1,)  # a nested Mirror counts for test-time mirroring


def test_nested_entries_are_checked_with_their_path():
    problems = _problems(
        [
            {"name": "OneOf", "transforms": [{"name": "GaussianNoise"}, {"name": "Gamma", "gamma": [0, 1]}]},
            {"name": "RandomApply", "transform": {"name": "Blur"}},
            {"name": "OneOf", "transforms": []},
            {"name": "OneOf", "transforms": [{"name": "Mirror"}], "weights": [1, 2]},
        ]
    )
    with pytest.raises(ValueError) as gamma:
        da.Gamma(gamma=(0, 1))
    with pytest.raises(ValueError) as weights:
        da.OneOf([da.Mirror()], weights=(1, 2))  # YAML lists arrive as tuples
    assert len(problems) == 4
    assert (
        problems[0].startswith("data.transforms[0].transforms[1] (Gamma): ")
        and str(gamma.value) in problems[0]
    )
    assert problems[1].startswith("data.transforms[1].transform: 'Blur' is not a delira.augment transform")
    assert problems[2].startswith(
        "data.transforms[2] (OneOf): transforms must be a non-empty list of entries"
    )
    assert problems[3].startswith("data.transforms[3] (OneOf): ") and str(weights.value) in problems[3]


def test_mirror_axes_are_checked_against_2d_data():
    (problem,) = _problems([{"name": "Mirror", "axes": [0, 2]}], shape=(16, 16))
    assert "do not fit 2D data; give axes in 0..1" in problem


def test_rot90_and_transpose_axes_default_to_the_datas_spatial_axes():
    """An entry without axes gets (0, 1) on 2D data (the classes' own default (0, 1, 2) is 3D only):
    every output sample is a quarter turn / transpose of its input (numpy, by hand), seg alike."""
    entries = [{"name": "Rot90"}, {"name": "TransposeAxes"}]
    rot, transpose = build_transforms(_config(entries, (16, 16)), (16, 16)).transforms
    assert rot.axes == (0, 1) and transpose.axes == (0, 1)
    rot3, transpose3 = build_transforms(_config(entries), (16, 16, 16)).transforms
    assert rot3.axes == (0, 1, 2) and transpose3.axes == (0, 1, 2)
    for entry, candidates in (
        (
            {"name": "Rot90", "num_rot": [1, 2, 3]},
            lambda a: [np.rot90(a, k, axes=(-2, -1)) for k in (1, 2, 3)],
        ),
        ({"name": "TransposeAxes"}, lambda a: [a, np.swapaxes(a, -1, -2)]),
    ):
        batch = _batch((16, 16))
        out = _run(build_transforms(_config([entry], (16, 16)), (16, 16)), (16, 16))
        for i in range(2):
            hits = [
                k
                for k, (d, s) in enumerate(zip(candidates(batch["data"][i]), candidates(batch["seg"][i])))
                if np.array_equal(out["data"][i], d) and np.array_equal(out["seg"][i], s)
            ]
            assert hits, f"{entry['name']}: sample {i} is no rotation/transpose of its input"
    (problem,) = _problems([{"name": "Rot90", "axes": [0, 2]}], shape=(16, 16))
    assert problem.startswith("data.transforms[0] (Rot90): axes [0, 2] do not fit 2D data")


def test_a_preset_name_typo_and_a_wrong_type_are_reported():
    (problem,) = _problems("nnunte")
    assert "'nnunte' is not one of" in problem and "did you mean 'nnunet'?" in problem
    (problem,) = _problems(3)
    assert problem.startswith("data.transforms: expected a preset name or a list of mappings")


def test_validate_checks_a_list_given_as_a_tuple():
    import copy

    from delira.training.config import DEFAULTS, validate

    config = copy.deepcopy(DEFAULTS)
    config["data"]["transforms"] = ({"name": "Gama"},)
    with pytest.raises(ConfigError, match=r"data.transforms\[0\]: 'Gama' is not a delira.augment transform"):
        validate(config)


def test_the_check_builds_the_entries_without_touching_data(monkeypatch):
    """The check only constructs: no transform is applied while the config is checked."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("a transform ran during the config check")

    monkeypatch.setattr(da.Transform, "__call__", refuse)
    config = _config(LIST)
    assert config["data"]["transforms"] == LIST


def test_set_on_the_cli_takes_a_preset_and_a_list(capsys):
    from delira.training.cli import build_parser, main

    args = build_parser().parse_args(["run", "--set", "data.transforms=nnunet"])
    assert load_config(None, args.set)["data"]["transforms"] == "nnunet"
    text = "data.transforms=[{name: GaussianNoise, std: [0, 0.1], p: 0.1}, {name: Mirror, axes: [0]}]"
    config = load_config(None, build_parser().parse_args(["run", "--set", text]).set)
    assert config["data"]["transforms"] == [
        {"name": "GaussianNoise", "std": [0, 0.1], "p": 0.1},
        {"name": "Mirror", "axes": [0]},
    ]
    assert mirror_axes(config) == (0,)
    assert main(["run", "--set", "data.transforms=[{name: Gama}]"]) == 2
    err = capsys.readouterr().err
    assert "data.transforms[0]: 'Gama' is not a delira.augment transform; did you mean 'Gamma'?" in err


def test_a_yaml_file_with_the_list_form_loads_and_dumps(tmp_path):
    from delira.training.config import dump_config

    path = tmp_path / "aug.yaml"
    path.write_text(yaml.safe_dump({"data": {"transforms": LIST}}))
    config = load_config(path)
    assert config["data"]["transforms"] == LIST
    again = load_config(dump_config(config, tmp_path / "again.yaml"))
    assert again["data"]["transforms"] == LIST


def _png_title(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get("Title", "")


def test_preview_draws_and_stores_a_title(tmp_path):
    pytest.importorskip("matplotlib")
    transform = da.Compose([da.GaussianNoise(std=(0, 0.1)), da.Mirror((0, 1))])
    path = da.preview(_batch((16, 16)), transform, tmp_path / "p.png", title="GaussianNoise, Mirror")
    assert _png_title(path) == "GaussianNoise, Mirror"
    plain = da.preview(_batch((16, 16)), transform, tmp_path / "q.png")
    assert _png_title(plain) == ""


@pytest.mark.parametrize(
    ("transforms", "title"),
    [
        (
            "nnunet",
            "data.transforms: preset nnunet: SpatialTransform, GaussianNoise, GaussianBlur, "
            "BrightnessMultiplicative, Contrast, SimulateLowResolution, Gamma, Gamma, Mirror",
        ),
        ("mirror", "data.transforms: preset mirror: Mirror"),
        (
            [{"name": "GaussianNoise", "p": 0.5}, {"name": "Mirror"}],
            "data.transforms: list: GaussianNoise, Mirror",
        ),
    ],
)
def test_the_experiments_preview_names_the_chosen_transforms(tmp_path, tiny_config, transforms, title):
    pytest.importorskip("matplotlib")
    from delira.training.experiment import Experiment

    config = tiny_config(data={"transforms": transforms})
    experiment = Experiment(config, run_dir=tmp_path / "run")
    experiment.run_dir.mkdir(parents=True, exist_ok=True)
    experiment._preview(experiment.dataset())
    assert _png_title(experiment.run_dir / "augmentation.png") == title


@pytest.mark.cuda
@pytest.mark.parametrize("preset", ["canonical", "light", "nnunet", LIST])
def test_presets_on_the_cuda_executor_equal_the_cpu(preset):
    """``data.augment_device: cuda`` builds the same transforms with backend='cuda': on torch CUDA
    tensors the output stays on the GPU and equals the CPU executor's at the same seed."""
    torch = pytest.importorskip("torch")
    shape = (16, 16, 16)
    config = _config(preset, shape)
    batch = _batch(shape)
    cpu = build_transforms(config, shape, seed=0)(rng=5, **{k: v.copy() for k, v in batch.items()})
    gpu_batch = {k: torch.from_numpy(v).cuda() for k, v in batch.items()}
    gpu = build_transforms(config, shape, seed=0, backend="cuda")(rng=5, **gpu_batch)
    assert gpu["data"].is_cuda and gpu["seg"].is_cuda
    np.testing.assert_allclose(gpu["data"].cpu().numpy(), cpu["data"], atol=1e-3)
    same = np.mean(gpu["seg"].cpu().numpy() == cpu["seg"])
    assert same >= 0.99, f"only {same:.3%} of the labels agree between the CUDA and CPU executors"


def test_the_configuration_reference_documents_every_preset_and_a_valid_list_example():
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    section = text.split("## Augmentation presets", 1)[1].split("\n## ", 1)[0]
    for preset in PRESETS:
        assert f"`{preset}`" in section, f"docs/configuration.md does not describe the {preset} preset"
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    assert blocks, "the augmentation section has no YAML example of the list form"
    for block in blocks:
        example = yaml.safe_load(block)
        config = load_config(example)
        assert isinstance(config["data"]["transforms"], list)
        assert build_transforms(config, (16, 16, 16)) is not None
