"""Bad input ends in one clear line and the right exit code (issue: faults and bad input). Each case runs in seconds."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr, p.stderr
    assert len(lines) == 1 or lines[-1].startswith("python -m"), p.stderr  # argparse: usage line + error line
    return lines[-1]


def test_tables_build_refuses_a_missing_results_folder(tmp_path):
    p = cli("-m", "tables.build", "--results", str(tmp_path / "nope"))
    assert p.returncode == 2 and "is not a folder" in one_error_line(p)


def test_tables_build_refuses_an_unknown_preset(tmp_path):
    p = cli("-m", "tables.build", "--results", str(tmp_path), "--preset", "nosuch")
    assert p.returncode == 2 and "unknown preset 'nosuch'" in one_error_line(p)


@pytest.mark.parametrize("jobs", ["-3", "0", "two"])
def test_driver_refuses_a_bad_jobs_count(jobs):
    p = cli("-m", "benchmark.run", "table3", "--jobs", jobs, "--dry-run")
    assert p.returncode == 2 and "--jobs: expected an integer >= 1" in one_error_line(p)


def test_teacher_cli_refuses_an_unknown_preset():
    p = cli("-m", "graft_core.teacher", "--preset", "nosuch")
    assert p.returncode == 2 and "unknown preset 'nosuch'" in one_error_line(p)


def test_a_truncated_classifier_record_names_its_file(tmp_path):
    from graft_core.metrics.classifier import META_FILE, read_meta

    (tmp_path / META_FILE).write_text('{"sha256": "ab')
    with pytest.raises(ValueError, match=f"{META_FILE} is not valid JSON.*delete .* to retrain"):
        read_meta(tmp_path)
