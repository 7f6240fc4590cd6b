"""PP-OCR line stages: the 0/180 direction classifier and CTC text recognition.

Both take a list of line crops (RGB uint8, any width). Recognition sorts the
crops by aspect ratio and pads each batch only to the widest crop in it (the
model's width axis is dynamic), so short lines do not pay for long ones; how
crops are grouped (``OcrConfig.rec_batching``) decides the padding, and so the
text, while ``OcrConfig.rec_infer_batch`` decides only how many go into a call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..._optional import require
from ...errors import TaskError
from ..base import describe_outputs, model_metadata
from .det import aspect_ratio, resized_width

if TYPE_CHECKING:
    from .config import OcrConfig

__all__ = ["TextRecognizer", "TextClassifier", "read_characters", "ctc_decode", "line_batch", "plan_batches"]

CHARACTER_KEY = "character"  # metadata key PaddleOCR/RapidOCR ONNX exports use for the dictionary


def _cv2() -> Any:
    return require("cv2", purpose="OCR")


def line_batch(crops: Sequence[np.ndarray], *, height: int, width: int, max_width: int) -> np.ndarray:
    """``[N, 3, height, width]`` float32: each crop resized to ``height`` keeping its aspect ratio (at most
    ``max_width`` wide), BGR, ``(x/255 - 0.5)/0.5``, right-padded with 0 (PP-OCR's resize_norm_img)."""
    cv2 = _cv2()
    # fill with 127.5 so the padding normalises to exactly 0 in the one in-place pass below
    batch = np.full((len(crops), 3, height, width), 127.5, np.float32)
    for i, crop in enumerate(crops):
        w = resized_width(crop, height=height, max_width=max_width)
        resized = cv2.resize(crop, (w, height))
        batch[i, :, :, :w] = resized[:, :, ::-1].transpose(2, 0, 1)  # RGB -> BGR planes
    batch -= 127.5
    batch *= 1 / 127.5
    return batch


def _single_io(backend: Any) -> tuple[Any, Any]:
    ins, outs = tuple(backend.inputs), tuple(backend.outputs)
    if len(ins) != 1 or len(outs) != 1 or ins[0].rank != 4:
        return None, None
    return ins[0], outs[0]


# ---------------------------------------------------------------- characters

def read_characters(path: str | os.PathLike[str]) -> list[str]:
    """A PaddleOCR dictionary file: one character per line, without the CTC blank and the space."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TaskError(f"OCR character file {str(p)!r} does not exist; check --rec-chars") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"cannot read OCR character file {str(p)!r} as UTF-8 text ({exc}); give a UTF-8 file, one character per line") from exc
    return _split_lines(text)


def _split_lines(text: str) -> list[str]:
    # split on '\n' only: str.splitlines() would also split on characters such as '\x1c' or '\u2028'
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def model_characters(backend: Any, *, chars_file: str | None) -> tuple[list[str], str]:
    """The recognizer's dictionary and where it came from (the file wins over model metadata)."""
    if chars_file is not None:
        return read_characters(chars_file), f"file {chars_file!r}"
    path = getattr(backend, "path", None)
    meta = model_metadata(backend, Path(path) if path is not None else None)
    if CHARACTER_KEY not in meta:
        raise TaskError(
            f"the OCR recognition model {str(path) if path else '(backend)'!r} has no {CHARACTER_KEY!r} metadata "
            "(its character dictionary), so its output classes cannot be turned into text. Pass the dictionary "
            "file it was trained with, one character per line: OcrConfig(rec_chars='ppocr_keys_v1.txt') or "
            "--rec-chars FILE"
        )
    return _split_lines(meta[CHARACTER_KEY]), f"metadata {CHARACTER_KEY!r}"


# ---------------------------------------------------------------- recognition

class TextRecognizer:
    """CTC recognition of line crops: ``recognize(crops) -> [(text, score)]`` in the order given."""

    def __init__(self, backend: Any, *, config: "OcrConfig") -> None:
        self.backend = backend
        self.config = config
        spec_in, spec_out = _single_io(backend)
        if spec_in is None or spec_out.rank != 3:
            raise TaskError(
                "the OCR recognition model does not fit: expected a CTC recognizer with one input [N,3,48,W] and "
                f"one output [N,T,C] (per-timestep class scores); found inputs {describe_outputs(backend.inputs)} "
                f"and outputs {describe_outputs(backend.outputs)}. Pass the rec model (e.g. "
                "ch_PP-OCRv4_rec_infer.onnx) in the rec slot"
            )
        self._input = spec_in.name
        chars, source = model_characters(backend, chars_file=config.rec_chars)
        # CTC blank first, space last: PaddleOCR's dictionaries list neither
        self.characters = ["", *chars, " "]
        classes = spec_out.shape[2]
        if isinstance(classes, int) and classes != len(self.characters):
            raise TaskError(
                f"the OCR recognition model outputs {classes} classes but its character list ({source}) has "
                f"{len(chars)} entries, i.e. {len(self.characters)} with the CTC blank and the space; expected "
                f"{classes - 2} entries. Pass the dictionary this model was trained with (--rec-chars FILE)"
            )
        self._lookup = np.array(self.characters, dtype=object)

    def recognize(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        cfg = self.config
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        ratios = [aspect_ratio(crop) for crop in crops]
        for chunk in plan_batches(ratios, config=cfg):
            ratio = max([cfg.rec_min_width / cfg.rec_height, *(ratios[i] for i in chunk)])
            width = int(cfg.rec_height * ratio)
            # the padded width is fixed by the batch plan; how many crops go into one call only changes speed
            for start in range(0, len(chunk), cfg.rec_infer_batch):
                part = chunk[start : start + cfg.rec_infer_batch]
                batch = line_batch([crops[i] for i in part], height=cfg.rec_height, width=width, max_width=width)
                scores = np.asarray(next(iter(self.backend.infer({self._input: batch}).values())))
                for i, decoded in zip(part, ctc_decode(scores, self._lookup)):
                    results[i] = decoded
        return results


def plan_batches(ratios: Sequence[float], *, config: "OcrConfig") -> list[list[int]]:
    """Group crop indices (by width/height ratio) into recognition batches, per ``config.rec_batching``.

    All strategies sort by ratio, so a batch pads only to its widest crop (the W axis is dynamic). A batch
    fixes the padded width of its crops; they are then run ``rec_infer_batch`` at a time:

    - ``"padded"``: consecutive groups of ``rec_batch_size``, as RapidOCR/PaddleOCR do. Padding changes
      what the recognizer sees (its attention neck mixes in the padded columns), so only this strategy
      reproduces RapidOCR's text character for character.
    - ``"single"``: one crop per inference, padded to nothing but ``rec_min_width``.
    - ``"buckets"``: like ``"padded"``, but a batch is cut where the next crop would raise the padded
      share of the batch above ``rec_max_padding``.
    """
    order = sorted(range(len(ratios)), key=lambda i: ratios[i])
    if config.rec_batching == "single":
        return [[i] for i in order]
    if config.rec_batching == "padded":
        size = config.rec_batch_size
        return [order[start : start + size] for start in range(0, len(order), size)]
    floor = config.rec_min_width / config.rec_height
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else []
        grown = [*current, i]
        widths = [max(floor, ratios[j]) for j in grown]
        waste = 1.0 - sum(widths) / (len(grown) * max(widths))
        if current and len(current) < config.rec_batch_size and waste <= config.rec_max_padding:
            current.append(i)
        else:
            batches.append([i])
    return batches


def ctc_decode(scores: np.ndarray, characters: np.ndarray) -> list[tuple[str, float]]:
    """Greedy CTC: best class per timestep, repeats collapsed, blanks (class 0) dropped; the score is the
    mean probability of the kept timesteps (0 for an empty line), as PaddleOCR's CTCLabelDecode."""
    best = scores.argmax(axis=2)
    prob = np.take_along_axis(scores, best[:, :, None], axis=2)[:, :, 0]
    keep = best != 0
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    out = []
    for row in range(len(best)):
        sel = keep[row]
        text = "".join(characters[best[row, sel]])
        out.append((text, float(prob[row, sel].mean()) if sel.any() else 0.0))
    return out


# ---------------------------------------------------------------- direction

class TextClassifier:
    """The 0/180 degree line classifier: ``orient(crops)`` returns the crops with upside-down ones turned."""

    def __init__(self, backend: Any, *, config: "OcrConfig") -> None:
        self.backend = backend
        self.config = config
        spec_in, spec_out = _single_io(backend)
        if spec_in is None or spec_out.rank != 2 or spec_out.shape[1] != 2:
            raise TaskError(
                "the OCR direction classifier does not fit: expected one input [N,3,48,192] and one output [N,2] "
                f"(0 and 180 degree scores); found inputs {describe_outputs(backend.inputs)} and outputs "
                f"{describe_outputs(backend.outputs)}. Pass the cls model (e.g. ch_ppocr_mobile_v2.0_cls_infer.onnx) "
                "in the cls slot, or leave it out"
            )
        self._input = spec_in.name

    def orient(self, crops: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[bool]]:
        """(crops with the flipped ones rotated 180 degrees, which ones were flipped)."""
        cfg = self.config
        cv2 = _cv2()
        out, flipped = list(crops), [False] * len(crops)
        h, w = cfg.cls_size
        for start in range(0, len(crops), cfg.cls_batch_size):
            chunk = list(range(start, min(start + cfg.cls_batch_size, len(crops))))
            batch = line_batch([crops[i] for i in chunk], height=h, width=w, max_width=w)
            scores = np.asarray(next(iter(self.backend.infer({self._input: batch}).values())))
            for i, row in zip(chunk, scores):
                if int(row.argmax()) == 1 and float(row[1]) > cfg.cls_threshold:
                    out[i] = cv2.rotate(crops[i], cv2.ROTATE_180)
                    flipped[i] = True
        return out, flipped
