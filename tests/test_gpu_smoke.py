"""benchmarks/gpu_smoke.py: its phases run end to end at reduced widths on a CPU (what a lent GPU runs at the
paper's), each phase is judged by the device it recorded using, and the JSON is on disk after every measurement."""
import json

import pytest
import torch

from benchmarks import gpu_smoke


def test_quick_smoke_runs_every_measuring_phase_on_the_cpu(tmp_path):
    out = tmp_path / "smoke.json"
    assert gpu_smoke.main(["--quick", "--allow-cpu", "--phases", "environment", "nccl", "probes", "stage2", "table6",
                           "sampling", "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["passed"] is True and record["quick"] is True
    recs = record["records"]
    assert all(r["ok"] for r in recs)
    by = {}
    for r in recs:
        by.setdefault(r["phase"], []).append(r)
    assert by["nccl"][0]["skipped"] and by["environment"][0]["torch"] == torch.__version__
    # every point of both blocks in fp32 and bf16, each on the device it says, with its bytes and time
    q = gpu_smoke.QUICK
    want = {("dit_block", b, n, d) for b, n in q.dit_points for d in ("fp32", "bf16")}
    want |= {("pixart_block", b, n, d) for b, n in q.pixart_points for d in ("fp32", "bf16")}
    assert {(r["probe"], r["batch"], r["tokens"], r["dtype"]) for r in by["probes"]} == want
    assert all(r["device"] == "cpu" and r["saved_bytes"] > 0 and r["seconds_per_step"] > 0 for r in by["probes"])
    saved = {(r["probe"], r["batch"], r["tokens"], r["dtype"]): r["saved_bytes"] for r in by["probes"]}
    b, n = q.pixart_points[-1]
    assert saved[("pixart_block", b, n, "bf16")] < saved[("pixart_block", b, n, "fp32")]  # bf16 keeps fewer bytes
    assert saved[("pixart_block", b, n, "fp32")] > saved[("pixart_block", *q.pixart_points[0], "fp32")]
    # stage 2 through the real Finetune: three variants, finite losses, grafted operators change the trainable count
    s2 = {r["variant"]: r for r in by["stage2"]}
    assert set(s2) == set(gpu_smoke.STAGE2_VARIANTS)
    assert all(r["fits"] and r["device"] == "cpu" and 0 < r["final_loss"] < 10 for r in s2.values())
    assert len({r["trainable_params"] for r in s2.values()}) == 3
    assert [r["tf32"] for r in by["table6"]] == [False, False]  # no TF32 on a CPU
    assert all(r["within_tolerance"] and r["fused_max_abs_diff"] < 1e-3 for r in by["table6"])
    assert [r["sampling_precision"] for r in by["sampling"]] == ["bf16", "fp32"]
    assert all(r["finite"] for r in by["sampling"])


def test_a_phase_is_judged_by_the_device_it_used():
    judge = gpu_smoke.judge
    assert judge({"phase": "probes", "device": "cuda:0", "peak_gpu_bytes": 10}, allow_cpu=False)["ok"]
    cpu = judge({"phase": "probes", "device": "cpu", "peak_gpu_bytes": 0}, allow_cpu=False)
    assert not cpu["ok"] and "not the GPU" in cpu["error"]
    assert not judge({"phase": "probes", "device": "cuda:0", "peak_gpu_bytes": 0}, allow_cpu=False)["ok"]
    assert judge({"phase": "probes", "device": "cpu", "peak_gpu_bytes": 0}, allow_cpu=True)["ok"]
    # a rehearsal run: the device step_lines read from its records; one not handed a GPU is not judged by it
    assert not judge({"step": "stage2/a", "device": "cpu", "gpu_required": True}, allow_cpu=False)["ok"]
    assert judge({"step": "collect/a", "device": "cpu", "gpu_required": False}, allow_cpu=False)["ok"]
    # an out-of-memory is a failed line: the paper profile's batch would fail the same way
    assert not judge({"phase": "stage2", "device": "cuda:0", "peak_gpu_bytes": 9, "fits": False,
                      "error": "OutOfMemoryError"}, allow_cpu=False)["ok"]


def test_step_lines_read_every_phase_device_a_run_recorded(tmp_path):
    """A sample run whose metrics say it sampled on the CPU ran on the CPU, even with GPU memory allocated."""
    for rid, device in (("a", "cuda:0"), ("b", "cpu")):
        run = tmp_path / "paper-smoke" / "runs" / "sample" / rid
        run.mkdir(parents=True)
        (run / "status.json").write_text(json.dumps({"state": "done"}))
        (run / "metrics.json").write_text(json.dumps({"device": device, "sampling_precision": "tf32"}))
        (run / "environment.json").write_text(json.dumps({"cuda_visible_devices": "0", "device": {
            "cuda": True, "name": "NVIDIA H100", "cuda_peak_bytes": 2_000_000_000}}))
    lines = {r["step"]: r for r in gpu_smoke.step_lines(tmp_path)}
    assert lines["sample/a"]["device"] == "NVIDIA H100" and lines["sample/a"]["phases"] == {"device": "cuda:0"}
    assert lines["sample/b"]["device"] == "cpu" and lines["sample/b"]["given_gpu"] is True
    assert gpu_smoke.recorded_devices({"capture": {"device": "cuda:0"}, "x": [1]}) == {"capture.device": "cuda:0"}


def test_the_json_is_on_disk_after_every_measurement(tmp_path, monkeypatch):
    """A smoke stopped at its time limit still returns what it measured: the record is written before the next
    measurement starts, and a phase that raises is one failed line, the next phase still runs."""
    out = tmp_path / "smoke.json"
    seen = []

    def measuring(smoke):
        yield {"device": "cpu", "value": 1}
        seen.append([r.get("value") for r in json.loads(out.read_text())["records"]])
        raise RuntimeError("cut short")

    monkeypatch.setitem(gpu_smoke.PHASES, "probes", measuring)
    assert gpu_smoke.main(["--quick", "--allow-cpu", "--phases", "probes", "environment", "--out", str(out)]) == 1
    assert seen == [[1]]
    recs = json.loads(out.read_text())["records"]
    assert [(r["phase"], r["ok"]) for r in recs] == [("probes", True), ("probes", False), ("environment", True)]
    assert "cut short" in recs[1]["error"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_without_a_gpu_it_stops_with_one_line(tmp_path, capsys):
    assert gpu_smoke.main(["--out", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--allow-cpu" in err and len(err.splitlines()) == 1
