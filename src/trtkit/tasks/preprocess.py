"""How image pixels become a model's input tensor, as one frozen value every layout declares.

``tensor = (pixel * scale - mean) / std`` per channel, on RGB (or BGR) pixels,
after a letterbox that pads at the centre or at the bottom-right corner with
``pad_value``. Each detection/face layout carries its own defaults (YOLOv5/v8:
RGB, 1/255, centre pad 114; YOLOX: BGR, raw 0..255, corner pad 114; SCRFD:
RGB, (p - 127.5)/128, corner pad 0 ...) and classification has named presets
(:data:`CLASSIFY_PRESETS`). A field left ``None`` in a user's
:class:`Preprocess` takes that default (:meth:`Preprocess.over`), so the CLI's
``--scale``/``--mean``/``--std``/``--bgr``/``--pad`` override one setting each.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

from ..errors import TaskError
from ._image import _cv2

__all__ = ["Preprocess", "PAD_CHOICES", "CLASSIFY_PRESETS", "format_scale", "parse_scale"]

PAD_CHOICES = ("center", "corner")


@functools.lru_cache(maxsize=1)
def _have_cv2() -> bool:
    """OpenCV is optional here: without it (e.g. quantize's Pillow-only calibration) the NumPy formula runs."""
    from .._optional import available

    return available("cv2")


@functools.lru_cache(maxsize=32)
def _tables(scale: float, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Per-channel float32 tables of ``(pixel * scale - mean) / std`` for pixels 0..255 (the same float32 ops
    as the array formula, so the results are identical)."""
    levels = np.arange(256, dtype=np.float32)
    m, inv = np.asarray(mean, np.float32), 1.0 / np.asarray(std, np.float32)
    return tuple(np.ascontiguousarray((levels * np.float32(scale) - m[c]) * inv[c], np.float32) for c in range(3))

METADATA_KEY = "trtkit.preprocess"  # where add-nms records the source layout's preprocessing


def _triple(value: Any, what: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    if isinstance(value, (tuple, list)) and len(value) in (1, 3) and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value) * (3 if len(value) == 1 else 1)  # type: ignore[return-value]
    raise TaskError(f"Preprocess.{what} (--{what}) must be one number or three (per R,G,B channel), got {value!r}")


def format_scale(scale: float) -> str:
    """1/255 for 0.00392..., else the plain number."""
    inv = 1.0 / scale
    if scale < 1 and abs(inv - round(inv)) < 1e-4:
        return f"1/{round(inv)}"
    return f"{scale:g}"


def parse_scale(text: str) -> float:
    """``--scale`` value: a number or a fraction such as ``1/255``."""
    try:
        if "/" in text:
            num, _, den = text.partition("/")
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise TaskError(f"--scale must be a number or a fraction such as 1/255, got {text!r}") from None
    return value


@dataclass(frozen=True)
class Preprocess:
    """``tensor = (pixel * scale - mean) / std`` on RGB (``bgr=False``) or BGR pixels, after a
    letterbox padded at the ``center`` or bottom-right ``corner`` with ``pad_value`` (0..255).
    ``mean``/``std`` are per channel of the tensor (B,G,R order when ``bgr``). ``stride``: input sizes
    must be multiples of it (the coarsest head stride).
    ``None`` fields take the layout's (or classification preset's) default."""

    scale: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    bgr: bool | None = None
    pad: str | None = None
    pad_value: float | None = None
    stride: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if self.std is not None and any(s == 0 for s in self.std):
            raise TaskError(f"Preprocess.std (--std) must not contain 0, got {self.std}; e.g. --std 1")
        if self.scale is not None and not self.scale > 0:
            raise TaskError(f"Preprocess.scale (--scale) must be > 0, got {self.scale}; e.g. --scale 1/255 or --scale 1")
        if self.pad is not None and self.pad not in PAD_CHOICES:
            raise TaskError(f"Preprocess.pad (--pad) must be one of {', '.join(PAD_CHOICES)}, got {self.pad!r}")
        if self.pad_value is not None and not 0 <= self.pad_value <= 255:
            raise TaskError(f"Preprocess.pad_value must be a pixel value in 0..255, got {self.pad_value}")
        if self.stride is not None and self.stride < 1:
            raise TaskError(f"Preprocess.stride must be >= 1, got {self.stride}")

    # ------------------------------------------------------------ merging
    def over(self, defaults: "Preprocess") -> "Preprocess":
        """These settings where given, ``defaults`` elsewhere."""
        return Preprocess(**{f.name: (v if (v := getattr(self, f.name)) is not None else getattr(defaults, f.name))
                             for f in fields(self)})

    def given(self) -> tuple[str, ...]:
        """Names of the fields set (not None)."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is not None)

    def require_complete(self, what: str) -> None:
        missing = [name for name in ("scale", "mean", "std", "bgr") if getattr(self, name) is None]
        if missing:
            raise TaskError(f"{what} leaves {', '.join(missing)} unset; give every field (this is a trtkit bug)")

    # ------------------------------------------------------------ applying
    def to_tensor(self, image: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """RGB uint8 ``HxWx3`` -> ``1x3xHxW`` float tensor.

        uint8 pixels take 256 values per channel, so the formula is a table per channel, applied with
        ``cv2.LUT`` straight into each CHW plane: one pass, bit-identical to the float32 arithmetic below
        (the table is that arithmetic on 0..255), 16x faster at 640x640 (8.6 -> 0.55 ms on one core),
        which is what lets streaming pipelines keep up with a GPU.
        """
        self.require_complete("Preprocess.to_tensor")
        if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.size and _have_cv2():
            cv2 = _cv2()
            out = np.empty((1, 3) + image.shape[:2], np.float32)
            planes = cv2.split(image)
            tables = _tables(float(self.scale), tuple(self.mean), tuple(self.std))  # type: ignore[arg-type]
            for c in range(3):
                cv2.LUT(planes[2 - c if self.bgr else c], tables[c], dst=out[0, c])
            return out.astype(dtype, copy=False)
        pixels = image[..., ::-1] if self.bgr else image
        scale = np.float32(self.scale)
        mean = np.asarray(self.mean, np.float32).reshape(1, 1, 3)
        inv = (1.0 / np.asarray(self.std, np.float32)).reshape(1, 1, 3)
        chw = ((pixels.astype(np.float32) * scale - mean) * inv).transpose(2, 0, 1)
        return np.ascontiguousarray(chw[None]).astype(dtype, copy=False)

    def tables(self) -> np.ndarray:
        """``float32 [3, 256]``: row c is tensor channel c's value for pixel levels 0..255 (of the source plane
        ``2 - c`` when ``bgr``), exactly what :meth:`to_tensor` looks up."""
        self.require_complete("Preprocess.tables")
        return np.stack(_tables(float(self.scale), tuple(self.mean), tuple(self.std)))  # type: ignore[arg-type]

    # ------------------------------------------------------------ words
    def describe(self) -> str:
        """e.g. ``RGB, (pixel*1/255 - 0) / 1, pad center 114, stride 32``."""
        def nums(t: tuple[float, ...] | None) -> str:
            if t is None:
                return "?"
            return f"{t[0]:g}" if len(set(t)) == 1 else "(" + ",".join(f"{v:g}" for v in t) + ")"

        parts = [
            "BGR" if self.bgr else "RGB",
            f"(pixel*{format_scale(self.scale) if self.scale else '?'} - {nums(self.mean)}) / {nums(self.std)}",
        ]
        if self.pad is not None:
            parts.append(f"pad {self.pad} {self.pad_value:g}" if self.pad_value is not None else f"pad {self.pad}")
        if self.stride is not None:
            parts.append(f"stride {self.stride}")
        return ", ".join(parts)

    def flags(self, *, relative_to: "Preprocess | None" = None) -> str:
        """The CLI flags that select these settings (only those differing from ``relative_to``)."""
        out = []
        for name in ("scale", "mean", "std", "bgr", "pad"):
            value = getattr(self, name)
            if value is None or (relative_to is not None and getattr(relative_to, name) == value):
                continue
            if name == "scale":
                out.append(f"--scale {format_scale(value)}")
            elif name == "bgr":
                out.append("--bgr" if value else "--rgb")
            elif name == "pad":
                out.append(f"--pad {value}")
            else:
                vals = sorted(set(value))
                out.append(f"--{name} " + (f"{vals[0]:g}" if len(vals) == 1 else ",".join(f"{v:g}" for v in value)))
        return " ".join(out)

    # ------------------------------------------------------------ metadata (add-nms records it)
    def to_metadata(self) -> dict[str, str]:
        return {METADATA_KEY: json.dumps({f.name: getattr(self, f.name) for f in fields(self)})}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> "Preprocess | None":
        text = meta.get(METADATA_KEY)
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(**{f.name: data.get(f.name) for f in fields(cls)})
        except (ValueError, TypeError) as exc:
            raise TaskError(f"model metadata {METADATA_KEY!r} is not valid ({exc}): {text!r}; re-run trtkit add-nms") from exc


# Classification presets: the normalisations image classifiers are commonly trained with.
CLASSIFY_PRESETS: dict[str, Preprocess] = {
    # torchvision / timm / ONNX model zoo (ResNet, VGG16, EfficientNet): RGB, /255, ImageNet mean/std
    "imagenet": Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), bgr=False),
    # TensorFlow/Keras "tf" mode (Inception, MobileNet, EfficientNet-Lite TF): pixel / 127.5 - 1
    "inception": Preprocess(scale=1 / 127.5, mean=1.0, std=1.0, bgr=False),
    # Caffe / Keras "caffe" mode (original VGG16/ResNet50 weights): BGR, minus the ImageNet BGR means, no scaling
    "caffe": Preprocess(scale=1.0, mean=(103.939, 116.779, 123.68), std=1.0, bgr=True),
    # 0..1 pixels, no normalisation (many Keras and YOLO-cls models)
    "unit": Preprocess(scale=1 / 255, mean=0.0, std=1.0, bgr=False),
    # raw 0..255 pixels (the model normalises inside)
    "raw": Preprocess(scale=1.0, mean=0.0, std=1.0, bgr=False),
}
