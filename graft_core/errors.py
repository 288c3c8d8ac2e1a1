"""The engine's error classes: the user's to fix (missing weights, unprepared data, a folder of other settings, a bad
file), each a subclass of the builtin error it refines.

Why a leaf module: the driver tells a setup error (one line, exit 2) from a bug (a traceback) by these classes, and
the engine modules raise them; living here (standard library only) they are imported without diffusers or torch, so
catching one never costs the seconds its raising module takes to import.
"""
from __future__ import annotations

from pathlib import Path


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights (or another download) are not on disk (these machines cannot download them)."""


class DataLayoutError(ValueError):
    """The source folder is not an ImageFolder tree (``root/<class>/<image>``) or holds no images."""


class SettingsMismatch(ValueError):
    """An output folder already holds results made with other settings (mixing them would corrupt the set)."""


class NotPrepared(DataLayoutError, FileNotFoundError):
    """A prepared artefact is missing from an output folder: ``what`` is ``"index"`` (the file list, made from the
    ImageNet folder), ``"subsets"`` (the fixed subset lists) or ``"shards"`` (latents not encoded yet, listed in
    ``missing``). The engine states the facts; the tool that prepares the folder (``benchmark.prepare``) adds the
    command to run."""

    def __init__(self, message: str, *, folder: Path, what: str, missing: tuple[int, ...] = ()):
        super().__init__(message)
        self.folder, self.what, self.missing = Path(folder), what, tuple(missing)


class BatchFormatError(ValueError):
    """An ``.npz`` that is not an ADM image batch (``arr_0`` uint8 ``[N, H, W, 3]``)."""


class StructureMismatch(ValueError):
    """A checkpoint whose structure differs from the preset's (one line: which fields, both values)."""


class CorruptArtefactError(ValueError):
    """A cached file does not match the sha256 its manifest recorded (a ValueError, as the loaders' own checks)."""


SETUP_ERRORS = (MissingWeightsError, NotPrepared)  # what the driver reports in one line (exit 2), not as a bug
