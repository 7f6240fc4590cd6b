"""RetinaFace layouts (InsightFace MXNet export, Pytorch_Retinaface export) against an independent reference.

No pretrained RetinaFace weights are reachable here. The decoders are checked against reference
decodings written below from the published code (InsightFace ``rcnn/processing/generate_anchor.py``,
``bbox_transform.py``, ``RetinaFace.detect``; Pytorch_Retinaface ``layers/functions/prior_box.py``,
``utils/box_utils.py``), literally and with loops, on graphs whose outputs we construct, and on a
randomly initialised RetinaFace exported through ``trtkit export``. Host decoding, add-nms decoding
(ONNX Runtime) and the reference must agree box for box.
"""

from __future__ import annotations

import itertools
from math import ceil

import numpy as np
import pytest

from tests.data.layout_graphs import gated_graph
from trtkit.graph.nms import AddNmsConfig, add_nms
from trtkit.tasks.face import FaceDetector, FaceDetectorConfig

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

SIZE = (128, 128)


# ---------------------------------------------------------------- reference: InsightFace (MXNet RetinaFace)

def _whctrs(anchor):
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws, hs, x_ctr, y_ctr):
    ws, hs = ws[:, np.newaxis], hs[:, np.newaxis]
    return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def _ratio_enum(anchor, ratios):
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    size_ratios = (w * h) / ratios
    ws = np.round(np.sqrt(size_ratios))
    hs = np.round(ws * ratios)
    return _mkanchors(ws, hs, x_ctr, y_ctr)


def _scale_enum(anchor, scales):
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    return _mkanchors(w * scales, h * scales, x_ctr, y_ctr)


def generate_anchors(base_size=16, ratios=np.array([1.0]), scales=np.array([32, 16])):
    base_anchor = np.array([1, 1, base_size, base_size]) - 1
    ratio_anchors = _ratio_enum(base_anchor, ratios)
    return np.vstack([_scale_enum(ratio_anchors[i, :], scales) for i in range(ratio_anchors.shape[0])])


INSIGHTFACE_CFG = {32: (32, 16), 16: (8, 4), 8: (2, 1)}  # RetinaFace: SCALES per stride, BASE_SIZE 16, RATIOS (1,)


def reference_mxnet(outputs, conf):
    """InsightFace RetinaFace.detect's decoding (threshold, no NMS): boxes, scores, landmarks."""
    boxes, scores, marks = [], [], []
    for s in (32, 16, 8):
        base = generate_anchors(16, np.array([1.0]), np.array(INSIGHTFACE_CFG[s], float))
        A = base.shape[0]
        cls = outputs[f"face_rpn_cls_prob_reshape_stride{s}"][:, A:, :, :]
        deltas = outputs[f"face_rpn_bbox_pred_stride{s}"]
        lms = outputs[f"face_rpn_landmark_pred_stride{s}"]
        height, width = deltas.shape[2], deltas.shape[3]
        anchors = np.zeros((height, width, A, 4))
        for h in range(height):  # anchors_plane
            for w in range(width):
                for a in range(A):
                    anchors[h, w, a] = base[a] + np.array([w * s, h * s, w * s, h * s])
        anchors = anchors.reshape((-1, 4))
        sc = cls.transpose((0, 2, 3, 1)).reshape((-1, 1))
        d = deltas.transpose((0, 2, 3, 1)).reshape((-1, 4))
        widths = anchors[:, 2] - anchors[:, 0] + 1.0
        heights = anchors[:, 3] - anchors[:, 1] + 1.0
        ctr_x = anchors[:, 0] + 0.5 * (widths - 1.0)
        ctr_y = anchors[:, 1] + 0.5 * (heights - 1.0)
        pred_ctr_x = d[:, 0] * widths + ctr_x
        pred_ctr_y = d[:, 1] * heights + ctr_y
        pred_w = np.exp(d[:, 2]) * widths
        pred_h = np.exp(d[:, 3]) * heights
        pb = np.stack([pred_ctr_x - 0.5 * (pred_w - 1.0), pred_ctr_y - 0.5 * (pred_h - 1.0),
                       pred_ctr_x + 0.5 * (pred_w - 1.0), pred_ctr_y + 0.5 * (pred_h - 1.0)], 1)
        ld = lms.transpose((0, 2, 3, 1)).reshape((-1, 5, 2))
        pl = ld.copy()
        for i in range(5):
            pl[:, i, 0] = ld[:, i, 0] * widths + ctr_x
            pl[:, i, 1] = ld[:, i, 1] * heights + ctr_y
        keep = np.where(sc.ravel() >= conf)[0]
        boxes.append(pb[keep]), scores.append(sc.ravel()[keep]), marks.append(pl[keep])
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(marks)


# ---------------------------------------------------------------- reference: Pytorch_Retinaface

def reference_torch(loc, conf, landms, size, threshold):
    h, w = size
    anchors = []
    for k, (step, min_sizes) in enumerate(zip([8, 16, 32], [[16, 32], [64, 128], [256, 512]])):
        for i, j in itertools.product(range(ceil(h / step)), range(ceil(w / step))):
            for min_size in min_sizes:
                s_kx, s_ky = min_size / w, min_size / h
                cx, cy = (j + 0.5) * step / w, (i + 0.5) * step / h
                anchors += [cx, cy, s_kx, s_ky]
    priors = np.array(anchors).reshape(-1, 4)
    v = [0.1, 0.2]
    boxes = np.concatenate((priors[:, :2] + loc[:, :2] * v[0] * priors[:, 2:], priors[:, 2:] * np.exp(loc[:, 2:] * v[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    boxes *= np.array([w, h, w, h])
    lm = np.concatenate([priors[:, :2] + landms[:, 2 * i:2 * i + 2] * v[0] * priors[:, 2:] for i in range(5)], 1)
    lm *= np.array([w, h] * 5)
    scores = conf[:, 1]
    keep = np.where(scores >= threshold)[0]
    return boxes[keep], scores[keep], lm[keep].reshape(-1, 5, 2)


def reference_nms(boxes, scores, iou):
    order, keep = list(np.argsort(-scores, kind="stable")), []
    for i in order:
        ok = True
        for j in keep:
            xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            union = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]) + (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]) - inter
            if union > 0 and inter / union > iou:
                ok = False
                break
        if ok:
            keep.append(i)
    return np.asarray(keep, np.int64)


# ---------------------------------------------------------------- constructed outputs

def _mxnet_outputs(seed=0):
    rng = np.random.default_rng(seed)
    outs = {}
    for s in (32, 16, 8):
        g = SIZE[0] // s
        fg = rng.uniform(0, 0.3, (1, 2, g, g)).astype(np.float32)
        hot = rng.random((1, 2, g, g)) < 0.08
        fg[hot] = rng.uniform(0.6, 1.0, hot.sum())
        outs[f"face_rpn_cls_prob_reshape_stride{s}"] = np.concatenate([1 - fg, fg], 1)
        outs[f"face_rpn_bbox_pred_stride{s}"] = rng.normal(0, 0.2, (1, 8, g, g)).astype(np.float32)
        outs[f"face_rpn_landmark_pred_stride{s}"] = rng.normal(0, 0.3, (1, 20, g, g)).astype(np.float32)
    return outs


def _torch_outputs(seed=0, logits=False):
    rng = np.random.default_rng(seed)
    n = sum(ceil(SIZE[0] / s) * ceil(SIZE[1] / s) * 2 for s in (8, 16, 32))
    face = rng.uniform(0, 0.3, n)
    hot = rng.random(n) < 0.05
    face[hot] = rng.uniform(0.6, 1.0, hot.sum())
    conf = np.stack([1 - face, face], 1).astype(np.float32)
    if logits:
        conf = np.log(conf)
    return {"loc": rng.normal(0, 0.5, (1, n, 4)).astype(np.float32), "conf": conf[None],
            "landms": rng.normal(0, 0.5, (1, n, 10)).astype(np.float32)}


def _check(got, ref_boxes, ref_scores, ref_marks, iou):
    keep = reference_nms(ref_boxes, ref_scores, iou)
    assert len(keep) >= 3 and len(got) == len(keep)
    np.testing.assert_allclose(got.scores, ref_scores[keep], atol=1e-6)
    np.testing.assert_allclose(got.boxes, np.clip(ref_boxes[keep], 0, SIZE[0]), atol=1e-3)
    np.testing.assert_allclose(got.landmarks, ref_marks[keep], atol=1e-3)


@pytest.mark.parametrize("case", ["mxnet", "torch", "torch_logits"])
def test_decoders_match_the_reference_and_add_nms(tmp_path, case):
    if case == "mxnet":
        outs = _mxnet_outputs()
        names = list(outs)[::-1]  # declared in reverse: binding is by name, never by position
        ref = reference_mxnet(outs, 0.5)
        layout = "retinaface_mxnet"
    else:
        outs = _torch_outputs(logits=case == "torch_logits")
        names = ["landms", "conf", "loc"]
        conf = outs["conf"][0]
        if case == "torch_logits":
            conf = np.exp(conf) / np.exp(conf).sum(1, keepdims=True)
        ref = reference_torch(outs["loc"][0], conf, outs["landms"][0], SIZE, 0.5)
        layout = "retinaface_torch"
    model = gated_graph(tmp_path / f"{case}.onnx", {n: outs[n] for n in names}, {}, size=SIZE)
    nms_model = add_nms(model, tmp_path / f"{case}_nms.onnx", config=AddNmsConfig(task="face", target="onnxruntime"))
    image = np.full((*SIZE, 3), 90, np.uint8)
    with FaceDetector.from_path(model) as host, FaceDetector.from_path(nms_model) as graph:
        assert host.layout.name == layout and host.binding.auto
        assert graph.preprocessing == host.preprocessing == host.layout.preprocess
        a, b = host(image), graph(image)
    _check(a, *ref, iou=0.4)
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
    np.testing.assert_allclose(b.landmarks, a.landmarks, atol=1e-3)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-5)


def test_preprocessing_defaults_of_each_retinaface_export():
    from trtkit.tasks.layouts import get_layout

    torch_p = get_layout("face", "retinaface_torch").preprocess
    mx = get_layout("face", "retinaface_mxnet").preprocess
    assert (torch_p.bgr, torch_p.mean, torch_p.scale) == (True, (104.0, 117.0, 123.0), 1.0)
    assert (mx.bgr, mx.mean, mx.std, mx.scale) == (False, (0.0,) * 3, (1.0,) * 3, 1.0)
    pixel = np.array([[[30, 20, 10]]], np.uint8)  # R, G, B
    assert torch_p.to_tensor(pixel)[0, :, 0, 0].tolist() == [10 - 104, 20 - 117, 30 - 123]


def test_random_init_retinaface_exported_with_trtkit_export(cli, tmp_path):
    pytest.importorskip("torch")
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "data" / "tiny_retinaface.py"
    out = tmp_path / "retina.onnx"
    r = cli("export", f"{src}:make_model", "-o", out, "--input", "input:1x3x64x64", "--output-names", "loc,conf,landms")
    assert r.code == 0, r
    size = (64, 64)
    image = np.random.default_rng(1).integers(0, 255, (*size, 3), dtype=np.uint8)
    cfg = FaceDetectorConfig(conf=0.5, iou=0.4)
    with FaceDetector.from_path(out, config=cfg) as task:
        assert task.layout.name == "retinaface_torch"
        feeds, _ = task.preprocess(image)
        got = task(image)
    raw = dict(zip(["loc", "conf", "landms"], ort.InferenceSession(str(out)).run(["loc", "conf", "landms"], feeds)))
    boxes, scores, marks = reference_torch(raw["loc"][0], raw["conf"][0], raw["landms"][0], size, 0.5)
    keep = reference_nms(boxes, scores, 0.4)
    assert len(keep) > 0 and len(got) == len(keep)
    np.testing.assert_allclose(got.boxes, np.clip(boxes[keep], 0, 64), atol=1e-3)
    np.testing.assert_allclose(got.landmarks, marks[keep], atol=1e-3)
    nms_model = add_nms(out, tmp_path / "retina_nms.onnx", config=AddNmsConfig(task="face", conf=0.5, iou=0.4, target="onnxruntime"))
    with FaceDetector.from_path(nms_model) as graph:
        np.testing.assert_allclose(graph(image).boxes, got.boxes, atol=1e-3)
