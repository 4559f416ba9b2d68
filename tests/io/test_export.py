"""Model export: TorchScript and ONNX (checked with onnxruntime), SavedModel (reloaded by TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from delira.io import ExportError, export_onnx, export_saved_model, export_torchscript


def _torch_net():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1),
        torch.nn.BatchNorm3d(4),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),  # must be off in the export
        torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load is deprecated in torch 2.9+
@pytest.mark.parametrize("method", ["trace", "script"])
def test_torchscript_reproduces_the_model(tmp_path, method):
    import torch

    model = _torch_net().train()
    example = torch.randn(2, 1, 8, 8, 8)
    export_torchscript(model, tmp_path / "net.pt", example, method=method)
    assert model.training  # the training flag is restored
    loaded = torch.jit.load(str(tmp_path / "net.pt"))
    other = torch.randn(3, 1, 8, 8, 8)  # not the example the export was made with
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(other), model(other), rtol=1e-6, atol=1e-6)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_trace_failure_raises_and_leaves_no_file(tmp_path):
    import torch

    class Counter(torch.nn.Module):  # returns x * (number of calls): the trace bakes in a constant
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x * self.calls

    with pytest.raises(ExportError):
        export_torchscript(Counter(), tmp_path / "bad.pt", torch.ones(2, 2))
    assert not (tmp_path / "bad.pt").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
def test_onnx_output_mismatch_raises_and_leaves_no_file(tmp_path):
    import torch

    pytest.importorskip("onnxruntime")

    class Noisy(torch.nn.Module):  # random in eval mode too: onnxruntime draws other numbers
        def forward(self, x):
            return x + torch.rand_like(x)

    with pytest.raises(ExportError, match=r"output 0 differs from the model's by up to"):
        export_onnx(Noisy(), tmp_path / "noisy.onnx", torch.zeros(2, 64))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
def test_onnx_matches_the_model_in_onnxruntime(tmp_path):
    import torch

    ort = pytest.importorskip("onnxruntime")
    model = _torch_net()
    export_onnx(model, tmp_path / "net.onnx", torch.randn(2, 1, 8, 8, 8))
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    other = torch.randn(5, 1, 8, 8, 8)  # another batch size: the batch axis is dynamic
    (got,) = session.run(None, {"input": other.numpy()})
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(got, model(other).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.torch
def test_onnx_with_two_inputs_and_outputs(tmp_path):
    import torch

    ort = pytest.importorskip("onnxruntime")

    class TwoWay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)

        def forward(self, a, b):
            return self.linear(a) + b, a * b

    model = TwoWay()
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    export_onnx(model, tmp_path / "two.onnx", (a, b), input_names=["a", "b"])
    session = ort.InferenceSession(str(tmp_path / "two.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output_0", "output_1"]
    got = session.run(None, {"a": a.numpy(), "b": b.numpy()})
    with torch.no_grad():
        for g, w in zip(got, model(a, b)):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_saved_model_reproduces_the_keras_model(tmp_path):
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    example = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    export_saved_model(model, tmp_path / "saved", example)
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    other = np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        reloaded.serve(tf.constant(other)).numpy(),
        np.asarray(model(other, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )
    # exporting again replaces the folder
    export_saved_model(model, tmp_path / "saved")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


@pytest.mark.tf
def test_saved_model_refuses_other_objects(tmp_path):
    pytest.importorskip("tensorflow")
    with pytest.raises(ExportError, match=r"expected a keras\.Model or a tf\.Module"):
        export_saved_model(object(), tmp_path / "saved")
