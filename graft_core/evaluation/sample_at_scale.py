"""Sharded, resumable class-conditional sampling → an ADM-compatible ``.npz`` (paper §3.3: 50k, 250 DDPM, cfg 1.5).

The N samples are cut into shards of ``shard_size``; worker ``rank`` of ``world_size`` draws the shards
``s ≡ rank (mod world_size)``. Each shard is saved as its own ``shards/samples_XXXXX.npz`` (``arr_0`` uint8
``[n, H, W, 3]``, ``arr_1`` labels) followed by a ``DONE_XXXXX.json`` marker, so a killed job resumes shard by shard.
When every shard is done, :func:`merge_shards` streams them into ``samples.npz`` (``arr_0`` ``[N, H, W, 3]`` uint8,
``arr_1`` int64 labels) — the layout ``guided-diffusion/evaluations/evaluator.py`` reads.

Seeding (differs from the official ``sample_ddp.py`` on purpose): the official script seeds each GPU with
``global_seed·world_size + rank`` and draws labels on the fly, so its 50k images change with the number of GPUs.
Here the labels of all N samples are drawn once from ``global_seed`` (i.i.d. uniform, as ADM/DiT), and shard ``s``
draws its noise from ``shard_seed(global_seed, s) = global_seed·10⁶ + s·10³`` (batch ``i`` of the shard uses
``+ i``, see :func:`graft_core.evaluation.sampler.sample`). The merged ``.npz`` is therefore the same for 1 GPU, 8 GPUs or a
Slurm array of any size, and a resumed shard reproduces the lost one.

Workers are the ``rank``/``world_size`` parameters (``--shard-index``/``--num-shards``), by default the process's
``torch.distributed`` rank (``torchrun``: RANK/WORLD_SIZE, one GPU per LOCAL_RANK). A Slurm array runs
``python -m benchmark.prepare samples`` (the same options), which passes the array task as the shard.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from graft_core.config import stable_hash
from graft_core.data.decoder import decode_batches, vae_decoder
from graft_core.runtime.distributed import default_device, env_info, init_from_env
from graft_core.errors import MissingWeightsError
from graft_core.data.imagenet import LATENT_SCALE, load_vae, module_digest
from graft_core.runtime.paths import atomic_write_bytes
from graft_core.presets import TeacherConfig, get_preset
from graft_core.evaluation.sampler import make_labels, sample
from graft_core.data.decoder import to_uint8
from graft_core.runtime.shards import ShardArray, check_settings, spaced_seed

MERGED = "samples.npz"


shard_seed = spaced_seed  # the noise seed of one shard (batch i: + i)


def sharded_pairing(preset, merged) -> dict:
    """What makes two sharded evaluations draw the same samples (``graft_core.metrics.paired``): labels from
    ``global_seed`` over all N, shard ``s``'s noise from ``shard_seed(global_seed, s)`` + batch index, so seed, shard
    size, batch size, labels and sampler settings must match (the in-process path is a different ``path``)."""
    import numpy as np

    from graft_core.metrics.paired import labels_digest

    ev = preset.eval
    with np.load(merged) as z:
        labels = z["arr_1"]
    return {"path": "sharded", "noise": "per shard: seed*10^6 + shard*10^3 + batch index", "seed": int(ev.seed),
            "shard_size": ev.shard_size, "batch_size": ev.batch_size, "num_samples": int(len(labels)),
            "labels": labels_digest(labels), "scheduler": ev.scheduler, "steps": ev.steps,
            "guidance_scale": ev.guidance_scale, "guidance_channels": ev.guidance_channels, "bf16": ev.bf16,
            "reference": "adm reference batch"}


def shard_paths(out_dir: Path, s: int) -> tuple[Path, Path]:
    d = Path(out_dir) / "shards"
    return d / f"samples_{s:05d}.npz", d / f"DONE_{s:05d}.json"


def shard_array(out_dir: Path, num_samples: int, shard_size: int) -> ShardArray:
    return ShardArray(num_samples, shard_size, lambda s: shard_paths(out_dir, s)[1])


def decode_latents(vae, latents: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """``vae.decode(z / 0.18215)`` in batches → uint8 ``[N, H, W, 3]``; with ``vae=None`` the samples are pixels
    (one channel repeated to RGB, the ADM layout)."""
    images = to_uint8(decode_batches(vae_decoder(vae, scale=LATENT_SCALE) if vae is not None else None, latents,
                                     batch_size))
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def sampling_plan(teacher: TeacherConfig, *, num_samples: int, shard_size: int, steps: int, guidance_scale: float,
                  scheduler: str, global_seed: int, batch_size: int, label_mode: str, model_key: str = "",
                  vae_key: str = "", guidance_channels: int | None = None) -> dict:
    """Everything that fixes the merged ``.npz`` (saved as ``plan.json``; a rerun with another plan is refused)."""
    if -(-shard_size // batch_size) >= 1000:
        raise ValueError(f"shard_size {shard_size} / batch_size {batch_size} gives ≥ 1000 batches per shard")
    return {"num_samples": num_samples, "shard_size": shard_size, "steps": steps, "guidance_scale": guidance_scale,
            "scheduler": scheduler, "global_seed": global_seed, "batch_size": batch_size, "label_mode": label_mode,
            "num_classes": teacher.num_classes, "seeding": "labels from global_seed; noise shard_seed(global_seed, s)",
            "model": model_key, "vae": vae_key, "guidance_channels": guidance_channels}


def sample_shards(model, teacher: TeacherConfig, out_dir: Path, *, vae=None, num_samples: int = 50_000,
                  shard_size: int = 1_000, steps: int = 250, guidance_scale: float = 1.5, scheduler: str = "ddpm",
                  global_seed: int = 0, batch_size: int = 64, label_mode: str = "uniform", rank: int | None = None,
                  world_size: int | None = None, bf16: bool = False, progress: bool = True,
                  model_key: str | None = None, guidance_channels: int | None = None) -> dict:
    """Sample and decode this worker's shards that have no DONE marker; returns ``{"sampled", "skipped", ...}``.

    ``rank``/``world_size`` default to the ``torch.distributed`` environment (RANK/WORLD_SIZE, else 0/1).
    ``model_key`` names the model in ``plan.json`` (default: a digest of its weights), so that another model is
    never resumed into the same folder.
    """
    info = env_info()
    rank = info.rank if rank is None else rank
    world_size = info.world_size if world_size is None else world_size
    out_dir = Path(out_dir)
    array = shard_array(out_dir, num_samples, shard_size)
    todo, skipped = array.todo(rank, world_size)
    plan = sampling_plan(teacher, num_samples=num_samples, shard_size=shard_size, steps=steps,
                         guidance_scale=guidance_scale, scheduler=scheduler, global_seed=global_seed,
                         batch_size=batch_size, label_mode=label_mode, guidance_channels=guidance_channels,
                         model_key=model_key or module_digest(model), vae_key=module_digest(vae) if vae else "")
    check_settings(out_dir / "plan.json", plan, what="samples")
    labels = make_labels(num_samples, teacher.num_classes, label_mode, seed=global_seed)
    sampled, start = [], time.time()
    for s in todo:
        t0 = time.time()
        lo, hi = array.bounds(s)
        y = labels[lo:hi]
        latents = sample(model, y, teacher=teacher, scheduler=scheduler, steps=steps, guidance_scale=guidance_scale,
                         seed=shard_seed(global_seed, s), batch_size=batch_size, bf16=bf16, progress=progress,
                         guidance_channels=guidance_channels)
        images = decode_latents(vae, latents)
        atomic_write_bytes(shard_paths(out_dir, s)[0], npz_bytes(arr_0=images, arr_1=y.numpy()))
        array.mark_done(s, {"shard": s, "count": len(y), "seed": shard_seed(global_seed, s),
                            "seconds": round(time.time() - t0, 2)})
        sampled.append(s)
    return {"out_dir": str(out_dir), "plan_key": stable_hash(plan), "num_shards": array.num_shards,
            "sampled": sampled, "skipped": skipped, "seconds": round(time.time() - start, 2)}


def missing_shards(out_dir: Path) -> list[int]:
    plan = json.loads((Path(out_dir) / "plan.json").read_text())
    return shard_array(out_dir, plan["num_samples"], plan["shard_size"]).missing()


def merge_shards(out_dir: Path) -> Path:
    """Stream every shard into ``out_dir/samples.npz`` without holding the 50k images (9.8 GB) in memory."""
    out_dir = Path(out_dir)
    missing = missing_shards(out_dir)
    if missing:
        raise FileNotFoundError(f"{out_dir}: shards {missing[:8]} are not done; rerun the sampling (it resumes)")
    plan = json.loads((out_dir / "plan.json").read_text())
    n = plan["num_samples"]
    paths = [shard_paths(out_dir, s)[0] for s in range(shard_array(out_dir, n, plan["shard_size"]).num_shards)]
    with np.load(paths[0]) as z:
        image_shape = z["arr_0"].shape[1:]
    dest = out_dir / MERGED
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, shape, dtype in (("arr_0", (n, *image_shape), np.dtype(np.uint8)),
                                      ("arr_1", (n,), np.dtype(np.int64))):
                written = 0
                with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_2_0(
                        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
                    for path in paths:
                        with np.load(path) as z:
                            part = np.ascontiguousarray(z[key], dtype=dtype)
                        if part.shape[1:] != shape[1:]:
                            raise ValueError(f"{path}: {key} has shape {part.shape}, expected [*, {shape[1:]}]")
                        f.write(part.tobytes())
                        written += len(part)
                if written != n:
                    raise ValueError(f"{out_dir}: the shards hold {written} samples, the plan {n}")
        with open(tmp, "rb") as f:  # streamed (too large for paths.atomic_write_bytes) but made durable the same way
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def sample_to_npz(model, teacher: TeacherConfig, out_dir: Path, **kwargs) -> Path | None:
    """:func:`sample_shards`, then (after a barrier when torch.distributed runs) rank 0 merges once all are done.

    Returns the merged path, or None on a worker that did not merge (other shards still missing, or rank > 0).
    """
    import torch.distributed as dist

    report = sample_shards(model, teacher, out_dir, **kwargs)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        if dist.get_rank() != 0:
            return None
    if missing_shards(out_dir):
        return None
    merged = Path(out_dir) / MERGED
    return merged if merged.exists() and not report["sampled"] else merge_shards(out_dir)


def npz_bytes(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Sharded, resumable sampling of a DiT → ADM .npz (paper §3.3).")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="paper")
    p.add_argument("--model", type=Path, help="a diffusers DiT folder (default: the preset's pretrained teacher)")
    p.add_argument("--vae", help="local SD-VAE folder (default: stabilityai/sd-vae-ft-ema from the HF cache)")
    p.add_argument("--num-samples", type=int)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-index", type=int, help="this worker (default: RANK, else 0)")
    p.add_argument("--num-shards", type=int, help="number of workers (default: WORLD_SIZE, else 1)")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="TF32 matmuls on Ampere+/Hopper GPUs (default on, as DiT's sample_ddp.py)")
    return p


def run(args: argparse.Namespace) -> Path | None:
    """Sample this worker's shards as ``args`` say; the merged ``.npz`` once every shard is done, else None.

    Raises ``MissingWeightsError`` when the model or the VAE is not available locally."""
    from graft_core.models.teacher import load_pretrained  # diffusers: seconds to import

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    preset = get_preset(args.preset)
    device = default_device(init_from_env())
    if args.model:
        from diffusers import DiTTransformer2DModel

        model = DiTTransformer2DModel.from_pretrained(args.model).eval()
    else:
        model = load_pretrained(preset.teacher)
    vae = load_vae(args.vae, device=device) if preset.data.name == "imagenet" else None
    ev = preset.eval
    return sample_to_npz(model.to(device), preset.teacher, args.out, vae=vae,
                         num_samples=args.num_samples or ev.num_samples, shard_size=args.shard_size,
                         steps=ev.steps, guidance_scale=ev.guidance_scale, scheduler=ev.scheduler,
                         global_seed=args.seed, batch_size=args.batch_size or ev.batch_size, label_mode=ev.label_mode,
                         rank=args.shard_index, world_size=args.num_shards, bf16=ev.bf16,
                         guidance_channels=ev.guidance_channels)


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        path = run(args)
    except MissingWeightsError as err:
        p.exit(2, f"error: {err}\n")
    print(path or f"shards written; missing: {missing_shards(args.out)}")


if __name__ == "__main__":
    main()
