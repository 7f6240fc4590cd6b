"""Image reading, geometry and NMS helpers of the task pipelines (real cv2/Pillow, real files)."""

from __future__ import annotations

import numpy as np
import pytest

from trtkit.errors import TaskError
from trtkit.tasks import _image as image_ops
from trtkit.tasks._image import as_rgb, letterbox, nms, read_image, scale_boxes, scale_points
from trtkit.tasks.preprocess import CLASSIFY_PRESETS, Preprocess

cv2 = pytest.importorskip("cv2")
Image = pytest.importorskip("PIL.Image")


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_read_image_converts_modes_to_rgb(tmp_path, mode):
    rgb = _gradient()
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    else:
        img = img.convert(mode)
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    img.save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    if mode == "RGBA":
        np.testing.assert_array_equal(out, rgb)  # alpha dropped, colours kept, RGB order
    if mode in ("L", "I;16"):
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    if mode == "I;16":
        np.testing.assert_allclose(out[..., 0], rgb[..., 0], atol=1)  # 16-bit scaled to 8-bit


def test_read_image_is_rgb_not_bgr(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    assert read_image(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize(
    "content, needle",
    [(b"", "empty file"), (b"not an image at all\n", "cannot decode"), (b"\x89PNG\r\n\x1a\n\x00\x00", "cannot decode")],
)
def test_read_image_rejects_non_images(tmp_path, content, needle):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(TaskError, match=needle) as info:
        read_image(path)
    assert "bad.png" in str(info.value)


def test_read_image_missing_and_directory(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(TaskError, match="is a directory"):
        read_image(tmp_path)


def test_as_rgb_rejects_bad_arrays():
    with pytest.raises(TaskError, match="zero area"):
        as_rgb(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(TaskError, match="dtype float32"):
        as_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(TaskError, match="HxWx3"):
        as_rgb(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("center", [True, False])
def test_letterbox_maps_back(center):
    img = _gradient(300, 500)
    out, info = letterbox(img, (320, 320), pad_value=7, center=center)
    assert out.shape == (320, 320, 3)
    # the padding is the pad value; centred splits it top/bottom, otherwise it is all at the bottom
    if not center:
        assert info.pad_x == 0 and info.pad_y == 0 and (out[-1, -1] == 7).all()
    else:
        assert info.pad_y > 0 and (out[0, 0] == 7).all()
    # a box drawn in model space maps back onto the original box
    box = np.array([[100.0, 50.0, 400.0, 250.0]])
    model_box = box * info.scale + np.array([info.pad_x, info.pad_y] * 2)
    np.testing.assert_allclose(scale_boxes(model_box, info), box, atol=1e-3)
    pts = np.array([[10.0, 20.0]])
    np.testing.assert_allclose(scale_points(pts * info.scale + [info.pad_x, info.pad_y], info), pts, atol=1e-3)


def test_to_tensor_normalizes_per_channel():
    img = np.full((2, 3, 3), [10, 20, 30], np.uint8)
    t = Preprocess(scale=1.0, mean=10, std=(2, 5, 10), bgr=False).to_tensor(img)
    assert t.shape == (1, 3, 2, 3) and t.dtype == np.float32 and t.flags.c_contiguous
    assert t[0, :, 0, 0].tolist() == [0.0, 2.0, 2.0]
    # BGR swaps the channels first; mean/std then apply per channel of the tensor (B, G, R)
    t = Preprocess(scale=0.5, mean=(1, 2, 3), std=1, bgr=True).to_tensor(img)
    assert t[0, :, 0, 0].tolist() == [15 - 1, 10 - 2, 5 - 3]


def test_preprocess_overrides_take_precedence_and_describe_themselves():
    layout = Preprocess(scale=1 / 255, mean=0, std=1, bgr=False, pad="center", pad_value=114, stride=32)
    user = Preprocess(scale=1.0, bgr=True)
    merged = user.over(layout)
    assert (merged.scale, merged.bgr, merged.pad, merged.pad_value) == (1.0, True, "center", 114)
    assert user.given() == ("scale", "bgr")
    assert merged.describe() == "BGR, (pixel*1 - 0) / 1, pad center 114, stride 32"
    assert layout.describe().startswith("RGB, (pixel*1/255 - 0) / 1")
    assert merged.flags(relative_to=layout) == "--scale 1 --bgr"
    imagenet = CLASSIFY_PRESETS["imagenet"]
    np.testing.assert_allclose(imagenet.to_tensor(np.full((1, 1, 3), 255, np.uint8))[0, :, 0, 0],
                               [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-5)
    with pytest.raises(TaskError, match=r"Preprocess.std") as err:
        Preprocess(std=(1, 0, 1))
    assert err.value.render("cli").startswith("--std")
    with pytest.raises(TaskError, match=r"Preprocess.pad") as err:
        Preprocess(pad="left")
    assert err.value.render("cli").startswith("--pad")


def _random_boxes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (n, 2))], 1).astype(np.float32)
    return boxes, rng.uniform(0, 1, n).astype(np.float32)


def test_nms_cv2_and_numpy_paths_agree():
    boxes, scores = _random_boxes(600)
    by_cv2 = nms(boxes, scores, iou=0.5)
    by_numpy = image_ops._nms_numpy(boxes.astype(np.float64), scores, 0.5, None)
    np.testing.assert_array_equal(by_cv2, by_numpy)
    assert np.all(np.diff(scores[by_cv2]) <= 0)  # best first


def test_nms_suppresses_by_iou_and_respects_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, iou=0.5).tolist() == [0, 2]  # IoU(0,1) = 9/11 > 0.5
    assert nms(boxes, scores, iou=0.9).tolist() == [0, 1, 2]
    assert nms(boxes, scores, iou=0.5, classes=np.array([0, 1, 0])).tolist() == [0, 1, 2]
    assert nms(boxes, scores, iou=0.5, max_det=1).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), iou=0.5).tolist() == []


def test_caption_lines_do_not_overlap():
    # Regression: the second line was drawn over the first, hiding the top-1 label.
    from trtkit.tasks.draw import draw_caption

    image = np.full((200, 300, 3), 128, np.uint8)
    one = draw_caption(image, ["espresso 0.88"])
    two = draw_caption(image, ["espresso 0.88", "cup 0.06"])
    band = np.flatnonzero((one != image).any(axis=(1, 2)))  # rows the first line occupies
    assert band.size, "the first caption line drew nothing"
    assert np.array_equal(one[: band.max() + 1], two[: band.max() + 1])
    assert (two[band.max() + 1 :] != image[band.max() + 1 :]).any(), "the second line drew nothing"
