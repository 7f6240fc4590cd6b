"""Input expansion (files, directories, globs) and video decoding with cv2."""

from __future__ import annotations

import pytest

from trtkit.errors import TaskError
from trtkit.tasks.sources import VideoSource, camera_target, expand_inputs

cv2 = pytest.importorskip("cv2")


def test_directories_recurse_sorted_images_and_videos_globs_and_missing_kept_in_place(tmp_path):
    (tmp_path / "d" / "b").mkdir(parents=True)
    (tmp_path / "d" / "a").mkdir()
    for name in ("d/z.jpg", "d/b/x.PNG", "d/a/y.webp", "d/notes.txt", "d/a/v.mp4", "clip.mp4", "g1.jpg", "g2.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    got = expand_inputs([
        str(tmp_path / "d"), str(tmp_path / "g*.jpg"), str(tmp_path / "missing.jpg"), str(tmp_path / "clip.mp4"),
        str(tmp_path / "none*.png"), str(tmp_path / "empty"),
    ])
    rel = [(s.kind, s.path.replace(str(tmp_path) + "/", "")) for s in got]
    assert rel == [
        # sorted walk, .txt skipped; a video in a directory is not dropped (review finding)
        ("video", "d/a/v.mp4"), ("image", "d/a/y.webp"), ("image", "d/b/x.PNG"), ("image", "d/z.jpg"),
        ("image", "g1.jpg"), ("image", "g2.jpg"),
        ("image", "missing.jpg"),  # kept: it fails as that image
        ("video", "clip.mp4"),
        ("error", "none*.png"), ("error", "empty"),
    ]
    assert "matches no files" in got[8].message and "no image or video files" in got[9].message


def test_video_frames_are_rgb_named_and_counted(assets, tmp_path):
    bgr = cv2.resize(cv2.imread(str(assets / "images" / "astronaut.png")), (160, 128))
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12, (160, 128))
    for _ in range(7):
        writer.write(bgr)
    writer.release()
    with VideoSource(str(path)) as video:
        frames = list(video.frames())
        assert video.count == 7 and video.fps == pytest.approx(12) and video.size == (160, 128)
    assert [f.source for f in frames] == [f"{path}#{i}" for i in range(7)]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(int)
    assert abs(frames[0].image.astype(int) - rgb).mean() < 6  # MJPG is lossy; channels are RGB, not BGR


def test_unopenable_video_and_camera_target(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(TaskError, match="cannot open video"):
        VideoSource(str(bad))
    assert camera_target("0") == 0 and camera_target("rtsp://cam/1") == "rtsp://cam/1"
