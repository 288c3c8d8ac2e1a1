"""Exact-name registry of replacement operators.

Why a registry and not an if/elif chain on substrings (as the official ``replacement_factory.py``): a plan names its
operator by an exact string that ends up in run identities, so a lookup must either find that exact name or fail with
the list of known names. Each operator declares which site it fits (``attn`` replaces ``attn1``, ``mlp`` replaces
``ff``) and whether its weights are tied to one token count (``seq_len_bound``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

SITES = ("attn", "mlp")
# Model-level sizes every ``build`` call receives; an operator's constructor gets the ones it declares.
MODEL_ARGS = ("num_heads", "seq_len")


@dataclass(frozen=True)
class OperatorInfo:
    """What a plan needs to know about an operator without building it."""

    name: str
    cls: type
    site: str  # "attn" | "mlp"
    seq_len_bound: bool  # weights only valid for the token count they were built for
    summary: str

    def options(self) -> tuple[str, ...]:
        """Hyperparameters the constructor accepts beyond ``dim`` and the model-level sizes."""
        params = inspect.signature(self.cls.__init__).parameters
        return tuple(p for p in params if p not in ("self", "dim") + MODEL_ARGS
                     and params[p].kind is not inspect.Parameter.VAR_KEYWORD)


_REGISTRY: dict[str, OperatorInfo] = {}


def register_operator(name: str, *, site: str, seq_len_bound: bool = False) -> Callable[[type], type]:
    """Class decorator: ``@register_operator("hyena_x", site="attn")``. Refuses duplicate names."""
    if site not in SITES:
        raise ValueError(f"operator {name!r}: site must be one of {SITES}, got {site!r}")

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"operator {name!r} registered twice ({_REGISTRY[name].cls.__name__} and {cls.__name__})")
        if not issubclass(cls, nn.Module):
            raise ValueError(f"operator {name!r}: {cls.__name__} is not an nn.Module")
        summary = (inspect.getdoc(cls) or "").split("\n", 1)[0]
        _REGISTRY[name] = OperatorInfo(name=name, cls=cls, site=site, seq_len_bound=seq_len_bound, summary=summary)
        return cls

    return deco


def available(site: str | None = None) -> tuple[str, ...]:
    """Registered operator names (sorted), optionally only those that fit ``site``."""
    if site is not None and site not in SITES:
        raise ValueError(f"unknown site {site!r}; choose one of {SITES}")
    return tuple(sorted(n for n, i in _REGISTRY.items() if site is None or i.site == site))


def operator_info(name: str) -> OperatorInfo:
    """Metadata of one operator; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown operator {name!r}; known operators: {', '.join(available())}") from None


def build(name: str, dim: int, *, num_heads: int, seq_len: int, **options) -> nn.Module:
    """A freshly initialised operator mapping ``[B, N, D] -> [B, N, D]``.

    ``num_heads`` and ``seq_len`` describe the host model; they are passed on only to operators whose constructor
    uses them. ``options`` are the operator's own hyperparameters (e.g. ``ratio=3`` for ``mlp``); an unknown option is
    a ``ValueError`` naming the accepted ones.
    """
    info = operator_info(name)
    accepted = info.options()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"operator {name!r} does not take option(s) {unknown}; accepted: {list(accepted) or 'none'}")
    params = inspect.signature(info.cls.__init__).parameters
    model_kwargs = {k: v for k, v in (("num_heads", num_heads), ("seq_len", seq_len)) if k in params}
    return info.cls(dim, **model_kwargs, **options)
