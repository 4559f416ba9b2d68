"""Experiment configuration: defaults, shipped configs, validation errors, ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from delira.training.config import DEFAULTS, ConfigError, apply_overrides, load_config, parse_override

SHIPPED = Path(__file__).parents[2] / "packages/delira-training/src/delira/training/configs"


def test_no_config_is_the_builtin_default():
    config = load_config(None)
    assert config == DEFAULTS
    assert config is not DEFAULTS  # a copy: changing it cannot change the defaults
    assert config["model"]["name"] == "unet" and config["data"]["kind"] == "phantom"
    assert config["experiment"]["folds"] == 3


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_validate_and_keep_their_values(path):
    raw = yaml.safe_load(path.read_text())
    config = load_config(path)

    def check(written, resolved, where):  # every value written in the file survives the merge
        if isinstance(written, dict) and where[-1:] != ["args"]:
            for key, value in written.items():
                check(value, resolved[key], [*where, key])
        else:
            assert (
                resolved == pytest.approx(written) if isinstance(written, float) else resolved == written
            ), where

    check(raw, config, [])
    # and the same config is found by its name
    assert load_config(path.stem) == config


def test_the_shipped_default_is_the_builtin_default():
    assert load_config(SHIPPED / "unet3d-phantom.yaml") == DEFAULTS


def test_shipped_configs_cover_the_examples_of_the_issue():
    configs = {p.stem: load_config(p) for p in SHIPPED.glob("*.yaml")}
    kinds = {(c["model"]["name"], c["backend"], c["data"]["kind"]) for c in configs.values()}
    assert ("unet", "torch", "phantom") in kinds
    assert ("unet", "tf", "phantom") in kinds
    assert ("dcgan", "torch", "phantom") in kinds
    assert ("unet", "torch", "decathlon") in kinds
    assert any(
        c["model"]["name"].startswith("resnet") and c["model"]["args"]["spatial_dims"] == 3
        for c in configs.values()
    )


def test_unknown_keys_suggest_the_nearest_valid_one():
    with pytest.raises(ConfigError) as info:
        load_config({"trainig": {"epochs": 2}})
    assert "trainig: unknown key; did you mean 'training'?" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config({"training": {"epoch": 2}, "data": {"phantom": {"num_case": 4}}})
    message = str(info.value)
    assert "training.epoch: unknown key; did you mean 'epochs'?" in message
    assert "data.phantom.num_case: unknown key; did you mean 'num_cases'?" in message
    assert len(info.value.problems) == 2  # every problem at once


def test_wrong_types_name_the_key_and_the_expected_type():
    with pytest.raises(ConfigError) as info:
        load_config({"training": {"epochs": "ten", "lr": [1]}, "data": {"patch_size": "big"}})
    problems = info.value.problems
    assert any(p.startswith("training.epochs: expected an integer") and "'ten'" in p for p in problems)
    assert any(p.startswith("training.lr: expected a number") for p in problems)
    assert any(p.startswith("data.patch_size: expected a list of integers") for p in problems)
    assert all("--set" in p for p in problems)  # says how to fix it
    with pytest.raises(ConfigError, match=r"training\.epochs: expected an integer.*got bool"):
        load_config({"training": {"epochs": True}})


def test_choices_ranges_and_cross_key_rules():
    with pytest.raises(
        ConfigError, match=r"backend: 'pytorch' is not one of \['torch', 'tf'\]; did you mean 'torch'\?"
    ):
        load_config({"backend": "pytorch"})
    with pytest.raises(ConfigError, match=r"training\.epochs: 0 is below the minimum 1"):
        load_config({"training": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"data\.path: data\.kind is 'decathlon' but no path is given"):
        load_config({"data": {"kind": "decathlon"}})
    with pytest.raises(ConfigError, match=r"model\.name: 'resnet18' does not fit task 'segmentation'"):
        load_config({"model": {"name": "resnet18", "args": {}}})


def test_set_overrides_parse_yaml_values():
    assert parse_override("training.epochs=5") == (["training", "epochs"], 5)
    assert parse_override("training.lr=1e-4") == (["training", "lr"], 1e-4)
    assert parse_override("data.patch_size=[16, 16, 16]") == (["data", "patch_size"], [16, 16, 16])
    assert parse_override("training.grad_clip=null") == (["training", "grad_clip"], None)
    config = load_config(None, ["training.epochs=5", "model.args.features=[4, 8]", "backend=tf"])
    assert config["training"]["epochs"] == 5
    assert config["model"]["args"] == {**DEFAULTS["model"]["args"], "features": [4, 8]}
    assert config["backend"] == "tf"
    assert DEFAULTS["training"]["epochs"] == 40  # untouched
    with pytest.raises(ConfigError, match=r"training\.epohcs: unknown key; did you mean 'epochs'\?"):
        load_config(None, ["training.epohcs=5"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(DEFAULTS, ["training.epochs"])


def test_yaml_numbers_in_exponent_notation_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 1e-4\n  weight_decay: 3E-5\n")
    config = load_config(path)
    assert config["training"]["lr"] == pytest.approx(1e-4)
    assert config["training"]["weight_decay"] == pytest.approx(3e-5)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(
        ConfigError, match=r"no such file; give a YAML file or a shipped config: .*unet3d-phantom"
    ):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(listed)
    typo = tmp_path / "typo.yaml"
    typo.write_text("modle:\n  name: unet\n")
    with pytest.raises(
        ConfigError, match=r"(?s)in .*typo\.yaml.*modle: unknown key; did you mean 'model'\?"
    ) as info:
        load_config(typo)
    assert str(typo) in str(info.value)


def test_the_configuration_reference_lists_every_key():
    from delira.training.config import SCHEMA, Field

    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()

    def keys(schema, prefix=""):
        for name, spec in schema.items():
            if isinstance(spec, Field):
                yield prefix + name
            else:
                yield from keys(spec, f"{prefix}{name}.")

    missing = [key for key in keys(SCHEMA) if f"`{key}`" not in text]
    assert not missing, f"docs/configuration.md does not describe {missing}"
