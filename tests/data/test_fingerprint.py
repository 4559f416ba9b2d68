"""The dataset fingerprint against hand-computed values and numpy; its cache; its checks."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pytest.importorskip("scipy")
pytest.importorskip("delira.io")

from delira.data import (  # noqa: E402
    DatasetError,
    DecathlonDataset,
    Fingerprint,
    SyntheticPhantomDataset,
    compute_fingerprint,
)
from delira.io import read_image  # noqa: E402

# case id -> (shape, spacing)
CASES = {
    "lung_001": ((12, 10, 6), (0.8, 0.8, 2.5)),
    "lung_002": ((10, 10, 5), (0.7, 0.7, 3.0)),
    "lung_003": ((14, 9, 7), (0.9, 0.9, 2.0)),
}


def volumes(case_id):
    """Image: zero border, values 100 + index inside [1:-1]; labels: two cubes of 1, one block of 2."""
    shape, _ = CASES[case_id]
    image = np.zeros(shape, dtype=np.float32)
    inner = (slice(1, -1),) * 3
    k = int(case_id[-1])
    image[inner] = 100.0 * k + np.arange(np.prod([n - 2 for n in shape]), dtype=np.float32).reshape(
        [n - 2 for n in shape]
    )
    seg = np.zeros(shape, dtype=np.uint8)
    seg[1:3, 1:3, 1:3] = 1  # 8 voxels
    seg[5:7, 5:8, 2:4] = 1  # 12 voxels, apart from the first
    seg[-3:-1, 1:3, -3:-1] = 2  # 8 voxels
    return image, seg


def build(root, extra_image=None):
    training = []
    for case_id, (_, spacing) in CASES.items():
        image, seg = volumes(case_id)
        if extra_image is not None:
            image = extra_image(case_id, image)
        for folder, array in (("imagesTr", image), ("labelsTr", seg)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(
                nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(root / folder / f"{case_id}.nii.gz")
            )
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
    meta = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "nodule", "2": "vessel"},
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


class CountingReader:
    """delira.io.read_image, counting the files it reads (thread safe)."""

    def __init__(self):
        self.reads = 0
        self.lock = threading.Lock()

    def __call__(self, path):
        with self.lock:
            self.reads += 1
        return read_image(path)


def test_fingerprint_against_hand_computed_values(tmp_path):
    fp = compute_fingerprint(str(build(tmp_path)), progress=False, samples_per_case=10**6)
    assert fp.channel_names == ["CT"]
    assert fp.labels == {0: "background", 1: "nodule", 2: "vessel"}
    assert [c.case_id for c in fp.cases] == list(CASES)
    for case in fp.cases:
        shape, spacing = CASES[case.case_id]
        _, seg = volumes(case.case_id)
        assert case.shape == shape
        np.testing.assert_allclose(case.spacing, spacing, rtol=1e-6)
        assert case.shape_after_crop == tuple(n - 2 for n in shape)  # the zero border is cropped
        assert case.nonzero_fraction == pytest.approx(np.prod([n - 2 for n in shape]) / np.prod(shape))
        counts = np.bincount(seg.ravel())
        assert case.class_voxels == {0: int(counts[0]), 1: 20, 2: 8}
        voxel = float(np.prod(spacing))
        assert case.object_sizes[1] == pytest.approx([12 * voxel, 8 * voxel], rel=1e-5)
        assert case.object_sizes[2] == pytest.approx([8 * voxel], rel=1e-5)
    np.testing.assert_allclose(fp.spacings, [s for _, s in CASES.values()], rtol=1e-6)
    np.testing.assert_array_equal(fp.shapes, [s for s, _ in CASES.values()])
    np.testing.assert_allclose(fp.median_spacing, [0.8, 0.8, 2.5], rtol=1e-6)
    np.testing.assert_allclose(fp.median_shape, [10, 8, 4])
    # every foreground voxel sampled: the statistics are numpy's over the pooled foreground
    fg = np.concatenate([volumes(c)[0][volumes(c)[1] > 0] for c in CASES]).astype(np.float64)
    stats = fp.intensity[0]
    assert stats["mean"] == pytest.approx(fg.mean()) and stats["std"] == pytest.approx(fg.std())
    assert stats["min"] == fg.min() and stats["max"] == fg.max()
    assert stats["median"] == pytest.approx(np.median(fg))
    assert stats["percentile_00_5"] == pytest.approx(np.percentile(fg, 0.5))
    assert stats["percentile_99_5"] == pytest.approx(np.percentile(fg, 99.5))
    # JSON round trip
    path = tmp_path / "fp" / "fingerprint.json"
    fp.save(path)
    again = Fingerprint.load(path)
    assert again == fp
    assert not [p for p in path.parent.iterdir() if p.name != "fingerprint.json"]  # no temporary files


def test_foreground_sampling_is_seeded_and_independent_of_workers(tmp_path):
    root = build(tmp_path)
    a = compute_fingerprint(root, progress=False, samples_per_case=5, seed=1)
    b = compute_fingerprint(root, progress=False, samples_per_case=5, seed=1, num_workers=3)
    c = compute_fingerprint(root, progress=False, samples_per_case=5, seed=2)
    assert a.intensity == b.intensity and a.cases == b.cases
    assert a.intensity != c.intensity
    fg = np.concatenate([volumes(k)[0][volumes(k)[1] > 0] for k in CASES])
    assert fg.min() <= a.intensity[0]["min"] <= a.intensity[0]["max"] <= fg.max()


def test_cache_hit_reads_nothing_and_a_changed_file_recomputes(tmp_path):
    root = build(tmp_path / "data")
    cache = tmp_path / "cache" / "fingerprint.json"
    reader = CountingReader()
    first = compute_fingerprint(DecathlonDataset(root, reader=reader), progress=False, cache=cache)
    assert reader.reads == 6 and cache.is_file()
    hit = compute_fingerprint(DecathlonDataset(root, reader=reader), progress=False, cache=cache)
    assert reader.reads == 6  # nothing read
    assert hit == first
    # touch a label file: a new mtime recomputes
    label = root / "labelsTr" / "lung_002.nii.gz"
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    compute_fingerprint(DecathlonDataset(root, reader=reader), progress=False, cache=cache)
    assert reader.reads == 12
    # other sampling parameters recompute too
    compute_fingerprint(DecathlonDataset(root, reader=reader), progress=False, cache=cache, seed=3)
    assert reader.reads == 18
    # changed content (new image values) is seen
    build(tmp_path / "data", extra_image=lambda case, image: image * 2)
    changed = compute_fingerprint(DecathlonDataset(root, reader=reader), progress=False, cache=cache)
    assert changed.intensity[0]["mean"] == pytest.approx(2 * first.intensity[0]["mean"], rel=1e-4)


def test_in_memory_datasets_and_the_progress_counter(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # no tqdm: the stderr counter
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    source = SyntheticPhantomDataset(num_cases=3, shape=(16, 16, 16), seed=0)
    fp = compute_fingerprint(source, progress=True, cache=tmp_path / "fp.json")
    assert "fingerprint: 3/3 cases" in capsys.readouterr().err
    assert fp.source["kind"] == "memory" and len(fp.cases) == 3
    seg = np.asarray(source[0]["seg"])
    assert fp.cases[0].class_voxels == {int(v): int(n) for v, n in zip(*np.unique(seg, return_counts=True))}
    compute_fingerprint(source, progress=False, cache=tmp_path / "fp.json")
    assert capsys.readouterr().err == ""


def test_every_problem_is_raised_together(tmp_path):
    def spoil(case_id, image):
        if case_id != "lung_001":
            image[2, 2, 2] = np.nan
        return image

    root = build(tmp_path, extra_image=spoil)
    os.remove(root / "labelsTr" / "lung_001.nii.gz")
    with pytest.raises(DatasetError) as info:
        compute_fingerprint(root, progress=False, cache=tmp_path / "fp.json")
    problems = info.value.problems
    assert len(problems) == 3
    assert "lung_001" in problems[0] and "does not exist" in problems[0]
    assert all("NaN" in p for p in problems[1:])
    assert not (tmp_path / "fp.json").exists()
