"""Where images come from: files, directories, globs, video files and live streams.

:func:`expand_inputs` turns what a user typed into an ordered list of :class:`Source`\\ s
(directories walked recursively in sorted order, image extensions only; globs expanded
and sorted; nothing dropped: a path that does not exist stays in the list and fails as
that image). :class:`VideoSource` decodes a video file or a camera/RTSP stream frame by
frame with cv2, yielding :class:`~trtkit.tasks.streaming.Frame`\\ s named ``clip.mp4#12``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from .._optional import require
from ..errors import TaskError
from .streaming import BadInput, Frame

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "Source", "BadInput", "expand_inputs", "VideoSource", "camera_target"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass(frozen=True)
class Source:
    """One input: ``kind`` is ``"image"`` (a file, read by the stream), ``"video"`` (decoded here)
    or ``"error"`` (a directory without images, a glob that matches nothing: ``message`` says why)."""

    kind: str
    path: str
    message: str = ""


def expand_inputs(inputs: Sequence[str]) -> list[Source]:
    """Files, directories (recursively: image and video extensions only) and globs, in the order given."""
    out: list[Source] = []
    for given in inputs:
        p = Path(given)
        if p.is_dir():
            found = _walk_media(p)
            out.extend(Source(_kind(f), f) for f in found)
            if not found:
                out.append(Source("error", given, f"directory {given!r} holds no image or video files "
                                                  f"({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})"))
        elif p.exists() or not glob.has_magic(given):
            out.append(Source(_kind(given), given))  # a missing file fails as that image, in its place
        else:
            matches = sorted(m for m in glob.glob(given, recursive=True) if Path(m).is_file())
            out.extend(Source(_kind(m), m) for m in matches)
            if not matches:
                out.append(Source("error", given, f"pattern {given!r} matches no files; check the path and quote it"))
    return out


def _kind(path: str) -> str:
    return "video" if Path(path).suffix.lower() in VIDEO_SUFFIXES else "image"


def _walk_media(root: Path) -> list[str]:
    found: list[str] = []
    for folder, _, files in os.walk(root):
        found.extend(os.path.join(folder, f) for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    return sorted(found, key=lambda f: Path(f).parts)  # path order, as `find | sort` lists them


def camera_target(stream: str) -> int | str:
    """``--stream`` value -> what cv2.VideoCapture opens: a camera index (``0``) or a URL/path."""
    return int(stream) if stream.isdigit() else stream


class VideoSource:
    """Frames of a video file or a camera/RTSP stream, decoded with cv2 (RGB).

    Owns the ``cv2.VideoCapture``; ``close()`` (or ``with``) releases it. ``fps``,
    ``size`` (width, height) and ``count`` (frames, 0 when unknown, e.g. a live stream)
    come from the container.
    """

    def __init__(self, target: int | str, *, name: str | None = None) -> None:
        cv2 = require("cv2", purpose="reading videos")
        self.name = name if name is not None else str(target)
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            what = "camera" if isinstance(target, int) else "video"
            raise TaskError(
                f"cannot open {what} {self.name!r} with OpenCV; check the path/URL (and that this OpenCV build "
                "has FFmpeg/GStreamer for that format or protocol)"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else 30.0
        self.count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.frames_read = 0

    def frames(self) -> Iterator[Frame]:
        """Decode frame after frame until the video ends (or the stream closes)."""
        cv2 = self._cv2
        while True:
            ok, bgr = self._cap.read()  # releases the GIL while it decodes
            if not ok:
                return
            index = self.frames_read
            self.frames_read += 1
            yield Frame(f"{self.name}#{index}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
