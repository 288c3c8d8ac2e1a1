"""Under CI=true a skip is a failure unless it is for a missing GPU (tests/conftest.py), and markers are strict."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = '''
import pytest

def test_no_tex():
    pytest.skip("pdflatex not installed")

@pytest.mark.skipif(True, reason="needs a CUDA GPU")
def test_gpu():
    pass

def test_runs():
    assert True
'''


def run_pytest(folder: Path, ci: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", *args, str(folder)],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=300)


def test_only_gpu_skips_survive_ci(tmp_path):
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    local = run_pytest(tmp_path, None)
    assert local.returncode == 0 and "1 passed, 2 skipped" in local.stdout, local.stdout
    ci = run_pytest(tmp_path, "true")
    assert ci.returncode == 1, ci.stdout
    assert "1 failed, 1 passed, 1 skipped" in ci.stdout, ci.stdout
    assert "only GPU skips are allowed" in ci.stdout and "pdflatex not installed" in ci.stdout
    assert "SKIPPED" in ci.stdout and "needs a CUDA GPU" in ci.stdout  # the GPU skip is named in the summary


def test_markers_are_strict():
    import tomllib

    opts = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in opts["addopts"].split()
    assert {m.split(":")[0] for m in opts["markers"]} >= {"slow", "slurm", "latex"}


def test_hugging_face_cache_is_isolated():
    """No test can read or write the user's Hugging Face cache (tests/conftest.py sets HF_HOME before any import)."""
    import tempfile

    from huggingface_hub import constants

    home = Path(os.environ["HF_HOME"])
    assert home.is_relative_to(tempfile.gettempdir()) and home.name.startswith("graftbench-test-hf-home-")
    assert Path(constants.HF_HUB_CACHE).is_relative_to(home)
