"""The README's model table agrees with the code: parameter counts, valid input sizes, frameworks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "packages" / "delira-models" / "README.md"
CHANGELOG = README.with_name("CHANGELOG.md")


def table_rows():
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Model | `get_model` call"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append(cells)
    return rows


def parse_call(cell):
    call = ast.parse(cell.strip("`"), mode="eval").body
    return call.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def test_table_lists_every_model():
    names = {parse_call(row[1])[0] for row in table_rows()}
    from delira.models import available_models

    assert names == set(available_models()) - {"resnet"}  # "resnet" is the depth-generic name


@pytest.mark.torch
@pytest.mark.parametrize("row", table_rows(), ids=lambda row: row[0])
def test_table_row_matches_the_code(row):
    import torch

    from delira.models import get_model, input_size_rule

    label, call, params_2d, params_3d, sizes, frameworks = row
    name, kwargs = parse_call(call)
    with torch.device("meta"):  # shapes only
        counts = [get_model(name, spatial_dims=d, **kwargs).num_parameters() for d in (2, 3)]
    assert [int(params_2d.replace(",", "")), int(params_3d.replace(",", ""))] == counts, label
    if name == "dcgan_generator":
        assert sizes == "input: latent vectors (N, 100)"
    else:
        assert sizes == input_size_rule(name, **kwargs).describe()
    assert frameworks == "PyTorch, TensorFlow"


def test_changelog_has_the_models_under_0_1_0():
    text = CHANGELOG.read_text()
    section = text.split("## [0.1.0]")[1]
    for word in ("ResNet", "UNet", "DCGAN", "torch_to_keras", "valid_input_sizes"):
        assert word in section
