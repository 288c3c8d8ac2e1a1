"""Preflight: every prerequisite a plan needs is checked for *content* before anything is submitted.

Why: a paper launch queues hundreds of GPU jobs; a missing or placeholder prerequisite (an empty HF snapshot, a junk
``subsets.json``, a 0-byte Inception file) must stop the launch on the submit host with one line naming the command
that makes it, not fail inside every job hours later. Each check is registered with the condition under which a plan
needs it; :func:`problems` runs the needed ones and returns every problem at once (the user fixes them in one go).
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from graft_core.errors import BatchFormatError, MissingWeightsError, StructureMismatch
from benchmark.family import families
from graft_core.presets import Preset
from graft_core.models.structure import hub_file as _hub_file

ADM_REFERENCE_ENV = "GRAFTBENCH_ADM_REFERENCE"
ADM_REFERENCE_FILE = "VIRTUAL_imagenet256_labeled.npz"
ADM_REFERENCE_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
VAE_REPO = "stabilityai/sd-vae-ft-ema"
# A few keys of torch-fidelity's FeatureExtractorInceptionV3 state dict, from its first and last layers.
INCEPTION_KEYS = ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight", "fc.weight", "fc.bias")


@dataclass(frozen=True)
class Prerequisite:
    name: str
    needed: Callable[[Preset, set[str]], bool]  # (preset, step kinds planned) → does the plan need it?
    check: Callable[[Preset, set[str]], str | None]  # → None, or one line: what is wrong and the command that fixes it


PREREQUISITES: list[Prerequisite] = []


def prerequisite(name: str, needed: Callable[[Preset, set[str]], bool]):
    def deco(check):
        PREREQUISITES.append(Prerequisite(name, needed, check))
        return check
    return deco


def _download_hint(repo: str) -> str:
    return (f"on a machine with internet run `huggingface-cli download {repo}` and copy ~/.cache/huggingface here "
            f"(or set HF_HOME)")


def hub_config(repo: str, filename: str) -> tuple[dict | None, str | None]:
    path = _hub_file(repo, filename)
    if path is None:
        return None, f"{repo}: {filename} is not in the Hugging Face cache; {_download_hint(repo)}"
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as err:
        return None, f"{repo}: {path} is not a readable JSON config ({type(err).__name__}); {_download_hint(repo)}"


def _hub_weights(repo: str, folder: str) -> str | None:
    prefix = f"{folder}/" if folder else ""
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        path = _hub_file(repo, prefix + name)
        if path is not None and path.stat().st_size > 0:
            return None
    return f"{repo}: no weights file in {prefix or 'the snapshot root'} (empty snapshot?); {_download_hint(repo)}"


# ---------------------------------------------------------------------------------------------------- the checks
DATA_STEPS = {"capture", "stage2", "eval", "floor", "noise", "locality", "activation_stats", "sample", "metrics"}
EVAL_STEPS = {"eval", "floor", "noise", "metrics"}


def dit_kinds(kinds: set[str]) -> set[str]:
    """The step kinds of DiT/ImageNet rows (a model family's own rows pass theirs prefixed with
    ``Family.prerequisite_prefix``, and the family module registers the checks they need)."""
    return {k for k in kinds if ":" not in k}


@prerequisite("DiT weights", lambda p, kinds: p.teacher.pretrained is not None and bool(dit_kinds(kinds)))
def check_dit(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.models.structure import check_structure

    repo = p.teacher.pretrained
    config, problem = hub_config(repo, "transformer/config.json")
    if problem:
        return problem
    try:
        check_structure(config, p.teacher, source=repo)
    except (StructureMismatch, KeyError) as err:
        return str(err) if isinstance(err, StructureMismatch) else f"{repo}: config lacks {err}; {_download_hint(repo)}"
    return _hub_weights(repo, "transformer")


@prerequisite("SD-VAE", lambda p, kinds: p.data.name == "imagenet" and bool(kinds & DATA_STEPS))
def check_vae(p: Preset, kinds: set[str]) -> str | None:
    config, problem = hub_config(VAE_REPO, "config.json")
    if problem:
        return problem
    if config.get("latent_channels") != p.teacher.in_channels or len(config.get("block_out_channels", ())) != 4:
        return (f"{VAE_REPO}: config has latent_channels={config.get('latent_channels')} and "
                f"{len(config.get('block_out_channels', ()))} blocks; the preset needs the SD-VAE's 4 latent channels "
                f"and 8× downsampling (4 blocks); {_download_hint(VAE_REPO)}")
    return _hub_weights(VAE_REPO, "")


def stage2_fractions(p: Preset) -> set[float]:
    return {p.stage2.data_fraction}


@prerequisite("ImageNet latents", lambda p, kinds: p.data.name == "imagenet" and bool(kinds & DATA_STEPS))
def check_latents(p: Preset, kinds: set[str], *, fractions: Iterable[float] | None = None) -> str | None:
    from graft_core.data import imagenet as inet
    from graft_core.data.sources import imagenet_root

    root = imagenet_root()
    prepare = ("`python -m benchmark.prepare imagenet --src /path/to/imagenet/train` (and `--split val` for "
               "/path/to/imagenet/val), then `python -m benchmark.prepare subsets`")
    manifest_path = root / "subsets" / "subsets.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        assert isinstance(manifest, dict)
    except FileNotFoundError:
        return f"ImageNet latents are not prepared ({manifest_path} is missing): run {prepare}"
    except (OSError, ValueError, AssertionError):
        return f"{manifest_path} is not a subsets manifest (corrupt?): re-run `python -m benchmark.prepare subsets`"
    names = {"stage1", "heldout"} | {inet.subset_name(f) for f in (fractions or stage2_fractions(p))}
    for name in sorted(names):
        try:
            indices, entry = inet.load_subset(root, name)
        except inet.NotPrepared:
            return f"subset {name} is not prepared in {root}: run {prepare}"
        except (OSError, ValueError) as err:
            return f"subset {name} in {root} is unusable ({err}): re-run `python -m benchmark.prepare subsets`"
        split_dir = root / entry["split"]
        try:
            meta = json.loads((split_dir / "index" / "meta.json").read_text())
            array = inet.shard_array(split_dir, meta["num_images"], meta["shard_size"])
        except (OSError, ValueError, KeyError):
            return f"{split_dir}: the latent index is missing or corrupt: run {prepare}"
        missing = array.missing((indices // array.shard_size).tolist())
        if missing:
            return (f"{split_dir}: {len(missing)} latent shard(s) that subset {name} needs are not encoded "
                    f"(first: {missing[0]}): run {prepare} (it resumes)")
        if meta.get("resolution", p.data.resolution) != p.data.resolution:
            return (f"{split_dir}: latents were encoded at {meta.get('resolution')} px, the preset needs "
                    f"{p.data.resolution}: re-encode with `python -m benchmark.prepare imagenet --resolution "
                    f"{p.data.resolution}`")
    return None


@prerequisite("Inception weights", lambda p, kinds: p.eval.extractor == "inception" and bool(kinds & EVAL_STEPS))
def check_inception(p: Preset, kinds: set[str]) -> str | None:
    import torch

    from graft_core.metrics.extractors import INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE

    given = os.environ.get(INCEPTION_WEIGHTS_ENV)
    fix = (f"download {INCEPTION_WEIGHTS_FILE} from https://github.com/toshas/torch-fidelity/releases/tag/v0.2.0 "
           f"and set {INCEPTION_WEIGHTS_ENV}=/path/to/it")
    if not given:
        return f"Inception-v3 weights: {INCEPTION_WEIGHTS_ENV} is not set; {fix}"
    try:
        state = torch.load(given, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return f"Inception-v3 weights: {given} does not exist; {fix}"
    except Exception as err:  # noqa: BLE001 — any unreadable file is the same user problem
        return f"Inception-v3 weights: {given} is not a loadable state dict ({type(err).__name__}); {fix}"
    missing = [k for k in INCEPTION_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        return f"Inception-v3 weights: {given} lacks {missing[0]} (not torch-fidelity's Inception-v3 file); {fix}"
    return None


ADM_REFERENCE_RECORD = "reference.json"  # $GRAFTBENCH_CACHE/adm/reference.json: the batch `prepare reference` checked


def reference_record_path() -> Path:
    from graft_core.runtime.paths import cache_root

    return cache_root() / "adm" / ADM_REFERENCE_RECORD


def record_reference(checked: dict) -> Path:
    """Record the reference batch ``python -m benchmark.prepare reference`` checked (its absolute path, size and
    sha256) where every eval looks first, so the run scores against exactly the file that was checked."""
    from graft_core.runtime.paths import atomic_write_json

    npz = Path(checked["reference"]).resolve()
    path = reference_record_path()
    atomic_write_json(path, {"reference": str(npz), "size": npz.stat().st_size, "sha256": checked["sha256"],
                             "extractor": checked.get("extractor"), "by": "python -m benchmark.prepare reference"})
    return path


def recorded_reference() -> dict | None:
    try:
        record = json.loads(reference_record_path().read_text())
        return record if isinstance(record, dict) and isinstance(record.get("reference"), str) else None
    except (OSError, ValueError):
        return None


def adm_reference_path() -> Path:
    """The reference batch the evals score against: ``$GRAFTBENCH_ADM_REFERENCE`` when set (an override), else the
    one ``python -m benchmark.prepare reference --npz`` checked (``reference_record_path``), else
    ``$GRAFTBENCH_CACHE/adm/VIRTUAL_imagenet256_labeled.npz``."""
    from graft_core.runtime.paths import cache_root

    given = os.environ.get(ADM_REFERENCE_ENV)
    if given:
        return Path(given)
    record = recorded_reference()
    return Path(record["reference"]) if record else cache_root() / "adm" / ADM_REFERENCE_FILE


@prerequisite("ADM reference batch", lambda p, kinds: p.eval.extractor == "inception" and bool(kinds & EVAL_STEPS))
def check_adm_reference(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.evaluation.adm_eval import ADM_STATS, batch_info

    path = adm_reference_path()
    fix = (f"download {ADM_REFERENCE_FILE} from {ADM_REFERENCE_URL} and run `python -m benchmark.prepare reference "
           f"--npz /path/to/it` (or set {ADM_REFERENCE_ENV}=/path/to/it)")
    if not path.is_file():
        return f"ADM reference batch {path} does not exist: {fix}"
    record = None if os.environ.get(ADM_REFERENCE_ENV) else recorded_reference()
    if record and path.stat().st_size != record.get("size"):
        return (f"ADM reference batch {path} changed since `python -m benchmark.prepare reference` checked it "
                f"({record.get('size')} bytes then, {path.stat().st_size} now): run it again on the file to use")
    try:
        info = batch_info(path, "reference batch")
    except (BatchFormatError, OSError, zipfile.BadZipFile, ValueError) as err:
        return f"{str(err).splitlines()[0]}: {fix}"
    if not info["has_adm_stats"]:
        return f"ADM reference batch {path} stores no {'/'.join(ADM_STATS)} (not ADM's reference batch): {fix}"
    if info["resolution"] != p.data.resolution:
        return f"ADM reference batch {path} holds {info['resolution']} px images; the preset needs {p.data.resolution}"
    return None


def problems(preset_kinds: dict[str, tuple[Preset, set[str]]]) -> list[str]:
    """One line per unmet prerequisite, over every distinct row preset of the plan (``{key: (preset, step
    kinds)}``); a problem shared by several presets is reported once."""
    families()  # their modules register their own prerequisites
    out: list[str] = []
    for preset, kinds in preset_kinds.values():
        for req in PREREQUISITES:
            if req.needed(preset, kinds):
                line = req.check(preset, kinds)
                if line and line not in out:
                    out.append(line)
    return out
