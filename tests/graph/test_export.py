"""``trtkit export`` with real torch models, real onnx.checker and real ONNX Runtime parity checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from tests.conftest import assert_clean_error  # noqa: E402
from tests.models import source  # noqa: E402
from trtkit.errors import ExportError, OutputPathError, ShapeError, SpecError  # noqa: E402
from trtkit.graph.export import ExportConfig, export, load_module  # noqa: E402


def _dims(path, which="input"):
    model = onnx.load(str(path))
    values = model.graph.input if which == "input" else model.graph.output
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]


def test_conv_net_dynamic_batch_and_hw(cli, tmp_path):
    out = tmp_path / "conv.onnx"
    result = cli("export", source("conv_net"), "-o", out, "--input", "x:1x3x32x32", "--dynamic", "x:0,2,3",
                 "--output-names", "feats,logits")
    assert result.code == 0, result
    assert "parity vs PyTorch" in result.out and "x:2x3x64x64" in result.out and "max abs" in result.out
    assert _dims(out) == [["batch", 3, "height", "width"]]
    outs = _dims(out, "output")
    assert outs[0][0] == "batch" and outs[0][1] == 8 and isinstance(outs[0][2], str)
    assert outs[1] == ["batch", 5]
    # independent check at a third shape the export never saw
    model = load_module(source("conv_net"))
    x = np.random.default_rng(5).standard_normal((3, 3, 40, 24)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-3)


def test_two_inputs_two_outputs_api(tmp_path):
    out = tmp_path / "two.onnx"
    report = export(source("two_in_two_out"), out, config=ExportConfig(inputs={"a": (2, 4), "b": (2, 4)}, dynamic_batch=True))
    assert [s.name for s in report.inputs] == ["a", "b"]
    assert [s.name for s in report.outputs] == ["output0", "output1"]
    assert [c.shapes for c in report.checks] == ["a:2x4,b:2x4", "a:3x4,b:3x4"]
    assert len(report.errors) == 4 and all(e.ok and e.max_abs < 1e-4 for e in report.errors)
    assert report.opset == 17
    onnx.checker.check_model(str(out))


def test_int64_embedding(cli, tmp_path):
    out = tmp_path / "emb.onnx"
    result = cli("export", source("embedding_model"), "-o", out, "--input", "ids:1x7", "--input-dtype", "ids:int64",
                 "--dynamic", "ids:0,1")
    assert result.code == 0, result
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(int64)"
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]], dtype=np.int64)
    with torch.no_grad():
        ref = load_module(source("embedding_model"))(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(session.run(None, {"ids": ids})[0], ref, atol=1e-5)


def test_parity_failure_leaves_no_file(cli, tmp_path):
    out = tmp_path / "baked.onnx"
    result = cli("export", source("shape_baking_net"), "-o", out, "--input", "x:1x3x4", "--dynamic-batch")
    assert_clean_error(result, "does not reproduce PyTorch", "x:2x3x4", "MISMATCH")
    assert list(tmp_path.iterdir()) == []


def test_weights_strict_load(tmp_path):
    model = load_module(source("conv_net"))
    good = {k: v + 1 for k, v in model.state_dict().items()}
    torch.save({"state_dict": good}, tmp_path / "ckpt.pth")
    loaded = load_module(source("conv_net"), weights=str(tmp_path / "ckpt.pth"))
    assert torch.equal(loaded.state_dict()["head.bias"], good["head.bias"])
    bad = dict(good)
    bad.pop("head.bias")
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ExportError) as err:
        load_module(source("conv_net"), weights=str(tmp_path / "bad.pth"))
    assert "missing (1): head.bias" in str(err.value) and "unexpected (1): extra.weight" in str(err.value)


@pytest.mark.parametrize(
    "src, needle",
    [
        ("/nonexistent/model.py:build", "does not exist"),
        (source("nope"), "has no attribute 'nope'"),
        (source("NOT_A_MODULE"), "not an nn.Module"),
        (source("needs_args"), "zero-argument factory"),
        (source("broken_factory"), "weights server unreachable"),
        ("no_such_pkg_xyz.models:build", "cannot import module"),
        ("just_a_name", "FILE.py:NAME or package.module:NAME"),
    ],
)
def test_bad_sources(cli, tmp_path, src, needle):
    out = tmp_path / "m.onnx"
    assert_clean_error(cli("export", src, "-o", out, "--input", "x:1x3x8x8"), needle)
    assert not out.exists()


def test_bad_inputs(cli, tmp_path):
    out = tmp_path / "m.onnx"
    src = source("conv_net")
    assert_clean_error(cli("export", src, "-o", out, "--input", "x:1x3x8"), "running the PyTorch model", "--input")
    assert_clean_error(cli("export", src, "-o", out, "--input", "x:1x3x8x8", "--dynamic", "xx:0"), "'xx'", "Did you mean 'x'?")
    assert_clean_error(cli("export", src, "-o", out, "--input", "x:1xAx8x8"), "not a list of non-negative integers")
    assert_clean_error(cli("export", src, "-o", out, "--input", "x:1x3x8x8", "--input-dtype", "x:float33"), "float33")
    assert_clean_error(cli("export", src, "-o", out, "--input", "x:1x3x8x8", "--output-names", "a"), "returns 2 tensor(s)")
    missing = tmp_path / "nodir" / "m.onnx"
    assert_clean_error(cli("export", src, "-o", missing, "--input", "x:1x3x8x8"), "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_config_validation():
    with pytest.raises(SpecError, match="conflicts"):
        ExportConfig(inputs={"x": (1, 3)}, exporter="dynamo", opset=17)
    with pytest.raises(SpecError, match="unknown"):
        ExportConfig(inputs={"x": (1, 3)}, exporter="jit")
    with pytest.raises(ShapeError, match="out of range"):
        ExportConfig(inputs={"x": (1, 3)}, dynamic={"x": (2,)})


def test_dynamo_exporter(tmp_path):
    out = tmp_path / "conv_dynamo.onnx"
    report = export(source("conv_net"), out, config=ExportConfig(inputs={"x": (1, 3, 32, 32)}, dynamic_batch=True, exporter="dynamo"))
    assert report.exporter == "dynamo" and report.opset >= 18
    assert _dims(out)[0][0] == "batch"
    assert all(e.ok for e in report.errors) and len(report.checks) == 2


def test_output_equal_to_a_source_file_is_refused(cli, tmp_path):
    models = tmp_path / "models.py"  # a copy: the refusal must come before anything could write
    models.write_text(Path(source("conv_net").rpartition(":")[0]).read_text())
    before = models.read_bytes()
    result = cli("export", f"{models}:conv_net", "-o", models, "--input", "x:1x3x8x8")
    assert_clean_error(result, "is the input file", "models.py")
    weights = tmp_path / "w.pth"
    torch.save(load_module(f"{models}:conv_net").state_dict(), weights)
    saved = weights.read_bytes()
    with pytest.raises(OutputPathError, match="is the input file"):
        export(f"{models}:conv_net", weights, config=ExportConfig(inputs={"x": (1, 3, 8, 8)}, weights=str(weights)))
    assert models.read_bytes() == before and weights.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.py", "w.pth"]


def test_negative_tolerance_is_refused(cli, tmp_path):
    with pytest.raises(SpecError, match=r"atol=-1.0 must be a number >= 0"):
        ExportConfig(inputs={"x": (1, 3)}, atol=-1.0)
    with pytest.raises(SpecError, match=r"rtol=-0.5 must be a number >= 0"):
        ExportConfig(inputs={"x": (1, 3)}, rtol=-0.5)
    out = tmp_path / "m.onnx"
    assert_clean_error(cli("export", source("conv_net"), "-o", out, "--input", "x:1x3x8x8", "--atol", "-1"), "atol=-1.0", ">= 0")
    assert not out.exists()


def test_simplify_runs_onnxslim_and_keeps_parity(tmp_path):
    pytest.importorskip("onnxslim")
    plain = export(source("conv_net"), tmp_path / "plain.onnx", config=ExportConfig(inputs={"x": (1, 3, 32, 32)}, dynamic_batch=True))
    slim = export(source("conv_net"), tmp_path / "slim.onnx", config=ExportConfig(inputs={"x": (1, 3, 32, 32)}, dynamic_batch=True, simplify=True))
    note = next(n for n in slim.notes if n.startswith("simplified with onnxslim"))
    before, after = (int(x) for x in note.split(": ")[1].split(" nodes")[0].split(" -> "))
    assert before == len(onnx.load(str(tmp_path / "plain.onnx")).graph.node)
    assert after == len(onnx.load(str(tmp_path / "slim.onnx")).graph.node) <= before
    assert not any(n.startswith("simplified") for n in plain.notes)
    assert all(e.ok for e in slim.errors) and len(slim.checks) == 2  # parity at batch 1 and batch 2


def test_module_source_is_found_in_the_current_directory_as_python_m_does(tmp_path):
    """The ``trtkit`` console script has its bin directory as sys.path[0], not the cwd: run main() that way."""
    (tmp_path / "my_model.py").write_text(
        "import torch\n\n"
        "class Factory(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 2)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
    )
    script = (
        "import sys\n"
        "sys.path[0] = sys.prefix + '/bin'  # what the console-script launcher sets\n"
        "from trtkit.cli import main\n"
        "sys.exit(main(['export', 'my_model:Factory', '-o', 'm.onnx', '--input', 'x:1x4']))\n"
    )
    import os
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "No module named" not in proc.stderr
    assert (tmp_path / "m.onnx").exists()
    assert "my_model" not in sys.modules  # this process's path was not touched
