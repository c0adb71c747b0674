"""Domain maps: spots at their tissue coordinates, coloured by annotation and by predicted domain.

Panels, left to right: the manual annotation (when there are labels), the predicted domains after
spatial refinement, and the raw k-means domains. The y axis points down, as in the tissue image,
and both axes share one scale. A predicted domain takes the colour of the annotation class it is
matched to by the Hungarian matching that ACC uses (:func:`scrcl.eval.metrics.match_clusters`, computed
on the labelled spots, separately for each panel), so one colour means one layer in every panel.
Domains left unmatched get colours no annotation class uses; unlabelled spots are grey. Labels only
colour and score the picture; nothing here feeds back into training.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from scrcl.eval.metrics import match_clusters
from scrcl.eval.plots import save_figure

__all__ = ["UNLABELLED_COLOUR", "palette", "annotation_colours", "matched_colours", "draw_domain_map", "domain_map_figure"]

UNLABELLED_COLOUR = "#c8c8c8"
PANEL_INCHES = 4.6


def palette(n: int) -> list[str]:
    """``n`` distinct hex colours, none of them grey: tab10 without its grey, then tab20b, tab20c, hsv."""
    import matplotlib
    from matplotlib.colors import to_hex

    tab10 = [to_hex(c) for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 7]
    more = [to_hex(c) for name in ("tab20b", "tab20c") for c in matplotlib.colormaps[name].colors]
    colours = tab10 + [c for c in more if not _is_grey(c)]
    if n > len(colours):
        hsv = matplotlib.colormaps["hsv"]
        colours += [to_hex(hsv(i / (n - len(colours)))) for i in range(n - len(colours))]
    return colours[:n]


def _is_grey(colour: str) -> bool:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return max(r, g, b) - min(r, g, b) < 12


def _natural_order(values) -> list:
    """Categories in reading order: L2 before L10 before WM, numbers by value."""
    def key(v):
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(v)) if part]

    return sorted(set(values), key=key)


def _truth_array(truth) -> tuple[np.ndarray, np.ndarray]:
    """(annotation as an object array of str, mask of labelled spots); None/NaN/'' mean unlabelled."""
    import pandas as pd

    values = np.asarray(truth, dtype=object)
    known = np.array([not pd.isna(v) and str(v) != "" for v in values], dtype=bool)
    out = np.array([str(v) if k else None for v, k in zip(values, known)], dtype=object)
    return out, known


def annotation_colours(categories) -> dict[str, str]:
    """Annotation class -> colour, in natural order (L1, L2, …, WM)."""
    cats = _natural_order(categories)
    return dict(zip(cats, palette(len(cats))))


def matched_colours(pred, truth=None, truth_colours: dict | None = None) -> tuple[dict, dict]:
    """Colour and legend text of every predicted domain.

    With an annotation, each domain gets the colour of its Hungarian-matched class (matching on the
    labelled spots only); unmatched domains get colours the annotation does not use. Returns
    ({domain: colour}, {domain: legend text}).
    """
    pred = np.asarray(pred)
    domains = _natural_order(pred.tolist())
    mapping: dict = {}
    if truth is not None:
        truth, known = _truth_array(truth)
        if known.any():
            mapping = match_clusters(truth[known], pred[known])
        truth_colours = truth_colours or annotation_colours(truth[known].tolist())
    truth_colours = truth_colours or {}
    spare = iter(palette(len(truth_colours) + len(domains))[len(truth_colours):])
    colours, names = {}, {}
    for d in domains:
        matched = mapping.get(d)
        if matched is not None and matched in truth_colours:
            colours[d], names[d] = truth_colours[matched], f"{d} → {matched}"
        else:
            colours[d], names[d] = next(spare), f"{d}" + (" (unmatched)" if truth_colours else "")
    order = list(truth_colours)  # legend: matched domains in annotation order, then the others
    rank = {d: order.index(mapping[d]) if mapping.get(d) in truth_colours else len(order) for d in domains}
    names = {d: names[d] for d in sorted(domains, key=lambda d: rank[d])}
    return colours, names


def _spot_size(coords: np.ndarray) -> float:
    """Marker area (points²) so that neighbouring spots just touch on a panel of PANEL_INCHES."""
    from sklearn.neighbors import KDTree

    if coords.shape[0] < 2:
        return 20.0
    dist = KDTree(coords).query(coords, k=2)[0][:, 1]
    spacing = float(np.median(dist[dist > 0])) if np.any(dist > 0) else 1.0
    extent = float(np.ptp(coords, axis=0).max()) or 1.0
    diameter = 0.9 * spacing * PANEL_INCHES * 72 / extent
    return float(np.clip(diameter**2, 0.5, 60.0))


def _panel(ax, coords, colour_of, values, legend, title, size):
    """One map: spots coloured by ``colour_of[value]``, a legend in ``legend`` order."""
    values = np.asarray(values, dtype=object)
    for value in legend:
        mask = np.asarray(values == value, dtype=bool)
        if mask.any():
            ax.scatter(coords[mask, 0], coords[mask, 1], s=size, color=colour_of[value], linewidths=0, label=legend[value])
    ax.set_aspect("equal")
    ax.invert_yaxis()  # image rows grow downwards
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    if len(legend) <= 30:
        ax.legend(markerscale=max(1.0, 6 / np.sqrt(size)), fontsize=7, frameon=False, loc="upper center",
                  bbox_to_anchor=(0.5, -0.01), ncol=min(4, len(legend)))


def _ari_text(truth, pred) -> str:
    from sklearn.metrics import adjusted_rand_score

    truth, known = _truth_array(truth)
    if not known.any():
        return ""
    return f" (ARI {adjusted_rand_score(truth[known].astype(str), np.asarray(pred)[known]):.3f})"


def draw_domain_map(coords, pred, *, pred_unrefined=None, truth=None, radius: int = 0, title: str = ""):
    """The domain-map matplotlib Figure (the caller closes it).

    ``coords`` (N, 2) spot positions (x, y); ``pred`` (N,) the reported domains (refined when
    ``radius`` > 0); ``pred_unrefined`` (N,) the raw k-means domains (a third panel when given);
    ``truth`` (N,) the annotation, None/NaN for unlabelled spots (an annotation panel when given).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords = np.asarray(coords, dtype=np.float64)[:, :2]
    pred = np.asarray(pred)
    if pred.shape[0] != coords.shape[0]:
        raise ValueError(f"pred has {pred.shape[0]} spots but coords has {coords.shape[0]}")
    size = _spot_size(coords)
    panels = []
    truth_colours = None
    if truth is not None:
        values, known = _truth_array(truth)
        truth_colours = annotation_colours(values[known].tolist())
        colour_of = {**truth_colours, None: UNLABELLED_COLOUR}
        legend = {c: c for c in truth_colours}
        if not known.all():
            legend[None] = f"unlabelled ({int((~known).sum())})"
        panels.append(("manual annotation", values, colour_of, legend))
    refined_name = f"predicted domains, refined (radius {radius})" if radius > 0 else "predicted domains"
    for name, values in ((refined_name, pred), ("predicted domains, unrefined (k-means)", pred_unrefined)):
        if values is None:
            continue
        values = np.asarray(values)
        colour_of, legend = matched_colours(values, truth, truth_colours)
        panels.append((name + (_ari_text(truth, values) if truth is not None else ""), values.tolist(), colour_of, legend))
    fig, axes = plt.subplots(1, len(panels), figsize=(PANEL_INCHES * len(panels), PANEL_INCHES + 0.4), squeeze=False)
    for ax, (name, values, colour_of, legend) in zip(axes[0], panels):
        _panel(ax, coords, colour_of, values, legend, name, size)
    if title:
        fig.suptitle(title)
    return fig


def domain_map_figure(coords, pred, path: Path, *, pred_unrefined=None, truth=None, radius: int = 0, title: str = "") -> Path:
    """Draw the domain map (see :func:`draw_domain_map`) and write it atomically as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = draw_domain_map(coords, pred, pred_unrefined=pred_unrefined, truth=truth, radius=radius, title=title)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return Path(path)
