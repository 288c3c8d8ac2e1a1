"""A new operator in one file: ``tests/plugins/my_op.py`` registers ``my_op`` and is enough to plan, run and tabulate
its Table-3 rows with their FLOP/parameter columns.

Everything runs in subprocesses, as a user would run it, so that the plugin's registration never leaks into the
other tests' registry (their tables would gain three rows); the row's steps run in a job process of the ``local``
executor, which learns the plugin from the environment the driver gives it. About 45 s on an idle 2-core machine.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "plugins" / "my_op.py"
ROWS = ("attn-my_op-interleaved50", "attn-my_op-interleaved75", "attn-my_op-full")


def run(*args, env=None, check=True):
    """``python *args`` in the repository; the plugin variable is only what ``env`` gives (never inherited)."""
    full = {k: v for k, v in os.environ.items() if k != "GRAFTBENCH_PLUGINS"}
    full.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **(env or {}))
    out = subprocess.run([sys.executable, *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_one_file_operator_plans_runs_and_tabulates(tmp_path):
    results = tmp_path / "results"
    base = ["-m", "benchmark.run", "table3", "--preset", "micro", "--plugin", str(PLUGIN), "--results-dir",
            str(results), "--quiet"]
    dry = run(*base, "--rows", "attn-my_op-*", "--dry-run").stdout
    assert all(rid in dry for rid in ROWS), dry
    assert "attn-hyena_x" not in dry  # --rows selects the plugin's rows only

    row = "attn-my_op-interleaved50"
    run(*base, "--rows", row, "--executor", "local")  # stage 1, stage 2 and eval run in a submitit job process
    summary = json.loads((results / "micro" / "table3" / "summary.json").read_text())
    rows = {r["row"]: r for r in summary["rows"]}
    assert [r["row"] for r in summary["rows"] if "my_op" in r["row"]] == list(ROWS)  # after the paper's MHA rows
    done = rows[row]
    assert done["status"] == "done" and done["label"] == "Conv mixer (K=3), 50 %" and done["operator"] == "my_op"
    assert done["metrics"]["fid"] is not None
    eff = done["efficiency"]
    assert eff["d_flops_op"] < 0 and eff["d_flops_ft"] < 0 and eff["d_param"] < 0  # from the plugin's formula
    assert done["extra"]["flops_source"] == "tests/plugins/my_op.py"

    # the job process knew my_op only through $GRAFTBENCH_PLUGINS, which the driver set for it; without it, the
    # plan of the row's stage-2 run (rebuilt from its config.json, as the job does) fails with a clear error
    (stage2,) = (results / "micro" / "runs" / "stage2").iterdir()
    assert json.loads((stage2 / "environment.json").read_text())["job"]["cluster"] == "local"
    code = ("import json, sys; from graft_core.grafting.plan import GraftPlan; "
            "GraftPlan.from_dict(json.load(open(sys.argv[1]))['config']['plan'])")
    alone = run("-c", code, str(stage2 / "config.json"), check=False)
    assert alone.returncode != 0 and "unknown operator 'my_op'" in alone.stderr
    run("-c", code, str(stage2 / "config.json"), env={"GRAFTBENCH_PLUGINS": str(PLUGIN)})

    run("-m", "tables.build", "--results", str(results), "--preset", "micro", "--target", "table3",
        "--plugin", str(PLUGIN), "--git-rev", "test")
    tex = (results / "micro" / "tables" / "table3.tex").read_text()
    line = next(line for line in tex.splitlines() if "Conv mixer ($K$=3)" in line)
    cells = [re.sub(r"\\textbf\{(.*)\}", r"\1", c.strip()) for c in line.rstrip(" \\").split("&")]
    assert cells[1:3] == ["50\\%", "ours"]
    assert cells[-3:] == [f"$-${abs(eff[k]):.2f}" for k in ("d_flops_op", "d_flops_ft", "d_param")]
    assert "\\textit{Other}" not in tex  # registry rows, not rows "not in the registry"


def test_entry_point_registers_the_operator(tmp_path):
    """An installed package names its operator modules in the ``graftbench.operators`` entry-point group."""
    dist = tmp_path / "myops-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myops\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[graftbench.operators]\nmy_op = my_op\n")
    path = os.pathsep.join([str(tmp_path), str(PLUGIN.parent), os.environ.get("PYTHONPATH", "")])
    code = ("from benchmark.targets import table3; "
            "print(','.join(r.id for r in table3.rows('micro') if 'my_op' in r.id))")
    out = run("-c", code, env={"PYTHONPATH": path}).stdout.strip()
    assert out.split(",") == list(ROWS)
