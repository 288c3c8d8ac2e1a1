"""Figures (seaborn, Agg backend): Table 1 (i)/(ii) activation statistics per layer, Fig. 2 locality, Fig. 4a data
scale, Fig. 4b layer selection, and the quality-vs-efficiency Pareto plot of every Table-4 row.

Each figure is two pure steps: ``<name>_frame(rows) -> DataFrame`` (the tidy numbers the figure shows; the builder
also writes it as ``<name>.csv`` and the tests compare that, not image bytes) and ``plot_<name>(frame, preset) ->
Figure``. ``save_figure`` writes PNG + PDF without timestamps.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .common import OURS, PAPER, as_number, values_of  # noqa: E402
from .registry import FIG4A_OPERATORS, FIG4B_SELECTIONS, SHORT_NAMES, is_grafted  # noqa: E402
from .search import PLAIN as SEARCH_PLAIN, SITES as SEARCH_SITES, fid_std as search_fid_std  # noqa: E402

FIGURES = {  # target -> figure names it produces
    "table1": ("table1_activation_stats",),
    "fig2": ("fig2_locality",),
    "fig4a": ("fig4a_data_scale",),
    "fig4b": ("fig4b_layer_selection",),
    "table3": ("pareto_fid_vs_flops",),
}
PAPER_LOCALITY_CLAIM = "paper: 15 of 28 layers keep >50 % of attention mass within k=32; per-layer values UNKNOWN"
SOURCE_TITLES = {OURS: "reproduced (ours)", PAPER: "paper (DiT-XL/2)"}


def _style():
    return sns.axes_style("whitegrid")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, stem: Path) -> dict[str, bytes]:
    """PNG and PDF bytes of ``fig`` (no creation dates, so a rebuild of the same data gives the same PDF)."""
    out = {}
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Creator": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
        out[f"{stem}.{ext}"] = buf.getvalue()
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Fig. 2 — band-k locality per layer
# --------------------------------------------------------------------------------------------------------------------


def fig2_select_k(rows: Sequence[dict]) -> int:
    """The k the driver ranks layers by (``extra.select_k``; the paper reports k = 32)."""
    for r in rows:
        k = as_number((r.get("extra") or {}).get("select_k"))
        if r["status"] == "done" and k is not None:
            return int(k)
    return 32


def fig2_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Columns layer (1-based), k, locality — from the first done row carrying ``extra.locality``
    (``{"k": [...], "layers": [[L_k for k in ks] for each layer]}``)."""
    records = []
    for r in rows:
        loc = (r.get("extra") or {}).get("locality")
        if r["status"] != "done" or not isinstance(loc, dict):
            continue
        ks = list(loc.get("k") or [])
        layers = list(loc.get("layers") or [])
        if layers and all(isinstance(v, (list, tuple)) for v in layers):
            if len(layers[0]) != len(ks) and len(layers) == len(ks):  # given as [k][layer]: transpose
                layers = [list(col) for col in zip(*layers)]
            for li, vals in enumerate(layers):
                for k, v in zip(ks, vals):
                    if as_number(v) is not None:
                        records.append({"layer": li + 1, "k": int(k), "locality": round(float(v), 4)})
        break
    return pd.DataFrame(records, columns=["layer", "k", "locality"])


def plot_fig2(frame: pd.DataFrame, preset: str, select_k: int = 32) -> "plt.Figure":
    with _style():
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        if frame.empty:
            _empty(ax, f"no reproduced locality yet (preset {preset})\n{PAPER_LOCALITY_CLAIM}")
        else:
            data = frame.assign(k=frame["k"].map(lambda k: f"k={k}"))
            order = [f"k={k}" for k in sorted(frame["k"].unique())]
            sns.lineplot(data=data, x="layer", y="locality", hue="k", hue_order=order, marker="o", ax=ax,
                         palette="viridis")
            ax.axhline(0.5, ls="--", lw=0.8, color="0.5")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("layer (1-based)")
            ax.set_ylabel("band-k locality $L_k$")
            nlayers = int(frame["layer"].max())
            title = f"MHA locality, preset {preset}"
            if select_k in set(frame["k"]):
                n = int((frame[frame["k"] == select_k]["locality"] > 0.5).sum())
                title += f": ours {n} of {nlayers} layers >50 % at k={select_k}"
            ax.set_title(title + f"\n({PAPER_LOCALITY_CLAIM})", fontsize=8)
            ax.legend(fontsize=7, title=None, ncol=2)
        return fig


# --------------------------------------------------------------------------------------------------------------------
# Table 1 (i)/(ii) — activation statistics of MHA and MLP outputs per layer (ours only: the paper's are UNKNOWN)
# --------------------------------------------------------------------------------------------------------------------

ACTIVATION_STATS = (("variance", "variance"), ("max_abs", "max |x|"), ("outlier_frac", "outlier share (%)"))
ACTIVATION_SITES = {"attn-activation_stats": "MHA", "mlp-activation_stats": "MLP"}


def activation_stats_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Columns site (MHA/MLP), layer (1-based), statistic, value — from the done ``activation_stats`` rows
    (``extra.activation_stats.layers``); the outlier share in percent."""
    records = []
    for r in rows:
        site = ACTIVATION_SITES.get(r["row"])
        stats = (r.get("extra") or {}).get("activation_stats")
        if site is None or r.get("origin") == "unmatched" or r["status"] != "done" or not isinstance(stats, dict):
            continue
        for s in stats.get("layers") or []:
            for key, name in ACTIVATION_STATS:
                v = as_number(s.get(key))
                if v is not None and as_number(s.get("layer")) is not None:
                    records.append({"site": site, "layer": int(s["layer"]) + 1, "statistic": name,
                                    "value": float(f"{v * (100 if key == 'outlier_frac' else 1):.6g}")})
    return pd.DataFrame(records, columns=["site", "layer", "statistic", "value"])


def plot_activation_stats(frame: pd.DataFrame, preset: str) -> "plt.Figure":
    with _style():
        fig, axes = plt.subplots(1, len(ACTIVATION_STATS), figsize=(9.6, 3.0))
        for ax, (_, name) in zip(axes, ACTIVATION_STATS):
            data = frame[frame["statistic"] == name]
            if data.empty:
                _empty(ax, f"no reproduced statistics yet\n(preset {preset})")
                ax.set_title(name, fontsize=9)
                continue
            sns.lineplot(data=data, x="layer", y="value", hue="site", hue_order=["MHA", "MLP"], marker="o", ax=ax,
                         palette="deep")
            if name != "outlier share (%)" and (data["value"] > 0).all():
                ax.set_yscale("log")  # spans orders of magnitude across layers
            else:
                ax.set_ylim(bottom=0)
            ax.set_xlabel("layer (1-based)")
            ax.set_ylabel(name)
            ax.set_title(name, fontsize=9)
            ax.legend(fontsize=7, title=None)
        fig.suptitle(f"Teacher MHA / MLP output statistics per layer, preset {preset} (ours; the paper's panel "
                     "values are not published)", fontsize=9)
        fig.tight_layout()
        return fig


# --------------------------------------------------------------------------------------------------------------------
# Fig. 4a / 4b — bars, reproduced and paper side by side
# --------------------------------------------------------------------------------------------------------------------


def fig4a_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Columns operator, data ("10 %"/"20 %"), source, fid, origin."""
    records = []
    for r in rows:
        if r.get("origin") == "unmatched":
            continue
        data = as_number(r["extra"].get("stage2_data"))
        name = SHORT_NAMES.get(r["operator"], r["operator"])
        for src in (OURS, PAPER):
            fid = as_number(values_of(r, src, "metrics").get("fid"))
            if fid is not None:
                records.append({"operator": name, "data": f"{data:g} %", "source": src, "fid": round(fid, 4),
                                "origin": r.get("origin") if src == OURS else "paper"})
    return pd.DataFrame(records, columns=["operator", "data", "source", "fid", "origin"])


def fig4b_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Columns selection, source, fid."""
    records = []
    for r in rows:
        for src in (OURS, PAPER):
            fid = as_number(values_of(r, src, "metrics").get("fid"))
            if fid is not None:
                records.append({"selection": str(r.get("strategy")), "source": src, "fid": round(fid, 4)})
    return pd.DataFrame(records, columns=["selection", "source", "fid"])


def _bar_panels(frame: pd.DataFrame, x: str, order: list[str], hue: str | None, hue_order, title: str,
                preset: str, expected: list[tuple]) -> "plt.Figure":
    """Two bar panels (ours, paper); ``expected`` lists the (x[, hue]) bars a complete reproduction has, so the
    ours panel can name the ones not done yet."""
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.4))
        for ax, src in zip(axes, (OURS, PAPER)):
            part = frame[frame["source"] == src]
            ax.set_title(SOURCE_TITLES[src], fontsize=9)
            if src == OURS:
                have = set(zip(*(part[c] for c in ([x, hue] if hue else [x]))))
                todo = [" ".join(str(v) for v in key) for key in expected if key not in have]
                if todo and not part.empty:
                    ax.set_title(SOURCE_TITLES[src] + "\nnot done: " + ", ".join(todo), fontsize=7)
            if part.empty:
                _empty(ax, f"no reproduced results yet (preset {preset})" if src == OURS else "not published")
                continue
            sns.barplot(data=part, x=x, y="fid", order=order, hue=hue, hue_order=hue_order, ax=ax,
                        palette="deep" if hue else None, color=None if hue else "C0", legend=False)
            for container in ax.containers:
                ax.bar_label(container, fmt="%.2f", fontsize=6, padding=1)
            ax.set_xlabel("")
            ax.set_ylabel("FID (lower is better)")
            ax.tick_params(axis="x", labelsize=7, rotation=20)
        if hue:
            colors = sns.color_palette("deep", len(hue_order))
            handles = [matplotlib.patches.Patch(color=c, label=h) for c, h in zip(colors, hue_order)]
            fig.legend(handles=handles, title="stage-2 data", fontsize=7, title_fontsize=7, loc="upper right",
                       ncol=len(handles))
        fig.suptitle(title, fontsize=10, x=0.02, ha="left")
        fig.tight_layout()
        return fig


def plot_fig4a(frame: pd.DataFrame, preset: str) -> "plt.Figure":
    order = [SHORT_NAMES[op] for op in FIG4A_OPERATORS]
    expected = [(op, d) for op in order for d in ("10 %", "20 %")]
    return _bar_panels(frame, "operator", order, "data", ["10 %", "20 %"],
                       f"Fig. 4a: stage-2 data 10 % vs 20 % (50 % interleaved MHA), preset {preset}", preset,
                       expected)


def plot_fig4b(frame: pd.DataFrame, preset: str) -> "plt.Figure":
    names = {"interleaved50": "interleaved", "top_local": "top-local", "low_local": "low-local", "deep": "deep"}
    frame = frame.assign(selection=frame["selection"].map(lambda s: names.get(s, s)))
    order = list(dict.fromkeys([names[s] for s, _ in FIG4B_SELECTIONS] + list(frame["selection"])))
    return _bar_panels(frame, "selection", order, None, None,
                       f"Fig. 4b: layer selection for Hyena-X at 50 %, preset {preset}", preset,
                       [(s,) for s in order])


# --------------------------------------------------------------------------------------------------------------------
# Pareto: FID vs ΔFLOPs op of every grafted Table-4 row
# --------------------------------------------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when minimising both coordinates (x = ΔFLOPs, y = FID), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_y = [], float("inf")
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def pareto_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Columns row, operator, site, ratio, source, fid, d_flops_op, on_front — grafted rows with both values."""
    records = []
    for r in rows:
        if not is_grafted(r):
            continue
        for src in (OURS, PAPER):
            fid = as_number(values_of(r, src, "metrics").get("fid"))
            flops = as_number(values_of(r, src, "efficiency").get("d_flops_op"))
            if fid is None or flops is None:
                continue
            records.append({"row": r["row"], "operator": SHORT_NAMES.get(r["operator"], str(r["operator"])),
                            "site": r.get("site"), "ratio": as_number(r.get("ratio")), "source": src,
                            "fid": round(fid, 4), "d_flops_op": round(flops, 4)})
    frame = pd.DataFrame(records, columns=["row", "operator", "site", "ratio", "source", "fid", "d_flops_op"])
    frame["on_front"] = False
    for src in (OURS, PAPER):
        idx = frame.index[frame["source"] == src]
        pts = list(zip(frame.loc[idx, "d_flops_op"], frame.loc[idx, "fid"]))
        for i in pareto_front(pts):
            frame.loc[idx[i], "on_front"] = True
    return frame


def plot_pareto(frame: pd.DataFrame, preset: str, baselines: dict[str, float | None] | None = None) -> "plt.Figure":
    baselines = baselines or {}
    operators = list(dict.fromkeys(SHORT_NAMES.values()))
    palette = dict(zip(operators, sns.color_palette("tab10", len(operators))))
    frame = frame.assign(ratio=frame["ratio"].map(lambda r: "?" if r != r else f"{r:.0f} %"))
    ratios = sorted(set(frame["ratio"]), key=lambda t: (len(t), t))
    fallback = iter(("D", "^", "v", "P", "*", "h"))
    markers = {r: {"50 %": "o", "75 %": "s", "100 %": "X"}.get(r) or next(fallback, "o") for r in ratios}
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8))
        for ax, src in zip(axes, (OURS, PAPER)):
            part = frame[frame["source"] == src]
            ax.set_title(SOURCE_TITLES[src], fontsize=9)
            if part.empty:
                _empty(ax, f"no reproduced results yet (preset {preset})")
                continue
            sns.scatterplot(data=part, x="d_flops_op", y="fid", hue="operator", hue_order=operators,
                            style="ratio", style_order=ratios, markers=markers, palette=palette, s=45, ax=ax,
                            legend=src == PAPER)
            front = part[part["on_front"]].sort_values("d_flops_op")
            ax.step(front["d_flops_op"], front["fid"], where="post", color="0.3", lw=1, ls="--", zorder=0,
                    label="Pareto front")
            base = baselines.get(src)
            if base is not None:
                ax.axhline(base, color="0.5", lw=0.8, ls=":")
                ax.annotate("baseline", (ax.get_xlim()[0], base), fontsize=6, color="0.4", va="bottom")
            fids = part["fid"]
            if fids.min() > 0 and fids.max() / fids.min() > 5:
                ax.set_yscale("log")
                plain = matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}")
                ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(r"$\Delta$FLOPs op. (%)")
            ax.set_ylabel("FID (lower is better)")
            if src == PAPER:
                ax.set_title(SOURCE_TITLES[src] + "\n✗ rows (FID > 50) are unpublished: not shown", fontsize=8)
        if axes[1].get_legend() is not None:
            axes[1].legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left", borderaxespad=0)
        fig.suptitle(f"Quality vs efficiency of every Table-4 row, preset {preset}", fontsize=10)
        fig.tight_layout()
        return fig


# --------------------------------------------------------------------------------------------------------------------
# The search target (beyond the paper): FID vs ΔFLOPs, one line per strategy
# --------------------------------------------------------------------------------------------------------------------


def search_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Columns site, strategy, budget, d_flops_op, fid, fid_std, layers (done rows with an FID and a ΔFLOPs)."""
    records = []
    for r in rows:
        if r["status"] != "done" or r.get("site") not in SEARCH_SITES:
            continue
        fid = as_number(values_of(r, OURS, "metrics").get("fid"))
        op = as_number(values_of(r, OURS, "efficiency").get("d_flops_op"))
        if fid is None or op is None:
            continue
        strategy = (r.get("extra") or {}).get("strategy") or r.get("strategy")
        records.append({"site": SEARCH_SITES[r["site"]], "strategy": SEARCH_PLAIN.get(strategy, strategy), "budget": r.get("ratio"),
                        "d_flops_op": round(op, 4), "fid": round(fid, 4), "fid_std": search_fid_std(r),
                        "layers": " ".join(map(str, (r.get("extra") or {}).get("layers") or []))})
    return pd.DataFrame(records, columns=["site", "strategy", "budget", "d_flops_op", "fid", "fid_std", "layers"])


def plot_search(frame: pd.DataFrame, preset: str):
    """FID against ΔFLOPs op, one line per strategy (across its budgets), one panel per site; error bars = spread."""
    with _style():
        fig, axes = plt.subplots(1, len(SEARCH_SITES), figsize=(8.0, 3.4))
        order = [s for s in SEARCH_PLAIN.values() if s in set(frame["strategy"])] if not frame.empty else []
        palette = dict(zip(SEARCH_PLAIN.values(), sns.color_palette("deep", len(SEARCH_PLAIN))))
        for ax, site in zip(axes, SEARCH_SITES.values()):
            part = frame[frame["site"] == site].sort_values(["strategy", "d_flops_op"]) if not frame.empty else frame
            ax.set_title(site, fontsize=9)
            if part.empty:
                _empty(ax, f"no results yet (preset {preset})")
                continue
            for strategy in order:
                line = part[part["strategy"] == strategy]
                if line.empty:
                    continue
                ax.errorbar(line["d_flops_op"], line["fid"], yerr=line["fid_std"].astype(float).fillna(0.0),
                            marker="o", ms=4, lw=1.2, capsize=2, label=strategy, color=palette[strategy])
            ax.set_xlabel("ΔFLOPs op (%)")
            ax.set_ylabel("FID (lower is better)")
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(handles))
        fig.suptitle(f"Where to graft (beyond the paper), preset {preset}", fontsize=10, x=0.02, ha="left")
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return fig


# --------------------------------------------------------------------------------------------------------------------
# Entry point used by the builder
# --------------------------------------------------------------------------------------------------------------------


def figure_outputs(target: str, rows: Sequence[dict], preset: str) -> dict[str, bytes]:
    """``{file name: bytes}`` for every figure of ``target`` (PNG, PDF and the CSV of its data)."""
    out: dict[str, bytes] = {}
    if target == "table1":
        frame = activation_stats_frame(rows)
        fig, name = plot_activation_stats(frame, preset), "table1_activation_stats"
    elif target == "fig2":
        frame = fig2_frame(rows)
        fig, name = plot_fig2(frame, preset, fig2_select_k(rows)), "fig2_locality"
    elif target == "fig4a":
        frame = fig4a_frame(rows)
        fig, name = plot_fig4a(frame, preset), "fig4a_data_scale"
    elif target == "fig4b":
        frame = fig4b_frame(rows)
        fig, name = plot_fig4b(frame, preset), "fig4b_layer_selection"
    elif target == "search":
        frame = search_frame(rows)
        fig, name = plot_search(frame, preset), "search_fid_vs_flops"
    elif target == "table3":
        frame = pareto_frame(rows)
        base = next((r for r in rows if r["row"] == "baseline"), None)
        baselines = {src: as_number(values_of(base, src, "metrics").get("fid")) for src in (OURS, PAPER)} if base \
            else {}
        fig, name = plot_pareto(frame, preset, baselines), "pareto_fid_vs_flops"
    else:
        return out
    out.update(save_figure(fig, Path(name)))
    out[f"{name}.csv"] = frame.to_csv(index=False, lineterminator="\n").encode()
    return out
