"""``trtkit quantize``: FP32 ONNX -> INT8 Q/DQ ONNX for TensorRT's explicit quantization.

TensorRT 11 and TensorRT-RTX have no INT8 builder flag or calibrator: INT8 comes
from QuantizeLinear/DequantizeLinear nodes in the graph. This module makes them
with ONNX Runtime's ``quantize_static`` (well kept, and what NVIDIA's own docs
point to), using the settings TensorRT needs: QDQ format, signed INT8 for weights
and activations, symmetric scales (zero point 0, which TensorRT requires), and
per-channel weight scales. Only Conv/ConvTranspose/MatMul/Gemm inputs are
quantized: TensorRT fuses those and propagates the scales itself.

Calibration data (``--calib``), one of:

- a ``.npz`` file: one array per model input, keyed by input name (a single
  array saved unnamed as ``arr_0`` is accepted for a one-input model). Samples
  are stacked on axis 0 and fed in batches of the model's batch size (1 when
  the batch is dynamic). Arrays must already be preprocessed exactly as the
  model expects, in the input's dtype.
- a directory of ``.npz`` files (as above), or of ``.npy`` files (one-input
  models), or of images (.jpg/.jpeg/.png/.bmp/.webp).

Images are preprocessed with ONE fixed recipe, so check that it is your model's:
decode -> RGB (``bgr=True`` for BGR models) -> resize (bilinear, no letterbox,
no crop) to the input's H x W (``image_size`` when those are dynamic) -> float32
scaled to [0, 1] -> ``(x - mean) / std`` per channel -> NCHW with batch 1.
Anything else (letterboxing, crops, other scaling): save preprocessed .npy/.npz.

Calibration methods, each computed by ONNX Runtime's calibrators (run here directly, because
``quantize_static`` cannot pass them the histogram sizes, see :data:`METHOD_OPTIONS`):

- ``minmax``: each activation's range is its min/max over the calibration data;
- ``entropy``: the range whose 128-bin quantized histogram is closest (KL divergence) to the full one,
  TensorRT's entropy calibration;
- ``percentile``: the 99.999th percentile of |x| (outliers clipped).

Accuracy: some calibration samples are held back (``holdout``; by default a fifth, at most 32) and
never calibrate. Both the FP32 and the Q/DQ model run on them with ONNX Runtime, and the report gives
each output's error, and for a classifier-like output ([batch, classes]) top-1/top-5 agreement.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._optional import require
from ..atomic import atomic_output, check_output_path
from ..errors import BackendUnavailable, BuildError, DTypeError, ModelLoadError, ShapeError, SpecError, Spelling
from ..spec import TensorSpec

__all__ = ["QuantizeConfig", "QuantizeReport", "OutputAccuracy", "quantize", "measure_accuracy", "split_holdout", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
METHODS = ("minmax", "entropy", "percentile")
QUANT_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
ENTROPY_BINS = 512  # histogram bins of the entropy search. TensorRT uses 2048; ORT's search is pure Python and
# quadratic in the bins (2048 takes ~2 minutes on EfficientNet-Lite0 with 10 images, 512 takes ~10 s)
QUANTIZED_BINS = 128  # the INT8 half-range, as TensorRT's entropy calibrator
# Options of ONNX Runtime's create_calibrator per method. quantize_static forwards only some of them
# (not num_bins / num_quantized_bins), and its Entropy default of 128 bins for 128 quantized bins leaves the
# KL search one candidate, the full range: "entropy" then wrote a file byte-identical to "minmax".
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": ENTROPY_BINS, "num_quantized_bins": QUANTIZED_BINS, "symmetric": True},
    "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
}
METHOD_TEXT = {
    "minmax": "minmax (each activation's min/max)",
    "entropy": f"entropy (KL divergence, {ENTROPY_BINS}-bin histograms to {QUANTIZED_BINS} levels)",
    "percentile": "percentile (99.999th percentile of |x|)",
}
MAX_HOLDOUT = 32  # held-back samples by default at most
CALIB_CHUNK = 16  # calibration batches per collect call: ORT keeps every activation of a call in memory
CLASSES_MIN = 10  # a [batch, C] output with at least this many columns is read as class scores


@dataclass(frozen=True)
class QuantizeConfig:
    """How :func:`quantize` calibrates. See the module docstring for the data formats."""

    calib: str  # .npz file, or a directory of .npz / .npy / image files
    method: str = "minmax"  # minmax | entropy | percentile (ORT calibration methods)
    per_channel: bool = True  # per-output-channel weight scales (TensorRT supports them for Conv/MatMul)
    max_samples: int = 256  # calibration batches used at most
    image_size: tuple[int, int] | None = None  # (H, W) for images when the model's H/W are dynamic
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # subtracted after scaling pixels to [0, 1]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False  # feed images as BGR (OpenCV-trained models, PP-OCR)
    preset: str | None = None  # a classification preset (imagenet, inception, caffe, unit, raw) instead of mean/std/bgr
    holdout: int | None = None  # samples held back to measure accuracy; None: a fifth (at most 32), 0: none

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SpecError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.max_samples < 1:
            raise SpecError(f"{{max_samples}} must be >= 1, got {self.max_samples}",
                            spellings={"max_samples": Spelling("max_samples", "--max-samples")})
        if self.holdout is not None and self.holdout < 0:
            raise SpecError(f"{{holdout}} must be >= 0 samples (0: no accuracy check), got {self.holdout}",
                            spellings={"holdout": Spelling("holdout", "--holdout")})
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise SpecError(f"mean and std need 3 values each and std no zeros, got mean {self.mean}, std {self.std}")
        if self.preset is not None:
            from ..tasks.preprocess import CLASSIFY_PRESETS

            if self.preset not in CLASSIFY_PRESETS:
                raise SpecError(f"preset (--preset) {self.preset!r} is unknown; choose one of {', '.join(CLASSIFY_PRESETS)}")
            if (self.mean, self.std, self.bgr) != ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False):
                raise SpecError("preset (--preset) and {norm} conflict: the preset sets all three; give one or the other",
                                spellings={"norm": Spelling("mean/std/bgr", "--mean/--std/--bgr")})

    def preprocessing(self) -> Any:
        """The image preprocessing (a ``tasks.preprocess.Preprocess``): the preset's, else /255 then mean/std."""
        from ..tasks.preprocess import CLASSIFY_PRESETS, Preprocess

        if self.preset is not None:
            return CLASSIFY_PRESETS[self.preset]
        return Preprocess(scale=1 / 255, mean=self.mean, std=self.std, bgr=self.bgr)


@dataclass(frozen=True)
class OutputAccuracy:
    """How far one output of the Q/DQ model is from the FP32 model's on the held-back samples."""

    name: str
    shape: tuple[int, ...]  # of one held-back batch
    max_abs: float
    mean_abs: float
    rel_l2: float  # ||int8 - fp32|| / ||fp32|| over all held-back samples
    samples: int  # rows compared (held-back batches x batch size)
    top1: int | None = None  # class-score outputs: rows whose argmax agrees with FP32's
    top5: int | None = None  # class-score outputs with >= 5 classes: rows where FP32's top-1 is in the INT8 top 5

    def describe(self) -> str:
        text = (f"{self.name} [{'x'.join(map(str, self.shape))}]: max abs {self.max_abs:.3g}, mean abs {self.mean_abs:.3g}, "
                f"relative error {self.rel_l2:.2%}")
        if self.top1 is not None:
            text += f"; top-1 agrees on {self.top1}/{self.samples}"
        if self.top5 is not None:
            text += f", FP32's top-1 is in the top 5 on {self.top5}/{self.samples}"
        return text


@dataclass(frozen=True)
class QuantizeReport:
    output: str
    batches: int  # calibration batches fed
    source: str  # what they came from
    qdq_nodes: int  # QuantizeLinear + DequantizeLinear nodes in the result
    method: str
    held_back: int = 0  # batches kept out of calibration and used to measure accuracy
    accuracy: tuple[OutputAccuracy, ...] = ()
    image_preprocessing: str = ""  # how calibration images were turned into tensors ("" for arrays)

    @property
    def warnings(self) -> tuple[str, ...]:
        out = []
        if not self.held_back:
            out.append("no calibration sample was held back, so accuracy was not measured; give more samples "
                       "(5 or more hold one back by default) or set the held-back count")
        for acc in self.accuracy:
            if acc.top1 is not None and acc.top1 < acc.samples:
                out.append(
                    f"top-1 of {acc.name!r} changed on {acc.samples - acc.top1} of {acc.samples} held-back sample(s): "
                    "calibrate on more representative data (hundreds of samples), try another method, or keep "
                    "this model in FP16"
                )
        return tuple(out)

    def summary(self) -> str:
        lines = [
            f"wrote {self.output}: {self.qdq_nodes} Q/DQ nodes, calibrated with {METHOD_TEXT[self.method]} "
            f"on {self.batches} batch(es) from {self.source}"
        ]
        if self.image_preprocessing:
            lines.append(
                f"calibration images were preprocessed as {self.image_preprocessing}: this must be what the model "
                "expects at inference (an ImageNet-trained classifier: --preset imagenet; see --preset/--mean/--std/--bgr)"
            )
        if self.accuracy:
            lines.append(
                f"accuracy vs the FP32 model on {self.held_back} held-back batch(es), not used to calibrate "
                "(ONNX Runtime on the CPU; TensorRT's INT8 kernels round a little differently, so compare the "
                "built engine too):"
            )
            lines += [f"  {acc.describe()}" for acc in self.accuracy]
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append(f"build it with: trtkit build {self.output} --int8 ...")
        return "\n".join(lines)


# ------------------------------------------------------------ array data

def _batch_size(spec: TensorSpec) -> int:
    return spec.shape[0] if spec.rank and isinstance(spec.shape[0], int) else 1


def _npz_arrays(path: Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"calibration file {str(path)!r} is not a readable .npz ({exc}); save it with numpy.savez") from None
    names = [s.name for s in specs]
    if len(specs) == 1 and list(arrays) == ["arr_0"]:
        return {names[0]: arrays["arr_0"]}
    missing = [n for n in names if n not in arrays]
    extra = [k for k in arrays if k not in names]
    if missing or extra:
        raise SpecError(
            f"calibration file {str(path)!r} has arrays {sorted(arrays)}, but the model's inputs are {names}"
            f"{'; missing: ' + ', '.join(missing) if missing else ''}{'; unknown: ' + ', '.join(extra) if extra else ''}. "
            "Save one array per input, keyed by input name: numpy.savez(path, **{name: array})"
        )
    return arrays


def _check_finite(arr: np.ndarray, name: str, source: str) -> None:
    """NaN/Inf would reach ORT's calibrator, which fails with a bare ``AssertionError: scale issue``."""
    if arr.dtype.kind not in "fc":
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    bad = np.flatnonzero(~finite.reshape(arr.shape[0], -1).all(axis=1)) if arr.ndim else np.array([0])
    raise SpecError(
        f"calibration array {name!r} in {source} holds {int(np.isnan(arr).sum())} NaN and {int(np.isinf(arr).sum())} "
        f"Inf value(s) (first in sample {int(bad[0])} along axis 0, {len(bad)} sample(s) affected); calibration needs "
        "finite data: fix the preprocessing that produced it, or drop those samples"
    )


def _split(arrays: dict[str, np.ndarray], specs: Sequence[TensorSpec], source: str) -> Iterator[dict[str, np.ndarray]]:
    """Cut arrays stacked on axis 0 into model-sized batches, checking dtype, shape and finiteness (never casting)."""
    counts = set()
    for spec in specs:
        arr = arrays[spec.name]
        if arr.dtype.name != spec.dtype:
            raise DTypeError(
                f"calibration array {spec.name!r} in {source} is {arr.dtype.name}, but the model input is {spec.dtype}; "
                f"convert it before saving (array.astype(np.{spec.dtype}))"
            )
        batch = _batch_size(spec)
        if arr.ndim != spec.rank or arr.shape[0] % batch:
            raise ShapeError(
                f"calibration array {spec.name!r} in {source} has shape {list(arr.shape)}; expected samples stacked on "
                f"axis 0 in multiples of the model batch {batch}, each like {spec.display_shape()}"
            )
        _check_finite(arr, spec.name, source)
        counts.add(arr.shape[0] // batch)
    if len(counts) != 1:
        raise ShapeError(f"calibration arrays in {source} hold different numbers of samples ({sorted(counts)}); give each input the same count")
    for i in range(counts.pop()):
        feed = {}
        for spec in specs:
            b = _batch_size(spec)
            feed[spec.name] = np.ascontiguousarray(arrays[spec.name][i * b:(i + 1) * b])
            if not spec.accepts(feed[spec.name].shape):
                raise ShapeError(
                    f"calibration sample {i} of {spec.name!r} in {source} has shape {list(feed[spec.name].shape)}, "
                    f"which the model input {spec.display_shape()} does not accept"
                )
        yield feed


# ------------------------------------------------------------ image data

def _image_hw(spec: TensorSpec, config: QuantizeConfig) -> tuple[int, int]:
    if spec.rank != 4 or spec.shape[1] != 3 or spec.dtype != "float32":
        raise SpecError(
            f"images can only calibrate a float32 NCHW input with 3 channels; {spec.name!r} is {spec.dtype} "
            f"{spec.display_shape()}. Save preprocessed arrays as .npz instead"
        )
    h, w = spec.shape[2], spec.shape[3]
    if config.image_size:
        if (isinstance(h, int) and h != config.image_size[0]) or (isinstance(w, int) and w != config.image_size[1]):
            raise ShapeError(f"image size {config.image_size} contradicts the model input {spec.display_shape()}; drop --image-size")
        return config.image_size
    if not (isinstance(h, int) and isinstance(w, int)):
        raise ShapeError(
            f"model input {spec.name!r} {spec.display_shape()} has dynamic height/width: give the calibration size, "
            "e.g. --image-size 640x640"
        )
    return h, w


def _image_feed(path: Path, spec: TensorSpec, hw: tuple[int, int], config: QuantizeConfig) -> dict[str, np.ndarray]:
    image_mod = require("PIL", purpose="calibrating with images")
    image_mod = require("PIL.Image")
    try:
        with image_mod.open(path) as img:
            rgb = img.convert("RGB").resize((hw[1], hw[0]), image_mod.BILINEAR)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"calibration image {str(path)!r} cannot be read ({exc}); remove it or convert it to PNG/JPEG") from None
    # the same arithmetic as predict's (tasks.preprocess), so calibration sees what inference will
    return {spec.name: config.preprocessing().to_tensor(np.asarray(rgb, dtype=np.uint8))}


def _image_options(config: QuantizeConfig) -> list[str]:
    """The image preprocessing options set away from their defaults (CLI spelling)."""
    defaults = QuantizeConfig(calib=config.calib)
    return [flag for flag, attr in (("--image-size", "image_size"), ("--mean", "mean"), ("--std", "std"), ("--bgr", "bgr"),
                                    ("--preset", "preset"))
            if getattr(config, attr) != getattr(defaults, attr)]


def _refuse_image_options(config: QuantizeConfig, what: str) -> None:
    """Preprocessing options only apply to images; arrays are used as they are, so ignoring them would be silent."""
    given = _image_options(config)
    if given:
        raise SpecError(
            f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to image calibration only, but --calib {what} "
            "holds arrays, which are fed exactly as saved (already preprocessed). Drop "
            f"{'it' if len(given) == 1 else 'them'}, or preprocess the arrays before saving them"
        )


def _directory_feeds(root: Path, specs: Sequence[TensorSpec], config: QuantizeConfig) -> Iterator[dict[str, np.ndarray]]:
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    kinds = {
        "npz": [p for p in files if p.suffix.lower() == ".npz"],
        "npy": [p for p in files if p.suffix.lower() == ".npy"],
        "image": [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES],
    }
    used = [k for k, v in kinds.items() if v]
    if len(used) != 1:
        raise SpecError(
            f"calibration directory {str(root)!r} must hold one kind of file: .npz, .npy or images "
            f"({', '.join(IMAGE_SUFFIXES)}); found {', '.join(used) or 'none of them'}"
        )
    kind = used[0]
    if kind != "image":
        _refuse_image_options(config, f"{str(root)!r} (.{kind} files)")
    if kind == "npz":
        for p in kinds["npz"]:
            yield from _split(_npz_arrays(p, specs), specs, repr(str(p)))
    elif kind == "npy":
        if len(specs) != 1:
            raise SpecError(f"{str(root)!r} holds .npy files, which only fit a one-input model; this one has {len(specs)}: use .npz")
        for p in kinds["npy"]:
            yield from _split({specs[0].name: np.load(p, allow_pickle=False)}, specs, repr(str(p)))
    else:
        if len(specs) != 1:
            raise SpecError(f"images only calibrate a one-input model; this one has {len(specs)} inputs: use .npz")
        hw = _image_hw(specs[0], config)
        for p in kinds["image"]:
            yield _image_feed(p, specs[0], hw, config)


def _held_back_count(total: int, config: QuantizeConfig) -> int:
    if config.holdout is not None:
        if config.holdout and config.holdout >= total:
            raise SpecError(
                f"holding back {config.holdout} of {total} calibration sample(s) leaves none to calibrate; "
                f"hold back fewer ({{holdout}} {total - 1} at most), or add samples",
                spellings={"holdout": Spelling("holdout", "--holdout")},
            )
        return config.holdout
    return min(MAX_HOLDOUT, -(-total // 5)) if total >= 5 else 0


def split_holdout(feeds: list[dict[str, np.ndarray]], config: QuantizeConfig) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """(calibration, held back): held-back samples are spread evenly over the data (files come sorted by
    name, and names often group classes), and calibration keeps at most ``max_samples``."""
    count = _held_back_count(len(feeds), config)
    picked = set(np.linspace(0, len(feeds) - 1, count).round().astype(int).tolist()) if count else set()
    calib = [f for i, f in enumerate(feeds) if i not in picked][: config.max_samples]
    return calib, [feeds[i] for i in sorted(picked)]


def calibration_feeds(specs: Sequence[TensorSpec], config: QuantizeConfig) -> tuple[list[dict[str, np.ndarray]], str]:
    """The batches (at most ``max_samples`` plus those held back) and a description of where they came from."""
    src = Path(config.calib)
    if src.is_dir():
        it, what = _directory_feeds(src, specs, config), f"directory {str(src)!r}"
    elif src.is_file() and src.suffix.lower() == ".npz":
        _refuse_image_options(config, f"{str(src)!r} (.npz)")
        it, what = _split(_npz_arrays(src, specs), specs, repr(str(src))), f"{str(src)!r}"
    elif src.exists():
        raise SpecError(f"--calib {str(src)!r}: expected a .npz file or a directory of .npz/.npy/image files")
    else:
        raise ModelLoadError(f"calibration data {str(src)!r} does not exist; give a .npz file or a directory")
    limit = config.max_samples + (config.holdout if config.holdout is not None else MAX_HOLDOUT)
    feeds = []
    for feed in it:
        feeds.append(feed)
        if len(feeds) >= limit:
            break
    if not feeds:
        raise SpecError(f"calibration data {what} holds no samples; add images, .npy or .npz files")
    return feeds, what


# --------------------------------------------------------------- quantize

def _reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    quant = require("onnxruntime.quantization", purpose="trtkit quantize")

    class _Reader(quant.CalibrationDataReader):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    return _Reader()


def quantize(model: str | os.PathLike[str], output: str | os.PathLike[str], *, config: QuantizeConfig) -> QuantizeReport:
    """Calibrate ``model`` on ``config.calib``, write a Q/DQ INT8 ONNX model to ``output`` (atomically), and
    measure it against the FP32 model on the held-back samples."""
    from .onnx_io import io_specs, load_onnx

    src = Path(model)
    out = check_output_path(output, what="quantized model", inputs=(src, config.calib))
    onnx_model = load_onnx(src)
    _refuse_quantized(src, onnx_model)
    inputs, _ = io_specs(onnx_model)
    feeds, what = calibration_feeds(inputs, config)
    calib, held = split_holdout(feeds, config)
    q = require("onnxruntime.quantization", purpose="trtkit quantize")
    # No quant_pre_process: it imports torch through onnxruntime.tools (10+ s), and quantize_static
    # runs ONNX shape inference on the model itself, which is what the quantizer needs.
    _check_ranges_api(q)
    with atomic_output(out, what="quantized model", inputs=(src, config.calib)) as tmp_out, _quiet_preprocess_advice(), \
            tempfile.TemporaryDirectory(prefix="trtkit-calib-") as workdir:
        cache = Path(workdir) / "ranges.json"
        q.save_tensors_data(_calibrate(src, calib, config, Path(workdir)), cache)
        # The ranges above are the calibration; quantize_static reads them back and only places the Q/DQ nodes.
        q.quantize_static(
            str(src), str(tmp_out), None, quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=QUANT_OPS, per_channel=config.per_channel,
            activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=_ort_method(config.method), calibration_cache_path=str(cache),
            # TensorRT: zero points must be 0 (symmetric), and it has no INT32 bias dequantization.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
        count = _count_qdq(tmp_out)
        if count == 0:
            raise BuildError(
                f"quantizing {str(src)!r} produced no Q/DQ nodes: it has no {'/'.join(QUANT_OPS)} ops with float "
                "inputs to quantize; INT8 brings nothing for this model"
            )
        accuracy = measure_accuracy(src, tmp_out, held)
    images = "" if not _holds_images(Path(config.calib)) else config.preprocessing().describe()
    return QuantizeReport(str(out), len(calib), what, count, config.method, held_back=len(held), accuracy=accuracy,
                          image_preprocessing=images)


def _holds_images(calib: Path) -> bool:
    return calib.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in calib.iterdir() if p.is_file())


def _ort_method(method: str) -> Any:
    q = require("onnxruntime.quantization", purpose="trtkit quantize")
    return {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
            "percentile": q.CalibrationMethod.Percentile}[method]


def _calibrate(src: Path, feeds: list[dict[str, np.ndarray]], config: QuantizeConfig, workdir: Path) -> Any:
    """Activation ranges by ONNX Runtime's calibrator for ``config.method`` with :data:`METHOD_OPTIONS`.

    Fed in chunks: ORT holds every intermediate output of one collect call in memory, and merges the
    ranges (or histograms) of successive calls.
    """
    q = require("onnxruntime.quantization", purpose="trtkit quantize")
    calibrator = q.create_calibrator(
        src, QUANT_OPS, augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=_ort_method(config.method), extra_options=METHOD_OPTIONS[config.method],
    )
    with contextlib.redirect_stdout(_DISCARD):  # the histogram calibrators print progress on stdout
        for start in range(0, len(feeds), CALIB_CHUNK):
            calibrator.collect_data(_reader(feeds[start:start + CALIB_CHUNK]))
        return calibrator.compute_data()


def _check_ranges_api(q: Any) -> None:
    """quantize_static takes precomputed ranges through ``calibration_cache_path`` only in recent ONNX Runtime."""
    import inspect

    if "calibration_cache_path" not in inspect.signature(q.quantize_static).parameters or not hasattr(q, "save_tensors_data"):
        ort = require("onnxruntime")
        raise BackendUnavailable(
            f"onnxruntime {ort.__version__} cannot quantize from precomputed calibration ranges (its quantize_static "
            "has no calibration_cache_path), which trtkit needs to set the histogram sizes of each method; "
            "upgrade it: pip install -U onnxruntime"
        )


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


_DISCARD = _Discard()


def measure_accuracy(fp32: Path, int8: Path, feeds: Sequence[dict[str, np.ndarray]]) -> tuple[OutputAccuracy, ...]:
    """Each output of ``int8`` against ``fp32`` over ``feeds`` (both run with ONNX Runtime on the CPU)."""
    if not feeds:
        return ()
    from .onnx_io import run_onnxruntime

    ref_runs = [run_onnxruntime(fp32, f) for f in feeds]
    got_runs = [run_onnxruntime(int8, f) for f in feeds]
    batch = next(iter(feeds[0].values())).shape[0] if feeds[0] and next(iter(feeds[0].values())).ndim else 1
    result = []
    for name in ref_runs[0]:
        ref = [np.asarray(r[name], np.float64) for r in ref_runs]
        got = [np.asarray(g[name], np.float64) for g in got_runs]
        diff = np.concatenate([(g - r).ravel() for g, r in zip(got, ref)])
        norm = float(np.sqrt(sum(float((r ** 2).sum()) for r in ref)))
        acc = OutputAccuracy(
            name=name, shape=tuple(ref[0].shape), max_abs=float(np.abs(diff).max(initial=0.0)),
            mean_abs=float(np.abs(diff).mean()) if diff.size else 0.0,
            rel_l2=float(np.sqrt((diff ** 2).sum())) / norm if norm else 0.0,
            samples=sum(r.shape[0] if r.ndim else 1 for r in ref),
        )
        if ref[0].ndim == 2 and ref[0].shape[0] == batch and ref[0].shape[1] >= CLASSES_MIN:
            fp_top = np.concatenate([r.argmax(axis=1) for r in ref])
            q_sorted = np.concatenate([np.argsort(-g, axis=1)[:, :5] for g in got])
            acc = replace(acc, top1=int((q_sorted[:, 0] == fp_top).sum()),
                          top5=int((q_sorted == fp_top[:, None]).any(axis=1).sum()))
        result.append(acc)
    return tuple(result)


def _refuse_quantized(src: Path, onnx_model: Any) -> None:
    """Quantizing a Q/DQ graph again would stack a second, meaningless layer of Q/DQ nodes."""
    from ..engine.precision import QDQ_OPS

    count = sum(node.op_type in QDQ_OPS for node in onnx_model.graph.node)
    if count:
        raise BuildError(
            f"{str(src)!r} is already quantized: it has {count} QuantizeLinear/DequantizeLinear nodes. Quantizing it "
            "again would add a second set; build it as it is (trtkit build MODEL --int8 ...), or quantize the "
            "original FP32 model instead"
        )


@contextlib.contextmanager
def _quiet_preprocess_advice() -> Iterator[None]:
    """Drop ORT's root-logger advice to run quant_pre_process (skipped on purpose, see quantize())."""
    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _count_qdq(path: Path) -> int:
    onnx = require("onnx")
    m = onnx.load(str(path), load_external_data=False)
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)
