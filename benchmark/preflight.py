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
from graft_core.presets import Preset
from graft_core.structure import hub_file as _hub_file

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


def _hub_config(repo: str, filename: str) -> tuple[dict | None, str | None]:
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
T2I_PREFIX = "t2i:"  # the step kinds of text-to-image (Table 5) rows, as the driver passes them
DATA_STEPS = {"capture", "stage2", "eval", "floor", "noise", "locality", "activation_stats", "sample", "metrics"}
EVAL_STEPS = {"eval", "floor", "noise", "metrics"}


def dit_kinds(kinds: set[str]) -> set[str]:
    """The step kinds of DiT/ImageNet rows (Table-5 rows pass theirs prefixed with ``t2i:``)."""
    return {k for k in kinds if not k.startswith(T2I_PREFIX)}


@prerequisite("DiT weights", lambda p, kinds: p.teacher.pretrained is not None and bool(dit_kinds(kinds)))
def check_dit(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.structure import check_structure

    repo = p.teacher.pretrained
    config, problem = _hub_config(repo, "transformer/config.json")
    if problem:
        return problem
    try:
        check_structure(config, p.teacher, source=repo)
    except (StructureMismatch, KeyError) as err:
        return str(err) if isinstance(err, StructureMismatch) else f"{repo}: config lacks {err}; {_download_hint(repo)}"
    return _hub_weights(repo, "transformer")


@prerequisite("SD-VAE", lambda p, kinds: p.data.name == "imagenet" and bool(kinds & DATA_STEPS))
def check_vae(p: Preset, kinds: set[str]) -> str | None:
    config, problem = _hub_config(VAE_REPO, "config.json")
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
    from graft_core import imagenet as inet
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


def adm_reference_path() -> Path:
    from graft_core.paths import cache_root

    given = os.environ.get(ADM_REFERENCE_ENV)
    return Path(given) if given else cache_root() / "adm" / ADM_REFERENCE_FILE


@prerequisite("ADM reference batch", lambda p, kinds: p.eval.extractor == "inception" and bool(kinds & EVAL_STEPS))
def check_adm_reference(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.adm_eval import ADM_STATS, batch_info

    path = adm_reference_path()
    fix = (f"download {ADM_REFERENCE_FILE} from {ADM_REFERENCE_URL} and put it at {path} (or set "
           f"{ADM_REFERENCE_ENV}=/path/to/it)")
    if not path.is_file():
        return f"ADM reference batch {path} does not exist: {fix}"
    try:
        info = batch_info(path, "reference batch")
    except (BatchFormatError, OSError, zipfile.BadZipFile, ValueError) as err:
        return f"{str(err).splitlines()[0]}: {fix}"
    if not info["has_adm_stats"]:
        return f"ADM reference batch {path} stores no {'/'.join(ADM_STATS)} (not ADM's reference batch): {fix}"
    if info["resolution"] != p.data.resolution:
        return f"ADM reference batch {path} holds {info['resolution']} px images; the preset needs {p.data.resolution}"
    return None


# ------------------------------------------------------------------------------------------- text to image (Table 5)
# Needed only when a plan has t2i rows and their preset loads PixArt-Σ from the Hub cache (paper, paper-smoke).
# graft_core.pixart / graft_core.text import torch and diffusers: they are imported only then, and no check loads
# weights (configs, file sizes, the sentencepiece model and GenEval's prompt list are read).
T2I_EVAL_STEPS = {"t2i:eval"}  # the steps that decode images (VAE) and score them (GenEval)


def _pixart_needed(wanted: set[str] | None = None) -> Callable[[Preset, set[str]], bool]:
    def needed(p: Preset, kinds: set[str]) -> bool:
        t2i = {k for k in kinds if k.startswith(T2I_PREFIX)}
        if wanted is not None:
            t2i &= wanted
        if not t2i:
            return False
        from graft_core.pixart import pixart_config

        try:
            return bool(pixart_config(p).pretrained)
        except ValueError:  # no PixArt teacher for this preset: the plan itself fails, not a prerequisite
            return False
    return needed


def _pixart_hint() -> str:
    from graft_core.pixart import PAPER_PIPELINE, PAPER_TRANSFORMER

    return (f"on a machine with internet run `huggingface-cli download {PAPER_TRANSFORMER}` and `huggingface-cli "
            f"download {PAPER_PIPELINE}` and copy ~/.cache/huggingface here (or set HF_HOME)")


def _weights_problem(repo: str, folder: str, names: tuple[str, ...], fix: str) -> str | None:
    """None when ``folder`` of ``repo`` holds a non-empty weights file of ``names`` — or a ``<name>.index.json`` whose
    every shard is present and non-empty (T5-XXL ships sharded); else one line."""
    for name in names:
        path = _hub_file(repo, f"{folder}/{name}")
        if path is not None and path.stat().st_size > 0:
            return None
        index = _hub_file(repo, f"{folder}/{name}.index.json")
        if index is None:
            continue
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return f"{repo}: {index} is not a readable weights index (corrupt download?); {fix}"
        for shard in shards:
            path = _hub_file(repo, f"{folder}/{shard}")
            if path is None or path.stat().st_size == 0:
                state = "missing" if path is None else "empty"
                return f"{repo}: weights shard {folder}/{shard} of {index.name} is {state} (partial download?); {fix}"
        return None if shards else f"{repo}: {index} lists no weights shards; {fix}"
    return f"{repo}: no weights file in {folder}/ (empty snapshot?); {fix}"


@prerequisite("PixArt-Σ transformer", _pixart_needed())
def check_pixart(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.pixart import pixart_config, pretrained_pixart

    cfg = pixart_config(p)
    config, problem = _hub_config(cfg.pretrained, "transformer/config.json")
    if problem:
        return f"PixArt-Σ transformer: {problem}"
    try:
        pretrained_pixart(cfg, config)
    except StructureMismatch as err:
        return str(err)
    except (KeyError, TypeError) as err:
        return (f"{cfg.pretrained}: transformer/config.json lacks {err} (not a PixArt transformer config); "
                f"{_pixart_hint()}")
    return _weights_problem(cfg.pretrained, "transformer", ("diffusion_pytorch_model.safetensors",
                                                            "diffusion_pytorch_model.bin"), _pixart_hint())


@prerequisite("T5 encoder", _pixart_needed())
def check_t5_encoder(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.pixart import PAPER_PIPELINE, pixart_config

    config, problem = _hub_config(PAPER_PIPELINE, "text_encoder/config.json")
    if problem:
        return f"T5 encoder: {problem}"
    if config.get("model_type") != "t5" or not isinstance(config.get("d_model"), int):
        return (f"{PAPER_PIPELINE}: text_encoder/config.json is not a T5 config (model_type "
                f"{config.get('model_type')!r}); {_pixart_hint()}")
    transformer = _hub_file(pixart_config(p).pretrained, "transformer/config.json")
    try:
        caption_channels = json.loads(transformer.read_text()).get("caption_channels") if transformer else None
    except (OSError, ValueError, AttributeError):
        caption_channels = None  # reported by the transformer's check
    if caption_channels is not None and caption_channels != config["d_model"]:
        return (f"{PAPER_PIPELINE}: the T5 encoder's d_model {config['d_model']} differs from the PixArt-Σ "
                f"transformer's caption_channels {caption_channels} (another T5?); {_pixart_hint()}")
    return _weights_problem(PAPER_PIPELINE, "text_encoder", ("model.safetensors", "pytorch_model.bin"),
                            _pixart_hint())


@prerequisite("T5 tokenizer packages", _pixart_needed())
def check_tokenizer_packages(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.pixart import missing_tokenizer_packages

    missing = missing_tokenizer_packages()
    if missing:
        return (f"the T5 tokenizer needs {' and '.join(missing)}: run `pip install {' '.join(missing)}` "
                f"(dependencies of graftbench: `pip install -e .` installs them)")
    return None


@prerequisite("T5 tokenizer", _pixart_needed())
def check_t5_tokenizer(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.pixart import PAPER_PIPELINE, missing_tokenizer_packages

    path = _hub_file(PAPER_PIPELINE, "tokenizer/spiece.model")
    if path is None:
        return (f"T5 tokenizer: {PAPER_PIPELINE}: tokenizer/spiece.model is not in the Hugging Face cache; "
                f"{_pixart_hint()}")
    if path.stat().st_size == 0:
        return f"T5 tokenizer: {PAPER_PIPELINE}: {path} is empty (placeholder?); {_pixart_hint()}"
    if not missing_tokenizer_packages():  # else the packages' line says what to install
        import sentencepiece

        try:
            sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as err:
            return (f"T5 tokenizer: {PAPER_PIPELINE}: {path} is not a sentencepiece model ({type(err).__name__}); "
                    f"{_pixart_hint()}")
    return None


@prerequisite("PixArt-Σ VAE", _pixart_needed(T2I_EVAL_STEPS))
def check_pixart_vae(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.pixart import PAPER_PIPELINE, pixart_config

    config, problem = _hub_config(PAPER_PIPELINE, "vae/config.json")
    if problem:
        return f"PixArt-Σ VAE: {problem}"
    channels = pixart_config(p).in_channels
    if config.get("latent_channels") != channels or len(config.get("block_out_channels", ())) != 4:
        return (f"{PAPER_PIPELINE}: vae/config.json has latent_channels={config.get('latent_channels')} and "
                f"{len(config.get('block_out_channels', ()))} blocks; PixArt-Σ needs the SD-XL VAE's {channels} "
                f"latent channels and 8× downsampling (4 blocks); {_pixart_hint()}")
    return _weights_problem(PAPER_PIPELINE, "vae", ("diffusion_pytorch_model.safetensors",
                                                    "diffusion_pytorch_model.bin"), _pixart_hint())


@prerequisite("PixArt-Σ prompts", _pixart_needed())
def check_pixart_prompts(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.text import PROMPTS_ENV, read_prompts

    try:
        prompts = read_prompts()
    except MissingWeightsError as err:
        return str(err)
    except (OSError, UnicodeDecodeError) as err:
        return (f"the PixArt-Σ prompt file ${PROMPTS_ENV}={os.environ.get(PROMPTS_ENV)} is not a readable text file "
                f"({type(err).__name__}): point {PROMPTS_ENV} at a text file with one prompt per line")
    if not prompts:
        return (f"the PixArt-Σ prompt file ${PROMPTS_ENV}={os.environ.get(PROMPTS_ENV)} has no prompt: write one "
                f"prompt per line (they are cycled over the synthetic pairs)")
    return None


@prerequisite("GenEval", _pixart_needed(T2I_EVAL_STEPS))
def check_geneval(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.text import GENEVAL_DETECTOR_FILE, GENEVAL_PYTHON_ENV, geneval_metadata, geneval_paths

    try:
        root, detector = geneval_paths()
    except MissingWeightsError as err:
        return str(err)
    fix = "copy a complete GenEval checkout (`git clone https://github.com/djghosh13/geneval`)"
    if (detector / GENEVAL_DETECTOR_FILE).stat().st_size == 0:
        return (f"GenEval: the detector weights {detector / GENEVAL_DETECTOR_FILE} are empty (placeholder?): run "
                f"GenEval's `evaluation/download_models.sh <folder>` on a machine with internet and copy the folder")
    try:
        metadata = geneval_metadata(root)
        bad = next((i for i, m in enumerate(metadata) if not isinstance(m, dict)
                    or not isinstance(m.get("prompt"), str) or not isinstance(m.get("tag"), str)), None)
    except (OSError, ValueError) as err:
        return f"GenEval: {root}/prompts/evaluation_metadata.jsonl does not parse ({type(err).__name__}); {fix}"
    if bad is not None:
        return f"GenEval: entry {bad + 1} of {root}/prompts/evaluation_metadata.jsonl has no \"prompt\"/\"tag\"; {fix}"
    if not metadata:
        return f"GenEval: {root}/prompts/evaluation_metadata.jsonl lists no prompt; {fix}"
    python = os.environ.get(GENEVAL_PYTHON_ENV)
    if python and not (Path(python).is_file() and os.access(python, os.X_OK)):
        return (f"GenEval: {GENEVAL_PYTHON_ENV}={python} is not an executable interpreter: point it at the python "
                f"of GenEval's environment (or unset it to use this one)")
    return None


def problems(preset_kinds: dict[str, tuple[Preset, set[str]]]) -> list[str]:
    """One line per unmet prerequisite, over every distinct row preset of the plan (``{key: (preset, step
    kinds)}``); a problem shared by several presets is reported once."""
    out: list[str] = []
    for preset, kinds in preset_kinds.values():
        for req in PREREQUISITES:
            if req.needed(preset, kinds):
                line = req.check(preset, kinds)
                if line and line not in out:
                    out.append(line)
    return out
