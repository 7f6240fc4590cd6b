"""Preprocess.to_tensor: the cv2.LUT path equals the float32 formula bit for bit (RGB and BGR, odd layouts,
float16), and falls back to NumPy for images cv2 cannot take (empty ones)."""

from __future__ import annotations

import numpy as np
import pytest

from trtkit.tasks.preprocess import CLASSIFY_PRESETS, Preprocess

pytest.importorskip("cv2")


def _formula(p: Preprocess, image: np.ndarray, dtype=np.float32) -> np.ndarray:
    pixels = image[..., ::-1] if p.bgr else image
    mean = np.asarray(p.mean, np.float32).reshape(1, 1, 3)
    inv = (1.0 / np.asarray(p.std, np.float32)).reshape(1, 1, 3)
    chw = ((pixels.astype(np.float32) * np.float32(p.scale) - mean) * inv).transpose(2, 0, 1)
    return np.ascontiguousarray(chw[None]).astype(dtype)


@pytest.mark.parametrize("bgr", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "fortran", "strided"])
def test_lut_path_is_bit_identical_to_the_formula(bgr, layout):
    p = Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), bgr=bgr)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    if layout == "fortran":
        image = np.asfortranarray(image)
    elif layout == "strided":
        image = rng.integers(0, 256, (74, 53, 3), dtype=np.uint8)[::2]
    for dtype in (np.float32, np.float16):
        got = p.to_tensor(image, dtype)
        assert got.dtype == dtype and got.shape == (1, 3, 37, 53)
        np.testing.assert_array_equal(got, _formula(p, image, dtype))


def test_every_classify_preset_matches():
    image = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3).astype(np.uint8)
    for name, preset in CLASSIFY_PRESETS.items():
        full = preset.over(Preprocess(scale=1.0, mean=(0, 0, 0), std=(1, 1, 1), bgr=False))
        np.testing.assert_array_equal(full.to_tensor(image), _formula(full, image), err_msg=name)


def test_empty_image_gives_an_empty_tensor():
    p = Preprocess(scale=1.0, mean=(0, 0, 0), std=(1, 1, 1), bgr=False)
    assert p.to_tensor(np.zeros((0, 5, 3), np.uint8)).shape == (1, 3, 0, 5)
