"""trtkit.fusion: each fusion fires where it is exact, stays away where it is not, and keeps outputs."""

from __future__ import annotations

import numpy as np
import pytest

import trtkit
from trtkit.graph.fusion import FusionReport, fuse_file, fuse_model

from tests.conftest import asset_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

C = 4  # channels of the synthetic models


def _const(name: str, value: float | np.ndarray) -> onnx.NodeProto:
    arr = np.asarray(value, np.float32)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name))


def _hard_swish(x: str, out: str, tag: str, *, tail: str = "div") -> list[onnx.NodeProto]:
    nodes = [
        _const(f"{tag}_three", 3.0), _const(f"{tag}_zero", 0.0), _const(f"{tag}_six", 6.0),
        helper.make_node("Add", [x, f"{tag}_three"], [f"{tag}_a"]),
        helper.make_node("Clip", [f"{tag}_a", f"{tag}_zero", f"{tag}_six"], [f"{tag}_c"]),
        helper.make_node("Mul", [x, f"{tag}_c"], [f"{tag}_m"]),
    ]
    if tail == "div":
        nodes.append(helper.make_node("Div", [f"{tag}_m", f"{tag}_six"], [out]))
    else:
        nodes += [_const(f"{tag}_sixth", 1 / 6), helper.make_node("Mul", [f"{tag}_sixth", f"{tag}_m"], [out])]
    return nodes


def _affine(x: str, out: str, tag: str, scale: float | np.ndarray, shift: float) -> list[onnx.NodeProto]:
    """PaddleOCR's learnable affine block as paddle2onnx writes it: Mul(scale, x) then Add(shift)."""
    return [
        _const(f"{tag}_s", scale), _const(f"{tag}_d", shift),
        helper.make_node("Mul", [f"{tag}_s", x], [f"{tag}_m"]),
        helper.make_node("Add", [f"{tag}_m", f"{tag}_d"], [out]),
    ]


def _model(nodes, inits, *, outputs=("y",), extra_inputs=()) -> onnx.ModelProto:
    """opset 12 (PP-OCR's); ``extra_inputs`` are (name, shape) graph inputs, e.g. overridable initializers."""
    value = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, C, 8, 8])  # noqa: E731
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8]),
         *(helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in extra_inputs)],
        [value(o) for o in outputs], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _weights(name: str, kernel: int, seed: int) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(C, C, kernel, kernel)).astype(np.float32) * 0.3
    b = rng.normal(size=C).astype(np.float32)
    return [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]


def _block(*, second_kernel: int = 1, tail: str = "div") -> tuple[list, list]:
    """PP-LCNetV3's block: Conv 3x3 -> affine -> hard-swish -> affine -> Conv (1x1 by default)."""
    pad = [second_kernel // 2] * 4
    nodes = [
        helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["c1"], pads=[1, 1, 1, 1]),
        *_affine("c1", "a1", "lab1", 1.7, -0.3),
        *_hard_swish("a1", "h1", "hs", tail=tail),
        *_affine("h1", "a2", "lab2", 0.8, 0.25),
        helper.make_node("Conv", ["a2", "c2_w", "c2_b"], ["y"], pads=pad),
    ]
    return nodes, _weights("c1", 3, 0) + _weights("c2", second_kernel, 1)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _fused_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FusionReport]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    report = fuse_model(copy)
    onnx.checker.check_model(copy)
    return copy, report


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).normal(size=(1, C, 8, 8)).astype(np.float32) * 3}


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node if n.op_type != "Constant"]


@pytest.mark.parametrize("tail", ["div", "mul"])
def test_all_three_fuse_and_outputs_stay(tail):
    model = _model(*_block(tail=tail))
    fused, report = _fused_copy(model)
    assert dict(report.counts) == {"conv_affine": 1, "hard_swish": 1, "affine_conv1x1": 1}
    assert _ops(fused) == ["Conv", "HardSigmoid", "Mul", "Conv"]
    # the replaced weights and the scalars only removed nodes read are gone, not left as dead weight
    names = {t.name for t in fused.graph.initializer} | {n.output[0] for n in fused.graph.node}
    assert not names & {"c1_w", "c2_w", "lab1_s", "lab2_d", "hs_three"}
    feeds = _feeds()
    np.testing.assert_allclose(_run(fused, feeds)[0], _run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_affine_before_padded_conv_is_left():
    """With a padded kernel the folded shift would also reach the zero padding: not exact, so not done."""
    model = _model(*_block(second_kernel=3))
    fused, report = _fused_copy(model)
    assert dict(report.counts) == {"conv_affine": 1, "hard_swish": 1, "affine_conv1x1": 0}
    feeds = _feeds(1)
    np.testing.assert_allclose(_run(fused, feeds)[0], _run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_second_reader_stops_the_match():
    """A Conv output that is also a graph output must keep its unscaled value."""
    nodes, inits = _block()
    model = _model(nodes, inits, outputs=("y", "c1"))
    fused, report = _fused_copy(model)
    assert dict(report.counts)["conv_affine"] == 0
    feeds = _feeds(2)
    for got, want in zip(_run(fused, feeds), _run(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_subgraph_reader_stops_the_match():
    nodes, inits = _block()
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["c1"], [f"{name}_out"])], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, C, 8, 8])],
    )
    nodes.append(helper.make_node("If", ["cond"], ["z"], then_branch=branch("then"), else_branch=branch("else")))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, C, 8, 8]) for n in ("y", "z")],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    _, report = _fused_copy(model)
    assert dict(report.counts)["conv_affine"] == 0


def test_per_channel_scale_and_overridable_scalar_are_left():
    """Only float32 scalar constants fold; an initializer that is also a graph input can change at run time."""
    nodes = [
        helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["c1"], pads=[1, 1, 1, 1]),
        *_affine("c1", "y", "lab", np.full((1, C, 1, 1), 1.5), 0.5),
    ]
    _, report = _fused_copy(_model(nodes, _weights("c1", 3, 0)))
    assert report.total == 0

    nodes = [helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Mul", ["c1", "s"], ["y"])]
    inits = _weights("c1", 3, 0) + [numpy_helper.from_array(np.float32(2.0), "s")]
    model = _model(nodes, inits, extra_inputs=(("s", []),))
    _, report = _fused_copy(model)
    assert report.total == 0


def test_constant_that_raises_the_rank_is_left():
    """A one-value constant of shape [1,1,1,1,1] broadcasts the 4-D tensor to 5-D: folding it would drop a dim."""
    rank5 = np.full((1, 1, 1, 1, 1), 1.5)
    nodes = [helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["c1"], pads=[1, 1, 1, 1]), *_affine("c1", "y", "lab", rank5, 0.5)]
    model = _model(nodes, _weights("c1", 3, 0), outputs=())
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, C, 8, 8]))
    fused, report = _fused_copy(model)
    assert report.total == 0
    assert _run(fused, _feeds())[0].shape == (1, 1, C, 8, 8)

    nodes = _hard_swish("x", "y", "hs")
    nodes[0] = _const("hs_three", np.full((1, 1, 1, 1, 1), 3.0))
    model = _model(nodes, [], outputs=())
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, C, 8, 8]))
    _, report = _fused_copy(model)
    assert report.total == 0


def test_rank_one_constants_fuse_where_the_rank_is_known():
    """paddle2onnx writes its scalars as shape [1]; against a 4-D tensor they cannot change the shape."""
    nodes, inits = _block()
    for node in nodes:
        if node.op_type == "Constant":
            value = numpy_helper.to_array(node.attribute[0].t).reshape(1)
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(value, node.output[0]))
    model = _model(nodes, inits)
    fused, report = _fused_copy(model)
    assert dict(report.counts) == {"conv_affine": 1, "hard_swish": 1, "affine_conv1x1": 1}
    feeds = _feeds(4)
    np.testing.assert_allclose(_run(fused, feeds)[0], _run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_fusing_a_fused_model_again_keeps_names_unique():
    """A fused model saved and fused again (new blocks next to old trtkit_* names) stays a valid model."""
    nodes, inits = _block()
    once, _ = _fused_copy(_model(nodes, inits))
    second_nodes, second_inits = _block()
    renamed = {n: f"b2_{n}" for node in second_nodes for n in (*node.input, *node.output) if n not in ("x",)}
    for node in second_nodes:
        for field in (node.input, node.output):
            field[:] = [renamed.get(n, "y" if n == "x" else n) for n in field]
        if node.op_type == "Constant":
            node.attribute[0].t.name = node.output[0]
    for t in second_inits:
        t.name = renamed.get(t.name, t.name)
    once.graph.node.extend(second_nodes)
    once.graph.initializer.extend(second_inits)
    del once.graph.output[:]
    once.graph.output.append(helper.make_tensor_value_info("b2_y", TensorProto.FLOAT, [1, C, 8, 8]))
    twice, report = _fused_copy(once)
    assert report.total == 3
    names = [o for n in twice.graph.node for o in n.output] + [t.name for t in twice.graph.initializer]
    assert len(names) == len(set(names))
    feeds = _feeds(5)
    np.testing.assert_allclose(_run(twice, feeds)[0], _run(once, feeds)[0], rtol=1e-5, atol=1e-5)


def test_fresh_names_skip_every_name_in_use():
    from trtkit.graph.fusion import _Graph

    g = _Graph(_model(*_block()))
    n = len(g.names)
    taken = {f"trtkit_hint_{i}" for i in range(n + 50, n + 100)}  # where the serial starts once they are added
    g.names |= taken
    first, second = g.fresh_name("hint"), g.fresh_name("hint")
    assert first not in taken and second not in taken and first != second


def test_ir3_model_is_left():
    model = _model(*_block())
    model.ir_version = 3
    report = fuse_model(model)
    assert report.total == 0 and "IR version 3" in str(report)


def test_report_text():
    assert str(FusionReport((("conv_affine", 2), ("hard_swish", 0)))) == "conv_affine x2"
    assert str(FusionReport((("conv_affine", 0),))) == "nothing to fuse"
    assert "external" in str(FusionReport(skipped="weights in external data files"))


def test_external_data_model_is_left(tmp_path):
    nodes, inits = _block()
    model = _model(nodes, inits)
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin", size_threshold=0)
    data, report = fuse_file(path)
    assert data is None and report.skipped and report.total == 0


# ---------------------------------------------------------------- real models

# what each asset model fuses: PP-OCR's learnable affine blocks and hard-swish, SCRFD's per-stride box scale
ASSET_FUSIONS = {
    "ppocr_rec": {"conv_affine": 28, "hard_swish": 28, "affine_conv1x1": 12},
    "ppocr_det": {"conv_affine": 28, "hard_swish": 24, "affine_conv1x1": 10},
    "ppocr_cls": {"conv_affine": 0, "hard_swish": 18, "affine_conv1x1": 0},
    "scrfd": {"conv_affine": 3, "hard_swish": 0, "affine_conv1x1": 0},
    "efficientnet_lite0": {"conv_affine": 0, "hard_swish": 0, "affine_conv1x1": 0},
    "yolov8n": {"conv_affine": 0, "hard_swish": 0, "affine_conv1x1": 0},
}


@pytest.mark.parametrize("key", sorted(ASSET_FUSIONS))
def test_asset_models(key):
    """Each asset model fuses where expected and gives the same outputs as ONNX Runtime on the file as
    written; with nothing to fuse the file itself goes to ONNX Runtime, so outputs are bit-identical."""
    path = asset_model(key)
    expected = ASSET_FUSIONS[key]
    data, report = fuse_file(path)
    assert dict(report.counts) == expected
    assert (data is None) == (report.total == 0)
    rng = np.random.default_rng(3)
    with trtkit.load(path, config=trtkit.RuntimeConfig(fuse=False)) as plain, trtkit.load(path) as fused:
        assert plain.fusions.total == 0 and fused.fusions.total == report.total
        sized = lambda spec: tuple(d if isinstance(d, int) else (2 if i == 0 else 64) for i, d in enumerate(spec.shape))  # noqa: E731
        feeds = {spec.name: rng.random(sized(spec), dtype=np.float32) for spec in plain.inputs}
        if key == "ppocr_rec":
            feeds = {plain.inputs[0].name: rng.random((2, 3, 48, 480), dtype=np.float32) * 2 - 1}
        if key == "ppocr_det":
            feeds = {plain.inputs[0].name: rng.random((1, 3, 320, 480), dtype=np.float32) * 2 - 1}
        want, got = plain.infer(feeds), fused.infer(feeds)
    for name in want:
        if report.total == 0:
            np.testing.assert_array_equal(got[name], want[name])
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=2e-5, err_msg=name)
    if key == "ppocr_rec":
        out = next(iter(want))
        assert (got[out].argmax(-1) == want[out].argmax(-1)).all()


def test_cli_no_fuse(cli):
    path = asset_model("ppocr_cls")
    fused = cli("run", str(path), "--shapes", "x:1x3x48x192")
    assert fused.code == 0, fused
    assert "fused: hard_swish x18" in fused.out
    plain = cli("run", str(path), "--shapes", "x:1x3x48x192", "--no-fuse")
    assert plain.code == 0, plain
    assert "fused" not in plain.out
