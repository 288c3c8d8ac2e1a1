"""Table 5's online stage 1 (``graft_core.stages.online``): every grafted layer's operator trained from one teacher
forward per batch, nothing stored. It is the captured stage 1's data (same pairs, timesteps, noise) through the same
training step, its per-layer folders load into the student, a killed run resumes to the uninterrupted result, and the
paper plan's online step fits the shipped profile where the per-layer captures did not."""
import dataclasses
import json

import pytest
import torch

from benchmark import resources, targets
from benchmark.launch import plan_targets
from benchmark.profiles import Profile
from benchmark.store import Store
from graft_core.grafting.plan import GraftPlan
from graft_core.stages import capture, distill, online
from graft_core.text_to_image import pixart

SAMPLER = {"scheduler": "ddim", "steps": 2, "guidance_scale": 4.5, "batch_size": 8}


@pytest.fixture(scope="module")
def setup(micro_preset, tmp_path_factory):
    """The micro PixArt teacher, 18 synthetic pairs (12 stage-1, 6 held out) and its engine preset."""
    root = tmp_path_factory.mktemp("online")
    cfg = pixart.pixart_config(micro_preset)
    folder = root / "teacher" / pixart.pixart_key(cfg, micro_preset.data)
    pixart.train_pixart(micro_preset, folder, progress=False)
    teacher = pixart.load_pixart_dir(folder)
    pixart.synthetic_shards(teacher, root / "pairs", num_pairs=18, shard_size=6, **SAMPLER)
    s1 = dataclasses.replace(micro_preset.stage1, epochs=6, batch_size=4, eval_every=2)
    preset = micro_preset.replace(teacher=cfg.diffusion(), stage1=s1)
    return {"teacher": teacher, "preset": preset, "cfg": cfg,
            "train": pixart.synthetic_subset(root / "pairs", 0, 12, teacher_id="micro"),
            "held": pixart.synthetic_subset(root / "pairs", 12, 18, teacher_id="micro")}


def run_online(setup, out, layers=(0, 1), **kwargs):
    p, cfg = setup["preset"], setup["cfg"]
    plan = GraftPlan(site="attn", operator="hyena_x", layers=tuple(layers))
    return online.distill_online(setup["teacher"], p, plan, stage1=p.stage1, train_data=setup["train"],
                                 heldout_data=setup["held"], dim=cfg.hidden_size, num_heads=cfg.num_attention_heads,
                                 seq_len=p.teacher.num_tokens, out_dir=out, seed=p.stage1.seed, device="cpu",
                                 **kwargs)


def layer_results(out, layers=(0, 1)):
    """Each layer's weights and metrics without the wall-clock fields."""
    got = {}
    for layer in layers:
        m = distill.read_metrics(online.layer_dir(out, layer))
        m = {k: v for k, v in m.items() if not k.startswith("seconds")}
        got[layer] = (distill.load_operator_state(online.layer_dir(out, layer)), m)
    return got


def test_online_stage1_lowers_every_layers_heldout_mse_and_loads_into_the_student(setup, tmp_path):
    from benchmark.families.pixart import FAMILY

    record = run_online(setup, tmp_path / "run")
    assert set(record["layers"]) == {"0", "1"}
    for layer in ("0", "1"):
        m = record["layers"][layer]
        assert m["val_mse"] < m["initial_val_mse"] and m["train_mse"] < m["initial_train_mse"], m
    plan = GraftPlan(site="attn", operator="hyena_x", layers=(0, 1))
    dirs = {layer: online.layer_dir(tmp_path / "run", layer) for layer in (0, 1)}
    student = FAMILY.build_student(setup["teacher"], plan.to_dict(), dirs)
    for layer in (0, 1):
        want = distill.load_operator_state(dirs[layer])
        got = student.transformer.transformer_blocks[layer].attn1.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert not list((tmp_path / "run").rglob("*.npy"))  # nothing captured on disk
    assert run_online(setup, tmp_path / "run") == record  # a finished run is read back, not retrained


def test_online_feed_is_the_captured_stage1_data(setup, tmp_path):
    """Layer 0 alone (its per-layer batch order, seed + 0, is the online order): the online run ends with the
    weights and MSEs of ``distill_layer`` on an fp32 capture of the same pairs — the same data, the same step."""
    p, cfg = setup["preset"], setup["cfg"]
    run_online(setup, tmp_path / "online", layers=(0,))
    folders = [capture.capture_activations(setup["teacher"], p, split=split, data=data, pairs=[(0, "attn")],
                                           root=tmp_path / "cap", dtype="float32", device="cpu", batch_size=4)
               for split, data in (("stage1", setup["train"]), ("heldout", setup["held"]))]
    distill.distill_layer(*folders, layer=0, site="attn", operator="hyena_x", options={}, stage1=p.stage1,
                          dim=cfg.hidden_size, num_heads=cfg.num_attention_heads, seq_len=p.teacher.num_tokens,
                          out_dir=tmp_path / "captured", device="cpu")
    on, cap = distill.read_metrics(online.layer_dir(tmp_path / "online", 0)), distill.read_metrics(tmp_path / "captured")
    for key in ("train_mse", "val_mse", "initial_val_mse", "target_var"):
        assert on[key] == pytest.approx(cap[key], rel=1e-4), key
    assert on["best_epoch"] == cap["best_epoch"]
    want = distill.load_operator_state(tmp_path / "captured")
    got = distill.load_operator_state(online.layer_dir(tmp_path / "online", 0))
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-4, rtol=1e-4)


def test_killed_online_stage1_resumes_to_the_uninterrupted_result(setup, tmp_path, monkeypatch):
    """A run that dies right after its 4th checkpoint (mid-epoch: 3 steps per epoch, one every 2 steps) and is started
    again ends with the same operators and metrics as a run that was never interrupted; so does accumulation of two
    micro-batches per step up to float rounding (an execution setting)."""
    uninterrupted = run_online(setup, tmp_path / "whole", checkpoint_every=2)
    want = layer_results(tmp_path / "whole")
    calls = []
    write = online.write_checkpoint

    def dying(out_dir, step, state, **kw):
        write(out_dir, step, state, **kw)
        calls.append(step)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed after a checkpoint")

    monkeypatch.setattr(online, "write_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        run_online(setup, tmp_path / "killed", checkpoint_every=2)
    assert calls == [2, 4, 6, 8] and not (online.layer_dir(tmp_path / "killed", 0) / distill.METRICS_FILE).exists()
    monkeypatch.setattr(online, "write_checkpoint", write)
    resumed = run_online(setup, tmp_path / "killed", checkpoint_every=2)
    got = layer_results(tmp_path / "killed")
    for layer in (0, 1):
        assert got[layer][1] == want[layer][1]
        assert all(torch.equal(got[layer][0][k], want[layer][0][k]) for k in want[layer][0])
    assert resumed["val_mse"] == uninterrupted["val_mse"]
    run_online(setup, tmp_path / "micro", accumulation=2)
    micro = layer_results(tmp_path / "micro")
    for layer in (0, 1):
        assert micro[layer][1]["val_mse"] == pytest.approx(want[layer][1]["val_mse"], rel=1e-3)


def table5_nodes(tmp_path, preset):
    (tp,) = plan_targets(Store(tmp_path, preset), targets.expand(["table5"]))
    return [n for rp in tp.row_plans for n in rp.nodes]


@pytest.mark.parametrize("preset", ["micro", "tiny", "paper-smoke", "paper"])
def test_table5_plans_one_online_stage1_and_no_capture(tmp_path, preset):
    nodes = table5_nodes(tmp_path, preset)
    kinds = {n.kind for n in nodes}
    assert "stage1_online" in kinds and not kinds & {"capture", "stage1"}
    (s1,) = {n.key: n for n in nodes if n.kind == "stage1_online"}.values()
    for n in nodes:
        init = (n.config.get("init") or n.config.get("model", {}).get("init"))
        if isinstance(init, dict):
            assert init == {"stage1_online": s1.run_id, "layers": list(s1.config["plan"]["layers"])}


def test_paper_online_stage1_fits_the_shipped_profile_and_a_smaller_gpu_gets_smaller_micro_batches(tmp_path):
    nodes = table5_nodes(tmp_path, "paper")
    node = next(n for n in nodes if n.kind == "stage1_online")
    profile = Profile.load("paper")
    fit = resources.step_fit(node, profile, lambda n: 0)
    assert fit.fits and fit.resumable and fit.gpus == 1, fit
    assert fit.est_gpu_mem_gb <= 80 and fit.est_hours <= fit.timeout_hours * (1 + 8) and fit.est_disk_gb < 10
    assert fit.est_hours > fit.timeout_hours  # needs requeues: it checkpoints
    small = resources.step_fit(node, Profile.load("paper", ["stage1_online.gpu_mem_gb=40"]), lambda n: 0)
    assert small.fits and small.settings["grad_accumulation"] > fit.settings.get("grad_accumulation", 1)
    assert small.est_gpu_mem_gb <= 40 < fit.est_gpu_mem_gb
    # the per-layer capture path it replaces: 14 layers × ~604 GB of fp16 pairs per split
    c = node.config
    w, n, _ = resources._dims(c)
    assert 2 * 8000 * n * w * 2 / 1e9 == pytest.approx(604, rel=0.01)
    assert json.dumps(fit.to_dict())
