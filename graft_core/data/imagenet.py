"""ImageNet-1K (torchvision ``ImageFolder`` layout) → SD-VAE latents, sharded and resumable; fixed, hashed subsets.

Paper §2: every image is resized and centre-cropped to 256 px (ADM's ``center_crop_arr``), flipped horizontally at
random **once**, and encoded **once** with ``stabilityai/sd-vae-ft-ema`` (latent × 0.18215), so each image has exactly
one latent. The flip and the posterior noise are seeded per image from (seed, relative path), so a latent does not
depend on the shard size, the batch size or how many tasks shared the work.

Layout under ``out/<split>/`` (written by :func:`encode_imagenet`)::

    index/files.txt        sorted relative paths ("n01440764/n01440764_10026.JPEG"): the global order
    index/labels.npy       int64 class ids (position of the class folder in sorted order, as ImageFolder)
    index/classes.txt      class folder names
    index/skipped.txt      files with an image extension that PIL cannot decode ("<relpath>\t<reason>"): left out
                           of files.txt at scan time, so every global index is fixed before any shard is encoded
    index/meta.json        counts, index hash and the encoding settings (a rerun with other settings is refused)
    shards/latents_00000.npy   float32 [n, 4, R/8, R/8]   (images [s·shard_size, (s+1)·shard_size) of the index)
    shards/labels_00000.npy, shards/flips_00000.npy, shards/files_00000.txt
    shards/DONE_00000.json     written last; a shard without it is (re)computed, a shard with it is skipped

Task ``i`` of ``n`` (the ``shard_index``/``num_shards`` parameters; ``python -m benchmark.prepare imagenet`` fills them
from its options or the Slurm array task) encodes the shards ``s ≡ i (mod n)``.

Subsets (end of this file) depend only on the index, not on the latents: ``out/subsets/<name>.txt`` (sorted relative
paths) and ``out/subsets/subsets.json`` (per-class count, seed, sha256 of the list, index hash). They are nested
(each class's images are drawn from one seeded permutation, so 5 % ⊂ 10 % ⊂ 20 % ⊂ 25 % and stage 1 = the 0.63 %).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from graft_core.errors import DataLayoutError, MissingWeightsError, NotPrepared
from graft_core.runtime.paths import atomic_write_bytes, atomic_write_json, cache_root
from graft_core.runtime.shards import ShardArray, check_settings, check_task

VAE_ID = "stabilityai/sd-vae-ft-ema"
LATENT_SCALE = 0.18215  # SD-VAE scaling factor used by DiT and the grafting code
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's list


def default_out() -> Path:
    return cache_root() / "imagenet"


# --------------------------------------------------------------------------------------------------------------------
# Index: the sorted file list that fixes every global index
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageIndex:
    files: tuple[str, ...]  # sorted relative paths, "class/file"
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (relative path, reason) of the files that cannot be decoded

    @property
    def hash(self) -> str:
        """Content hash of the file list: two labs with the same ImageNet copy get the same value."""
        return hashlib.sha256("\n".join(self.files).encode()).hexdigest()[:16]


def undecodable(path: Path) -> str | None:
    """Why PIL cannot decode ``path`` (None when it can). ImageNet ships a few CMYK and PNG-in-JPEG files, which PIL
    reads (``load_image`` converts them to RGB); a file it cannot read would abort a whole shard, so the scan leaves
    it out. JPEGs are decoded at 1/8 scale (``draft``): every byte is still read, at a fraction of the cost."""
    try:
        with Image.open(path) as img:
            img.draft(None, (1, 1))
            img.load()
    except Exception as err:  # noqa: BLE001 — whatever PIL raises on a bad file (OSError, SyntaxError, bombs, ...)
        # without the folder it was read from, so that skipped.txt is the same wherever the copy is mounted
        return f"{type(err).__name__}: {err}".replace(str(path), path.name).splitlines()[0][:200]
    return None


def scan_image_folder(src: Path, *, workers: int | None = None) -> ImageIndex:
    """Classes = sorted sub-folders, images = files with an image extension (recursively), as ``ImageFolder``.

    Each image is decoded once here (threads: PIL releases the GIL); the ones that fail are left out of the index and
    listed in ``ImageIndex.skipped``, so the global order never depends on which shard would have hit them. A class
    left without a single image is a ``DataLayoutError`` (ImageFolder refuses an empty class too).
    """
    from concurrent.futures import ThreadPoolExecutor

    src = Path(src)
    if not src.is_dir():
        raise DataLayoutError(f"{src} is not a folder; expected an ImageNet train folder <root>/<class>/<image>.JPEG")
    classes = sorted(d.name for d in os.scandir(src) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataLayoutError(f"{src} has no class sub-folders; expected the ImageFolder layout <root>/<class>/<image>")
    found = [sorted(str(Path(dirpath, f).relative_to(src).as_posix())
                    for dirpath, _, names in os.walk(src / name, followlinks=True)
                    for f in names if f.lower().endswith(IMAGE_EXTENSIONS)) for name in classes]
    if not any(found):
        raise DataLayoutError(f"{src} has {len(classes)} class folders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # map keeps the order: the index is deterministic
        reasons = [list(pool.map(lambda rel: undecodable(src / rel), names)) for names in found]
    files, labels, skipped = [], [], []
    for label, (name, names, why) in enumerate(zip(classes, found, reasons)):
        good = [f for f, r in zip(names, why) if r is None]
        skipped += [(f, r) for f, r in zip(names, why) if r is not None]
        if not good:
            what = f"all {len(names)} of its images cannot be decoded" if names else "it holds no images"
            raise DataLayoutError(f"class folder {src / name}: {what}; add readable images or remove the folder")
        files.extend(good)
        labels.extend([label] * len(good))
    return ImageIndex(tuple(files), np.asarray(labels, dtype=np.int64), tuple(classes), tuple(skipped))


def write_index(index: ImageIndex, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "files.txt", ("\n".join(index.files) + "\n").encode())
    atomic_write_bytes(folder / "classes.txt", ("\n".join(index.classes) + "\n").encode())
    atomic_write_bytes(folder / "skipped.txt", "".join(f"{f}\t{r}\n" for f, r in index.skipped).encode())
    buf = _npy_bytes(index.labels)
    atomic_write_bytes(folder / "labels.npy", buf)  # last: its presence marks a complete index


def read_index(folder: Path) -> ImageIndex:
    folder = Path(folder)
    files = tuple((folder / "files.txt").read_text().splitlines())
    classes = tuple((folder / "classes.txt").read_text().splitlines())
    try:  # absent in an index made before undecodable images were skipped (it then has none)
        skipped = tuple(tuple(line.split("\t", 1)) for line in (folder / "skipped.txt").read_text().splitlines())
    except FileNotFoundError:
        skipped = ()
    return ImageIndex(files, np.load(folder / "labels.npy"), classes, skipped)


def load_or_build_index(src: Path | None, split_dir: Path) -> ImageIndex:
    """The saved index of ``split_dir`` if there is one (scanning 1.28M files once is enough), else scan ``src``."""
    folder = Path(split_dir) / "index"
    if (folder / "labels.npy").exists():
        return read_index(folder)
    if src is None:
        raise NotPrepared(f"{split_dir} has no index yet (it is made from the ImageNet folder)", folder=split_dir,
                          what="index")
    index = scan_image_folder(src)
    write_index(index, folder)
    return index


# --------------------------------------------------------------------------------------------------------------------
# Preprocessing and the VAE
# --------------------------------------------------------------------------------------------------------------------


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM's ``center_crop_arr``: BOX-halve while ≥ 2× too big, BICUBIC-resize the short side to ``size``, crop."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top: top + size, left: left + size]


def image_seed(relpath: str, seed: int) -> int:
    """63-bit seed of one image, from (seed, relative path): independent of order, sharding and batching."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{relpath}".encode()).digest()[:8], "little") >> 1


def flip_of(relpath: str, seed: int) -> bool:
    return bool(image_seed(relpath, seed) & 1)


def load_image(path: Path, relpath: str, size: int, seed: int) -> tuple[np.ndarray, bool]:
    """uint8 [size, size, 3] after centre crop and the image's one random horizontal flip."""
    with Image.open(path) as img:
        arr = center_crop_arr(img.convert("RGB"), size)
    flip = flip_of(relpath, seed)
    return np.array(arr[:, ::-1] if flip else arr), flip  # a writable copy


def load_vae(vae: str | Path | None = None, *, device: str | torch.device = "cpu"):
    """SD-VAE from a local folder (``--vae PATH``) or the Hugging Face cache (``stabilityai/sd-vae-ft-ema``)."""
    from diffusers import AutoencoderKL


    name = str(vae) if vae else VAE_ID
    try:
        model = AutoencoderKL.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise MissingWeightsError(
            f"VAE {name!r} not found ({type(err).__name__}); on a connected machine run `huggingface-cli download "
            f"{VAE_ID}` and copy ~/.cache/huggingface here (or set HF_HOME), or pass --vae PATH to a local copy"
        ) from None
    return model.to(device).eval().requires_grad_(False)


@torch.inference_mode()
def encode_batch(vae, images_uint8: np.ndarray, seeds: list[int], device) -> torch.Tensor:
    """One posterior sample per image (its noise seeded per image), scaled by 0.18215 → float32 CPU tensor."""
    x = torch.from_numpy(images_uint8).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
    dist = vae.encode(x).latent_dist
    eps = torch.stack([torch.randn(dist.mean.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])
    return ((dist.mean + dist.std * eps.to(dist.mean.device)) * LATENT_SCALE).float().cpu()


# --------------------------------------------------------------------------------------------------------------------
# Sharded, resumable encoding
# --------------------------------------------------------------------------------------------------------------------


check_shard_task = check_task  # the prepare CLI's name for it


def shard_files(split_dir: Path, s: int) -> dict[str, Path]:
    d = Path(split_dir) / "shards"
    return {k: d / f"{k}_{s:05d}{ext}" for k, ext in
            (("latents", ".npy"), ("labels", ".npy"), ("flips", ".npy"), ("files", ".txt"), ("DONE", ".json"))}


def shard_array(split_dir: Path, num_images: int, shard_size: int) -> ShardArray:
    return ShardArray(num_images, shard_size, lambda s: shard_files(split_dir, s)["DONE"])


def done_shards(split_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (Path(split_dir) / "shards").glob("DONE_*.json"))


class _ShardImages(torch.utils.data.Dataset):
    def __init__(self, src: Path, files: list[str], size: int, seed: int):
        self.src, self.files, self.size, self.seed = Path(src), files, size, seed

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        arr, flip = load_image(self.src / self.files[i], self.files[i], self.size, self.seed)
        return torch.from_numpy(arr), flip


def encode_imagenet(src: Path, out: Path, *, vae, vae_name: str = VAE_ID, split: str = "train",
                    shard_size: int = 10_000, shard_index: int = 0, num_shards: int = 1,
                    batch_size: int = 64, resolution: int = 256, seed: int = 0, num_workers: int = 8,
                    device: str | torch.device | None = None, progress: bool = True) -> dict:
    """Encode this task's shards of ``src`` into ``out/<split>/shards``; shards with a DONE marker are skipped.

    This call is task ``shard_index`` of ``num_shards`` parallel ones. Returns ``{"split_dir", "index_hash",
    "num_images", "num_shard_files", "encoded", "skipped", "undecodable", "seconds"}`` (``skipped``: shards already
    done; ``undecodable``: images left out of the index, listed in ``index/skipped.txt``).
    """
    from tqdm.auto import tqdm

    check_task(shard_index, num_shards)
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    split_dir = Path(out) / split
    index = load_or_build_index(src, split_dir)
    array = shard_array(split_dir, len(index.files), shard_size)
    settings = {"index_hash": index.hash, "num_images": len(index.files), "num_classes": len(index.classes),
                "shard_size": shard_size, "resolution": resolution, "seed": seed, "latent_scale": LATENT_SCALE,
                "vae_weights": module_digest(vae), "posterior": "sample",
                "flip": "one random horizontal flip per image", "crop": "adm center_crop_arr"}
    check_settings(split_dir / "index" / "meta.json", settings, what="latents", folder=split_dir,
                   info={"vae": vae_name, "num_skipped": len(index.skipped), "skipped_list": "index/skipped.txt"})
    total = array.num_shards
    todo, skipped = array.todo(shard_index, num_shards)
    encoded, start = [], time.time()
    for s in todo:
        paths = shard_files(split_dir, s)
        lo, hi = array.bounds(s)
        files = list(index.files[lo:hi])
        loader = torch.utils.data.DataLoader(_ShardImages(src, files, resolution, seed), batch_size=batch_size,
                                             num_workers=num_workers, shuffle=False)
        t0, latents, flips, pos = time.time(), [], [], 0
        for imgs, flip in tqdm(loader, desc=f"shard {s}/{total}", disable=not progress, mininterval=10):
            seeds = [image_seed(f, seed) + 1 for f in files[pos: pos + len(imgs)]]  # +1: not the flip's seed
            latents.append(encode_batch(vae, imgs.numpy(), seeds, device))
            flips.append(flip.numpy().astype(bool))
            pos += len(imgs)
        lat = torch.cat(latents).numpy()
        atomic_write_bytes(paths["latents"], _npy_bytes(lat))
        atomic_write_bytes(paths["labels"], _npy_bytes(index.labels[lo:hi]))
        atomic_write_bytes(paths["flips"], _npy_bytes(np.concatenate(flips)))
        atomic_write_bytes(paths["files"], ("\n".join(files) + "\n").encode())
        array.mark_done(s, {"shard": s, "first": lo, "count": hi - lo, "shape": list(lat.shape),
                            "seconds": round(time.time() - t0, 2), "index_hash": index.hash})
        encoded.append(s)
    return {"split_dir": str(split_dir), "index_hash": index.hash, "num_images": len(index.files),
            "num_shard_files": total, "encoded": encoded, "skipped": skipped,
            "undecodable": len(index.skipped), "seconds": round(time.time() - start, 2)}


def module_digest(module: torch.nn.Module) -> str:
    """sha256 (16 hex) of a module's state (names, shapes, bytes): the VAE's identity wherever its folder lives."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr))
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------------------------
# Reading latents back
# --------------------------------------------------------------------------------------------------------------------


def load_latents(split_dir: Path, indices: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents and labels of the given global indices (all when None); every needed shard must be DONE."""
    split_dir = Path(split_dir)
    meta = json.loads((split_dir / "index" / "meta.json").read_text())
    size, n = meta["shard_size"], meta["num_images"]
    indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
    shards = indices // size
    missing = shard_array(split_dir, n, size).missing(shards.tolist())
    if missing:
        raise NotPrepared(f"{split_dir}: shards {missing[:8]}{'…' if len(missing) > 8 else ''} are not encoded yet",
                          folder=split_dir, what="shards", missing=tuple(missing))
    lat, lab = [], []
    order = np.argsort(indices, kind="stable")
    for s in np.unique(shards):
        sel = indices[order][shards[order] == s] - s * size
        paths = shard_files(split_dir, int(s))
        lat.append(np.load(paths["latents"], mmap_mode="r")[sel])
        lab.append(np.load(paths["labels"])[sel])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return torch.from_numpy(np.concatenate(lat)[inverse]), torch.from_numpy(np.concatenate(lab)[inverse])


# --------------------------------------------------------------------------------------------------------------------
# Fixed subsets (paper §2): stage 1 = 8 per class; stage 2 = class-stratified 0.63 / 5 / 10 / 20 / 25 %
# --------------------------------------------------------------------------------------------------------------------

NOMINAL_PER_CLASS = 1280  # 1.28M / 1000: "10 % = 128k = 128 per class" (paper §2), so per class = round(f · 1280)
SUBSETS = {"stage1": ("train", 8), "pct0.63": ("train", 8), "pct5": ("train", 64), "pct10": ("train", 128),
           "pct20": ("train", 256), "pct25": ("train", 320), "heldout": ("val", 8)}


def subset_name(fraction: float) -> str:
    """Name of the stage-2 subset of a data fraction (0.10 → ``pct10``, 0.0063 → ``pct0.63``)."""
    name = f"pct{round(fraction * 100, 2):g}"
    if name not in SUBSETS:
        raise ValueError(f"no ImageNet subset for fraction {fraction}; known: {', '.join(SUBSETS)}")
    return name


def nested_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices: the first ``per_class`` of a permutation per class seeded by (seed, class) — nested in k."""
    labels = np.asarray(labels)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if per_class > len(members):
            raise ValueError(f"class {c} has {len(members)} images, the subset asks for {per_class} per class")
        chosen.append(members[np.random.default_rng([seed, int(c)]).permutation(len(members))[:per_class]])
    return np.sort(np.concatenate(chosen))


def list_hash(files: list[str] | tuple[str, ...]) -> str:
    """sha256 (16 hex digits) of the newline-joined sorted relative paths: the key every run records."""
    return hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()[:16]


def make_subsets(out: Path, *, seed: int = 0, per_class: dict[str, int] | None = None) -> dict:
    """Write the subset lists for every split whose index exists; returns the ``subsets.json`` content.

    ``per_class`` overrides the standard counts (and restricts the output to the names it lists).
    """
    out = Path(out)
    manifest_path = out / "subsets" / "subsets.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in per_class or SUBSETS:
        split, k = SUBSETS.get(name, ("train", 0))
        k = (per_class or {}).get(name, k)
        if not (out / split / "index" / "labels.npy").exists():
            continue
        index = read_index(out / split / "index")
        files = [index.files[i] for i in nested_subset(index.labels, k, seed)]
        atomic_write_bytes(out / "subsets" / f"{name}.txt", ("\n".join(files) + "\n").encode())
        manifest[name] = {"split": split, "per_class": k, "count": len(files), "seed": seed,
                          "sha256": list_hash(files), "index_hash": index.hash}
    if not manifest:
        raise NotPrepared(f"{out} has no index (it is made from the ImageNet folder)", folder=out, what="index")
    atomic_write_json(manifest_path, manifest)
    return manifest


def load_subset(out: Path, name: str) -> tuple[np.ndarray, dict]:
    """(sorted global indices into the split's index, manifest entry incl. ``sha256``); checks hash and index."""
    out = Path(out)
    path = out / "subsets" / "subsets.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotPrepared(f"{path} does not exist (no subsets are prepared)", folder=out, what="subsets") from None
    if name not in manifest:
        raise NotPrepared(f"subset {name!r} is not prepared in {out} (prepared: {', '.join(sorted(manifest))})",
                          folder=out, what="subsets")
    entry = manifest[name]
    files = (out / "subsets" / f"{name}.txt").read_text().splitlines()
    if list_hash(files) != entry["sha256"]:
        raise ValueError(f"subset list {name} was modified (sha256 {list_hash(files)} != {entry['sha256']})")
    index = read_index(out / entry["split"] / "index")
    if index.hash != entry["index_hash"]:
        raise ValueError(f"subset {name} was made from another file list (index {entry['index_hash']} != {index.hash})")
    position = {f: i for i, f in enumerate(index.files)}
    return np.asarray(sorted(position[f] for f in files), dtype=np.int64), entry


def subset_latents(name: str, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, str]:
    """(latents, labels, global indices, subset sha256) of a prepared subset — what stage 1/2 train on.

    ``name``: ``stage1``, ``heldout`` or ``subset_name(stage2.data_fraction)``; ``root`` defaults to
    ``$GRAFTBENCH_CACHE/imagenet`` (``default_out()``).
    """
    root = Path(root) if root is not None else default_out()
    indices, entry = load_subset(root, name)
    latents, labels = load_latents(root / entry["split"], indices)
    return latents, labels, indices, entry["sha256"]
