"""OnnxRuntimeBackend with real ONNX Runtime: feeds, validation, lifetime, load errors."""

from __future__ import annotations

import numpy as np
import pytest

import trtkit
from trtkit.backends.onnxruntime import OnnxRuntimeBackend
from trtkit.errors import TrtkitError, BackendUnavailable, ClosedError, DTypeError, ModelLoadError, ShapeError, SpecError

from tests.conftest import asset_model
from tests.data import tiny_onnx

X = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
S = np.array([0.25], dtype=np.float32)


@pytest.fixture(scope="module")
def affine_path(tmp_path_factory):
    return tiny_onnx.affine(tmp_path_factory.mktemp("ort") / "affine.onnx")


@pytest.fixture
def backend(affine_path):
    with trtkit.load(affine_path) as b:
        yield b


def _check(out: dict) -> None:
    ref = tiny_onnx.affine_reference(X, S)
    assert list(out) == ["z", "y"]  # the model's declared order, not alphabetical or creation order
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-6, atol=1e-6)


def test_load_gives_specs_from_the_session(backend):
    assert isinstance(backend, OnnxRuntimeBackend)
    assert backend.name == "onnxruntime" and backend.device == "cpu"
    assert [(s.name, s.dtype, s.shape) for s in backend.inputs] == [("x", "float32", ("batch", 4)), ("s", "float32", (1,))]
    assert [s.name for s in backend.outputs] == ["z", "y"]
    assert backend.session.get_providers() == ["CPUExecutionProvider"]


def test_dict_feeds(backend):
    _check(backend.infer({"x": X, "s": S}))


def test_list_feeds_in_input_order(backend):
    _check(backend.infer([X, S]))


def test_single_array_feed(tmp_path):
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    with trtkit.load(tiny_onnx.single(tmp_path / "log.onnx")) as b:
        np.testing.assert_allclose(b.infer(x)["out"], np.log(x), rtol=1e-6)


def test_single_array_for_two_inputs_is_refused(backend):
    with pytest.raises(ShapeError, match="has 2 inputs"):
        backend.infer(X)


def test_non_contiguous_input(backend):
    wide = np.zeros((2, 8), dtype=np.float32)
    wide[:, ::2] = X
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    _check(backend.infer({"x": view, "s": S}))


def test_dynamic_batch(backend):
    x = np.ones((5, 4), dtype=np.float32)
    assert backend.infer({"x": x, "s": S})["y"].shape == (5, 3)


def test_wrong_name_suggests(backend):
    with pytest.raises(ShapeError, match=r"'xx'.*Did you mean 'x'\?"):
        backend.infer({"xx": X, "s": S})


def test_missing_input(backend):
    with pytest.raises(ShapeError, match=r"missing input 's'"):
        backend.infer({"x": X})


def test_wrong_dtype_names_the_fix(backend):
    with pytest.raises(DTypeError, match=r"expects dtype float32 but got float64.*astype\(np.float32\)"):
        backend.infer({"x": X.astype(np.float64), "s": S})


def test_wrong_rank(backend):
    with pytest.raises(ShapeError, match="give 2 dims"):
        backend.infer({"x": X.reshape(2, 2, 2), "s": S})


def test_wrong_static_dim(backend):
    with pytest.raises(ShapeError, match=r"expects shape \[batch,4\] but got \[2,3\]"):
        backend.infer({"x": X[:, :3], "s": S})


def test_runtime_failure_becomes_shape_error(tmp_path):
    with trtkit.load(tiny_onnx.reshape_to_four(tmp_path / "r.onnx")) as b:
        assert b.infer(np.ones(4, np.float32))["out"].shape == (2, 2)
        with pytest.raises(ShapeError, match=r"ONNX Runtime failed to run .* x \[3\]"):
            b.infer(np.ones(3, np.float32))


def test_use_after_close_and_close_twice(affine_path):
    b = trtkit.load(affine_path)
    b.close()
    b.close()
    with pytest.raises(ClosedError, match="after close"):
        b.infer([X, S])


def test_context_manager_closes(affine_path):
    with trtkit.load(affine_path) as b:
        b.infer([X, S])
    with pytest.raises(ClosedError):
        b.infer([X, S])


def test_threads_reach_the_session(affine_path):
    with trtkit.load(affine_path, config=trtkit.RuntimeConfig(threads=1)) as b:
        assert b.session.get_session_options().intra_op_num_threads == 1
        _check(b.infer([X, S]))


def test_bad_thread_count(affine_path):
    with pytest.raises(SpecError, match="threads must be >= 1"):
        trtkit.load(affine_path, config=trtkit.RuntimeConfig(threads=0))


def test_tensorrt_only_options_are_refused(affine_path):
    with pytest.raises(SpecError, match="does not support plugins"):
        trtkit.load(affine_path, config=trtkit.RuntimeConfig(plugins=("libfoo.so",)))


def test_cuda_without_gpu_build(affine_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    # This class is what device="cuda" runs when trtkit.backends.ort_cuda is absent.
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime-gpu"):
        OnnxRuntimeBackend(affine_path, config=trtkit.RuntimeConfig(device="cuda"))
    with pytest.raises(TrtkitError):  # through the registry: the IO-binding backend, or this one
        trtkit.load(affine_path, config=trtkit.RuntimeConfig(device="cuda"))


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an onnx model\n" * 10],
    ids=["empty", "text"],
)
def test_non_onnx_file(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    # with fusion on (the default) trtkit's ONNX loader reads the file first and names what is wrong
    with pytest.raises(ModelLoadError, match=r"bad\.onnx.* (is empty|is not a valid ONNX model)"):
        trtkit.load(path)
    with pytest.raises(ModelLoadError, match=r"ONNX Runtime cannot load .*bad\.onnx"):
        trtkit.load(path, config=trtkit.RuntimeConfig(fuse=False))


def test_truncated_onnx(tmp_path):
    data = asset_model("efficientnet_lite0").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="truncated"):
        trtkit.load(path)


def test_asset_batch_matches_single_images():
    """EfficientNet at batch 2 gives, per image, what batch 1 gives (a real model, real numbers)."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 224, 224), dtype=np.float32)
    with trtkit.load(asset_model("efficientnet_lite0")) as b:
        both = b.infer(x)["logits"]
        first = b.infer(x[:1])["logits"]
    assert both.shape == (2, 1000)
    np.testing.assert_allclose(both[:1], first, rtol=1e-4, atol=1e-4)
    assert not np.allclose(both[0], both[1])
