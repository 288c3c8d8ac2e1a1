"""Paper-preset data preparation (docs/data-preparation.md).

    python -m benchmark.prepare imagenet --src /data/imagenet/train [--out DIR] [--shard-size 10000]
                                         [--num-shards K --shard-index I]   # default: the Slurm array task
    python -m benchmark.prepare imagenet --src /data/imagenet/val --split val     # held-out 8/class (stage-1 val)
    python -m benchmark.prepare subsets [--out DIR] [--src PATH]              # stage-1 + stage-2 lists, hashed
    python -m benchmark.prepare reference --npz VIRTUAL_imagenet256_labeled.npz   # check it, cache its features,
                                                                                  # record it for the evals
    python -m benchmark.prepare samples --out DIR [--preset paper] [...]      # graft_core.evaluation.sample_at_scale's options

Under a Slurm array, ``imagenet`` and ``samples`` take the array task as their shard (``SLURM_ARRAY_TASK_ID`` minus
``SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``) unless ``--shard-index/--num-shards`` say otherwise; outside
one, ``imagenet`` falls back to ``RANK``/``WORLD_SIZE`` and ``samples`` to torch.distributed's rank. The engine
takes the shard as plain parameters: reading the scheduler is this CLI's job.

Every command is idempotent: finished shards (DONE marker) are skipped, subset lists are rewritten identically, the
reference features are computed once per (file sha256, extractor). A user error (missing weights, wrong folder
layout, a reference batch of the wrong shape, an output folder made with other settings) prints one line and exits 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from benchmark.hints import with_hint
from graft_core.evaluation.adm_eval import prepare_reference
from graft_core.errors import BatchFormatError, DataLayoutError, MissingWeightsError, SettingsMismatch
from graft_core.data.imagenet import (VAE_ID, default_out, encode_imagenet,
                                 load_or_build_index, load_vae, make_subsets)


def shard_task(shard_index: int | None, num_shards: int | None, env=os.environ) -> tuple[int | None, int | None]:
    """(index, count) of this task's shard: the options, else the Slurm array task (0-based even for
    ``--array=1-8``: ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN``, of ``SLURM_ARRAY_TASK_COUNT``), else None."""
    if num_shards is None and "SLURM_ARRAY_TASK_COUNT" in env:
        num_shards = int(env["SLURM_ARRAY_TASK_COUNT"])
    if shard_index is None and "SLURM_ARRAY_TASK_ID" in env:
        shard_index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    return shard_index, num_shards


def _int_at_least(low: int):
    """argparse type: an integer >= ``low`` (``--resolution 0`` would end in a traceback deep in the encoder)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    parse.__name__ = "positive_int" if low == 1 else "non_negative_int"
    return parse


positive_int, non_negative_int = _int_at_least(1), _int_at_least(0)


def per_class_count(text: str) -> tuple[str, int]:
    """argparse type of ``--per-class NAME=COUNT`` (COUNT >= 1)."""
    name, sep, k = text.partition("=")
    try:
        count = int(k)
    except ValueError:
        count = None
    if not name or not sep or count is None or count < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=COUNT with COUNT an integer >= 1, got {text!r}")
    return name, count


def is_user_error(err: BaseException) -> bool:
    """Errors that are the user's to fix (reported in one line, exit code 2) rather than bugs (traceback)."""
    return isinstance(err, (DataLayoutError, SettingsMismatch, BatchFormatError, MissingWeightsError))


def cmd_imagenet(args) -> dict:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    shard_index, num_shards = shard_task(args.shard_index, args.num_shards)
    shard_index = int(os.environ.get("RANK", 0)) if shard_index is None else shard_index
    num_shards = int(os.environ.get("WORLD_SIZE", 1)) if num_shards is None else num_shards
    index = load_or_build_index(args.src, Path(args.out) / args.split)  # a bad layout fails here, before the VAE
    report_skipped(index, Path(args.out) / args.split)
    vae = load_vae(args.vae, device=device)
    return encode_imagenet(args.src, args.out, vae=vae, vae_name=str(args.vae or VAE_ID), split=args.split,
                           shard_size=args.shard_size, shard_index=shard_index, num_shards=num_shards,
                           batch_size=args.batch_size, resolution=args.resolution, seed=args.seed,
                           num_workers=args.num_workers, device=device, progress=not args.quiet)


def report_skipped(index, split_dir: Path) -> None:
    """One stderr line when the index left out images PIL cannot decode (the list is ``index/skipped.txt``)."""
    if index.skipped:
        first, why = index.skipped[0]
        print(f"note: skipped {len(index.skipped)} image(s) that cannot be decoded, listed in "
              f"{split_dir / 'index' / 'skipped.txt'} (first: {first}: {why})", file=sys.stderr)


def cmd_subsets(args) -> dict:
    if args.src is not None:
        load_or_build_index(args.src, Path(args.out) / "train")
    per_class = dict(args.per_class or ())
    return make_subsets(args.out, seed=args.seed, per_class=per_class or None)


def cmd_samples(args) -> dict:
    """``graft_core.evaluation.sample_at_scale`` (its options, ``args.rest``) with this task's shard (see the module docstring)."""
    from graft_core.evaluation import sample_at_scale  # diffusers: imported only by the command that samples

    opts = sample_at_scale.build_parser(prog="python -m benchmark.prepare samples").parse_args(args.rest)
    opts.shard_index, opts.num_shards = shard_task(opts.shard_index, opts.num_shards)
    merged = sample_at_scale.run(opts)
    return {"samples": str(merged) if merged else None, "missing_shards": sample_at_scale.missing_shards(opts.out)}


def cmd_reference(args) -> dict:
    """Check the batch, cache its features, and record it as the batch the evals use (``benchmark.preflight``)."""
    from benchmark.preflight import record_reference

    checked = prepare_reference(args.npz, extractor=args.extractor, weights=args.weights, cache_dir=args.cache_dir)
    return {**checked, "recorded_in": str(record_reference(checked))}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.prepare", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    im = sub.add_parser("imagenet", help="encode an ImageFolder tree into sharded SD-VAE latents (resumable)")
    im.add_argument("--src", type=Path, required=True, help="ImageNet folder in ImageFolder layout <root>/<class>/")
    im.add_argument("--out", type=Path, default=default_out(), help="output root (default: $GRAFTBENCH_CACHE/imagenet)")
    im.add_argument("--split", default="train", choices=("train", "val"))
    im.add_argument("--shard-size", type=positive_int, default=10_000, help="images per latent shard file")
    im.add_argument("--num-shards", type=positive_int, help="number of parallel tasks (default: SLURM_ARRAY_TASK_COUNT or 1)")
    im.add_argument("--shard-index", type=non_negative_int,
                    help="this task, 0-based; it encodes shard files s ≡ index mod num-shards "
                         "(default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, or 0)")
    im.add_argument("--vae", help="local SD-VAE folder (default: stabilityai/sd-vae-ft-ema from the HF cache)")
    im.add_argument("--batch-size", type=positive_int, default=64)
    im.add_argument("--resolution", type=positive_int, default=256)
    im.add_argument("--seed", type=int, default=0, help="seeds the per-image flip and posterior noise")
    im.add_argument("--num-workers", type=non_negative_int, default=8, help="JPEG-decoding DataLoader workers")
    im.add_argument("--device", help="default: cuda when available")
    im.add_argument("--quiet", action="store_true")
    im.set_defaults(func=cmd_imagenet)

    su = sub.add_parser("subsets", help="write the fixed stage-1/stage-2 subset lists with their sha256")
    su.add_argument("--out", type=Path, default=default_out())
    su.add_argument("--src", type=Path, help="ImageNet train folder (only needed when --out has no index yet)")
    su.add_argument("--seed", type=int, default=0)
    su.add_argument("--per-class", action="append", type=per_class_count, metavar="NAME=COUNT",
                    help="non-standard subset(s) instead of the paper's (e.g. for a small test copy)")
    su.set_defaults(func=cmd_subsets)

    rf = sub.add_parser("reference", help="check an ADM reference batch, cache its features/statistics and record it "
                                          "as the batch the evals use ($GRAFTBENCH_CACHE/adm/reference.json; "
                                          "$GRAFTBENCH_ADM_REFERENCE overrides it)")
    rf.add_argument("--npz", type=Path, required=True, help="e.g. VIRTUAL_imagenet256_labeled.npz")
    rf.add_argument("--extractor", default="inception", help="feature extractor name (graft_core.metrics)")
    rf.add_argument("--weights", help="extractor weights (default: $GRAFTBENCH_INCEPTION_WEIGHTS)")
    rf.add_argument("--cache-dir", type=Path, help="default: next to the .npz, else $GRAFTBENCH_CACHE/reference")
    rf.set_defaults(func=cmd_reference)

    sa = sub.add_parser("samples", add_help=False,  # its options (and --help) are graft_core.evaluation.sample_at_scale's
                        help="sharded, resumable sampling → ADM .npz (a Slurm array task samples its shards)")
    sa.set_defaults(func=cmd_samples)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "samples":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        result = args.func(args)
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"error: {with_hint(err)}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
