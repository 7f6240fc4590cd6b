"""`trtkit compare`: Polygraphy's elementwise check, real models, PyTorch sources."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from trtkit.measure.compare import CompareConfig, compare, compare_arrays, parse_tolerances
from trtkit.errors import SpecError

from tests.conftest import asset_model, assert_clean_error
from .test_run import ASSET_SHAPES
from tests.data import tiny_onnx

TINY_TORCH = Path(__file__).parents[1] / "data" / "tiny_torch.py"


# ------------------------------------------------------------ the elementwise rule

def test_fails_only_when_both_tolerances_are_exceeded():
    b = np.array([1.0, 100.0, 0.0, -2.0], np.float32)
    a = np.array([1.0 + 5e-5, 100.0 + 5e-4, 5e-6, -2.0], np.float32)
    row = compare_arrays("o", a, b)
    # element 0: abs 5e-5 > 1e-5 and rel 5e-5 > 1e-5 -> out; element 1: rel 5e-6 <= 1e-5 -> in;
    # element 2: abs 5e-6 <= 1e-5 -> in (even though rel vs 0 is huge); element 3 equal.
    assert row.mismatches == 1 and row.total == 4 and not row.passed
    assert row.max_abs == pytest.approx(5e-4, rel=1e-2)
    assert compare_arrays("o", a, b, atol=1e-4).passed


def test_relative_error_is_against_b():
    a, b = np.array([2.0]), np.array([1.0])
    assert compare_arrays("o", a, b, atol=0, rtol=0.9).passed is False  # |a-b|/|b| = 1.0
    assert compare_arrays("o", b, a, atol=0, rtol=0.9).passed is True  # |a-b|/|a| = 0.5


def test_nan_and_inf():
    ok = np.array([1.0, 2.0])
    row = compare_arrays("o", np.array([1.0, np.nan]), ok, atol=1e9, rtol=1e9)
    assert not row.passed and row.nan_a == 1 and row.mismatches == 1
    both_nan = compare_arrays("o", np.array([np.nan]), np.array([np.nan]), atol=1e9, rtol=1e9)
    assert not both_nan.passed and both_nan.nan_b == 1
    inf = compare_arrays("o", np.array([np.inf]), np.array([np.inf]), atol=1e9, rtol=1e9)
    assert not inf.passed and inf.inf_a == inf.inf_b == 1  # Polygraphy: inf - inf is NaN, a mismatch


def test_bool_outputs_use_xor():
    a, b = np.array([True, False, True]), np.array([True, True, True])
    row = compare_arrays("o", a, b, atol=0.5, rtol=0.5)
    assert row.mismatches == 1


def test_shape_mismatch_is_a_failed_row():
    row = compare_arrays("o", np.zeros((2, 3)), np.zeros((3, 2)))
    assert not row.passed and row.note == "shapes differ" and row.max_abs is None


def test_parse_tolerances():
    assert parse_tolerances([], flag="--atol") == (1e-5, ())
    assert parse_tolerances(["1e-3", "logits:1e-2", "input:0:0.5"], flag="--atol") == (
        1e-3,
        (("logits", 1e-2), ("input:0", 0.5)),
    )
    with pytest.raises(SpecError, match="give one"):
        parse_tolerances(["1e-3", "1e-4"], flag="--atol")
    with pytest.raises(SpecError, match="expected a number"):
        parse_tolerances(["logits:abc"], flag="--rtol")
    with pytest.raises(SpecError, match=">= 0"):
        CompareConfig(atol=-1.0)


# ------------------------------------------------------------ real models, CLI

@pytest.mark.parametrize("key", list(ASSET_SHAPES))
def test_every_asset_model_matches_itself(cli, key):
    shapes = ["--shapes", ASSET_SHAPES[key]] if ASSET_SHAPES[key] else []
    model = asset_model(key)
    res = cli("compare", model, model, *shapes)
    assert res.code == 0, res
    assert "PASSED: all" in res.out and "FAIL" not in res.out.replace("FAILED", "")


@pytest.fixture
def affine_pair(tmp_path):
    a = tiny_onnx.affine(tmp_path / "a.onnx")
    b = tiny_onnx.affine(tmp_path / "b.onnx", bias=tiny_onnx.B + np.float32(1e-3))
    return a, b


def test_changed_constant_fails(cli, affine_pair):
    a, b = affine_pair
    res = cli("compare", a, b, "--shapes", "x:8x4")
    assert res.code == 1, res
    assert "FAILED: 2 of 2 outputs out of tolerance" in res.out
    assert "error:" not in res.err


def test_tolerance_override_per_output(cli, affine_pair):
    a, b = affine_pair
    res = cli("compare", a, b, "--shapes", "x:8x4", "--atol", "y:2e-3", "--json")
    assert res.code == 1, res
    report = json.loads(res.out)
    verdict = {r["name"]: r["passed"] for r in report["outputs"]}
    assert verdict == {"z": False, "y": True}
    assert {r["name"]: r["atol"] for r in report["outputs"]} == {"z": 1e-5, "y": 2e-3}
    res = cli("compare", a, b, "--shapes", "x:8x4", "--atol", "2e-3")
    assert res.code == 0, res


def test_unknown_output_in_tolerance(cli, affine_pair):
    a, b = affine_pair
    res = cli("compare", a, b, "--atol", "logits:1e-2")
    assert_clean_error(res, "'logits'", "'y'", "'z'")


def test_different_output_shapes_are_reported(cli, tmp_path):
    a = tiny_onnx.affine(tmp_path / "a.onnx")
    b = tiny_onnx.affine(tmp_path / "b.onnx", weight=tiny_onnx.W[:, :2].copy(), bias=tiny_onnx.B[:2].copy())
    res = cli("compare", a, b)
    assert res.code == 1, res
    assert "[1,3] vs [1,2]" in res.out and "shapes differ" in res.out and "Traceback" not in res.err


def test_nan_outputs_fail_with_counts(cli, tmp_path):
    model = tiny_onnx.single(tmp_path / "log.onnx")
    x = np.array([[1, -1, 2], [3, -4, 5]], np.float32)
    np.save(tmp_path / "x.npy", x)
    res = cli("compare", model, model, "--input", f"x={tmp_path / 'x.npy'}", "--json")
    assert res.code == 1, res
    row = json.loads(res.out)["outputs"][0]
    assert row["nan_a"] == row["nan_b"] == 2 and row["mismatches"] == 2 and not row["passed"]


def test_inputs_from_file_are_used(tmp_path):
    a = tiny_onnx.affine(tmp_path / "a.onnx")
    x = np.ones((3, 4), np.float32)
    np.savez(tmp_path / "in.npz", x=x, s=np.zeros(1, np.float32))
    result = compare(str(a), str(a), config=CompareConfig(input_files=(str(tmp_path / "in.npz"),)))
    assert result.passed
    np.testing.assert_array_equal(result.inputs["x"], x)
    assert result.rows[0].shape_a == (3, 3)


def test_bad_sources(cli, tmp_path):
    a = tiny_onnx.affine(tmp_path / "a.onnx")
    assert_clean_error(cli("compare", a, tmp_path / "missing.onnx"), "missing.onnx", "does not exist")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01junk")
    assert_clean_error(cli("compare", a, tmp_path / "junk.onnx"), "cannot load")
    assert_clean_error(cli("compare", a, a, "--weights-b", "w.pt"), "--weights applies to PyTorch sources")
    other = tiny_onnx.single(tmp_path / "single.onnx")
    assert_clean_error(cli("compare", a, other), "compare needs the same inputs")


# ------------------------------------------------------------ PyTorch sources

def _needs_load_module() -> None:
    pytest.importorskip("torch")
    try:
        module = importlib.import_module("trtkit.graph.export")
    except ModuleNotFoundError:
        pytest.skip("trtkit.graph.export (load_module) is not in this build yet")
    if not hasattr(module, "load_module"):
        pytest.skip("trtkit.graph.export has no load_module yet")


@pytest.fixture(scope="module")
def torch_onnx(tmp_path_factory):
    """tiny_torch.make_model exported by torch.onnx.export (outputs feat, logits)."""
    torch = pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_torch_fixture", TINY_TORCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = tmp_path_factory.mktemp("torch") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            mod.make_model().eval(), (torch.rand(1, 3, 8, 8),), str(path),
            input_names=["x"], output_names=["feat", "logits"], dynamo=False,
        )
    return path


@pytest.mark.parametrize("order", ["onnx-first", "torch-first"])
def test_onnx_matches_its_torch_source(cli, torch_onnx, order):
    _needs_load_module()
    source = f"{TINY_TORCH}:make_model"
    sides = [torch_onnx, source] if order == "onnx-first" else [source, torch_onnx]
    res = cli("compare", *sides, "--atol", "1e-4", "--rtol", "1e-3", "--json")
    assert res.code == 0, res
    report = json.loads(res.out)
    assert [r["name"] for r in report["outputs"]] == ["feat", "logits"]
    assert all(r["max_abs"] < 1e-4 for r in report["outputs"])


def test_torch_dict_outputs_match_by_name(cli, torch_onnx):
    _needs_load_module()
    res = cli("compare", torch_onnx, f"{TINY_TORCH}:make_dict_model", "--atol", "1e-4", "--json")
    assert res.code == 0, res
    assert {r["name"] for r in json.loads(res.out)["outputs"]} == {"feat", "logits"}


def test_torch_with_changed_weights_fails_then_passes_with_tolerance(cli, torch_onnx, tmp_path):
    _needs_load_module()
    torch = pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_torch_w", TINY_TORCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    state = mod.make_model().state_dict()
    state["fc.bias"] = state["fc.bias"] + 0.01
    torch.save(state, tmp_path / "w.pt")
    source = f"{TINY_TORCH}:make_model"
    res = cli("compare", torch_onnx, source, "--weights-b", tmp_path / "w.pt", "--atol", "1e-4")
    assert res.code == 1, res
    assert "FAILED: 1 of 2 outputs out of tolerance (logits)" in res.out
    res = cli("compare", torch_onnx, source, "--weights-b", tmp_path / "w.pt", "--atol", "1e-4", "--atol", "logits:0.02")
    assert res.code == 0, res


def test_two_torch_sources_have_no_input_specs(cli):
    _needs_load_module()
    source = f"{TINY_TORCH}:make_model"
    assert_clean_error(cli("compare", source, source), "both", "PyTorch sources")


def test_freshly_constructed_class_gets_a_weights_hint(cli, torch_onnx, tmp_path):
    _needs_load_module()
    torch = pytest.importorskip("torch")
    res = cli("compare", torch_onnx, f"{TINY_TORCH}:TinyNet", "--atol", "1e-4")  # a class: random init
    assert res.code == 1, res
    assert "hint: B" in res.out and "freshly constructed" in res.out and "--weights-b" in res.out
    report = json.loads(cli("compare", torch_onnx, f"{TINY_TORCH}:TinyNet", "--json").out)
    assert report["passed"] is False and any("--weights-b" in h for h in report["hints"])
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_torch_hint", TINY_TORCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save(mod.make_model().state_dict(), tmp_path / "w.pt")
    res = cli("compare", torch_onnx, f"{TINY_TORCH}:TinyNet", "--weights-b", tmp_path / "w.pt", "--atol", "1e-4", "--rtol", "1e-3")
    assert res.code == 0, res
    assert "hint:" not in res.out


def test_negative_tolerance_is_refused(cli, affine_pair):
    with pytest.raises(SpecError, match=r"atol=-1.0 must be a number >= 0"):
        CompareConfig(atol=-1.0)
    assert_clean_error(cli("compare", *affine_pair, "--rtol", "-1"), "rtol=-1.0 must be a number >= 0")


def test_library_and_cli_compare_share_the_as_written_default():
    """The design review found cli/compare with fuse=False but trtkit.compare() fusing: one default now."""
    from trtkit.measure.compare import AS_WRITTEN, CompareConfig

    assert AS_WRITTEN.fuse is False
    assert CompareConfig().a.runtime.fuse is False and CompareConfig().b.runtime.fuse is False
