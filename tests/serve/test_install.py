"""`trtkit serve` on a machine without the tritonserver binary: one line that gives the exact install command.
Runs whether or not the binary is installed here (the test hides it)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import trtkit
from tests.conftest import asset_model
from trtkit.serve.server import INSTALL_COMMAND, INSTALL_HINT


def test_cli_serve_without_the_binary_says_the_install_command(tmp_path):
    """A machine with `pip install 'trtkit[serve]'` but not the binary: this environment's packages minus the
    nvidia-pytriton wheel (a view of site-packages without it, python -S), no tritonserver on PATH."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = tmp_path / "site-packages"
    view.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("pytriton", "nvidia_pytriton")):
            (view / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k != "TRTKIT_TRITONSERVER"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(trtkit.__file__).parents[1]), str(view)])
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not (Path(p) / "tritonserver").exists())
    done = subprocess.run([sys.executable, "-S", "-m", "trtkit", "serve", str(asset_model("efficientnet_lite0"))],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == "", done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: trtkit serve needs a tritonserver binary"), done.stderr
    assert lines[0].endswith(f"install it with: {INSTALL_HINT}") and INSTALL_COMMAND in INSTALL_HINT
