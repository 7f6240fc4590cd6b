"""TrtkitError spellings: one message, read in Python words by API callers and in flags by the CLI."""

from __future__ import annotations

import pickle

import pytest

from trtkit.errors import SpecError, Spelling, TrtkitError


def test_each_audience_reads_its_own_spelling():
    exc = SpecError("{graph} needs a GPU backend; or run on the CPU with {cpu}",
                    spellings={"graph": Spelling("cuda_graph=True", "--cuda-graph"),
                               "cpu": Spelling("device='cpu'", "--backend onnxruntime")})
    assert str(exc) == "cuda_graph=True needs a GPU backend; or run on the CPU with device='cpu'"
    assert exc.render("cli") == "--cuda-graph needs a GPU backend; or run on the CPU with --backend onnxruntime"
    assert exc.render("python") == str(exc)


def test_other_braces_need_no_escaping():
    exc = TrtkitError("shape {a: 1} of {x}", spellings={"x": Spelling("x=", "--x")})
    assert exc.render("cli") == "shape {a: 1} of --x"
    assert TrtkitError("plain {text}").render("cli") == "plain {text}"


def test_unknown_audience_is_a_bug():
    with pytest.raises(ValueError, match="audience"):
        TrtkitError("m").render("gui")


def test_pickles_as_its_python_text():
    exc = pickle.loads(pickle.dumps(SpecError("use {o}", spellings={"o": Spelling("o=1", "--o 1")})))
    assert isinstance(exc, SpecError) and str(exc) == "use o=1"


def test_field_and_flag_pairs_read_in_each_audiences_words():
    """Review finding: CLI errors led with Python field names ("DetectorConfig.layout (--layout) ...")."""
    from trtkit.errors import TaskError

    err = TaskError("input_size (--imgsz) must be <= 8192; Preprocess.std (--std) must not contain 0")
    assert str(err) == "input_size must be <= 8192; Preprocess.std must not contain 0"
    assert err.render("cli") == "--imgsz must be <= 8192; --std must not contain 0"


def test_cli_names_only_the_flag(cli):
    from tests.conftest import asset_model

    r = cli("predict", "--task", "detect", str(asset_model("yolov8n")), "x.jpg", "--imgsz", "100000")
    assert r.code == 1 and "error: --imgsz must be <= 8192" in r.err and "input_size" not in r.err
