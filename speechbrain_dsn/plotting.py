"""Figures of the DSN evaluation (Section V of the paper).

* ``plot_utilization``: predicted utilization over time above the mixture
  spectrogram, with overlap regions shaded (Figs. 6, 8 and 14);
* ``plot_tradeoff``: SI-SDRi against average utilization, with GMAC/s on a
  top axis (Figs. 5, 7 and 10);
* ``plot_level_shares``: share of each utilization level per segment type
  (silence / one speaker / overlap), as stacked bars (Figs. 9 and 15).

Figures are drawn on a bare ``matplotlib.figure.Figure`` with an Agg canvas,
so they work headless and never touch pyplot's global backend state.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ArrayLike = Union[np.ndarray, torch.Tensor]


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_utilization(
    mixture: ArrayLike,
    utilization: ArrayLike,
    sample_rate: int,
    frame_hop: int,
    path: str,
    levels: Sequence[float],
    segment_types: Optional[ArrayLike] = None,
    title: Optional[str] = None,
) -> str:
    """Plots utilization over time above the mixture spectrogram (Figs. 6, 8).

    Arguments
    ---------
    mixture : numpy.ndarray or torch.Tensor
        Input mixture, shape [T].
    utilization : numpy.ndarray or torch.Tensor
        Utilization per encoder frame, shape [F].
    sample_rate : int
        Sampling rate in Hz.
    frame_hop : int
        Encoder stride in samples (frame ``t`` starts at ``t * frame_hop``).
    path : str
        Output PNG file.
    levels : sequence of float
        Utilization levels, used as y ticks.
    segment_types : numpy.ndarray or torch.Tensor, optional
        Segment type per frame, shape [F]; overlap frames are shaded yellow
        and single-speaker frames light grey in the spectrogram.
    title : str, optional
        Figure title.

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "util.png")
    >>> u = np.repeat([0.125, 1.0, 0.125], 333)
    >>> plot_utilization(np.random.randn(8000), u, 8000, 8, path, (0.125, 1.0)) == path
    True
    """
    signal = _to_numpy(mixture).astype(float).reshape(-1)
    util = _to_numpy(utilization).astype(float).reshape(-1)
    times = np.arange(util.size) * frame_hop / sample_rate
    duration = signal.size / sample_rate

    fig = Figure(figsize=(8, 4.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    top.step(times, util, where="post", color="tab:blue", linewidth=1.2)
    top.set_yticks(list(levels))
    top.set_ylim(0, max(levels) * 1.1)
    top.set_ylabel("Utilization")
    top.grid(alpha=0.3)

    nfft = 256 if sample_rate <= 16000 else 512
    bottom.specgram(signal, NFFT=nfft, Fs=sample_rate, noverlap=nfft * 3 // 4, cmap="magma")
    if segment_types is not None:
        types = _to_numpy(segment_types).reshape(-1)
        if types.shape != util.shape:
            raise ValueError(f"segment_types {types.shape} must match utilization {util.shape}")
        edges = np.append(times, times[-1] + frame_hop / sample_rate)
        # fill_between over the axis transform shades whole-height spans.
        for value, color, alpha in ((1, "white", 0.15), (2, "yellow", 0.35)):
            bottom.fill_between(
                edges[:-1],
                0,
                1,
                where=types == value,
                step="post",
                color=color,
                alpha=alpha,
                linewidth=0,
                transform=bottom.get_xaxis_transform(),
            )
    bottom.set_xlim(0, duration)
    bottom.set_xlabel("Time (s)")
    bottom.set_ylabel("Frequency (Hz)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_tradeoff(
    summary_rows: Sequence[Mapping],
    path: str,
    x: str = "avg_utilization",
    y: str = "si_sdri",
    marker_by: str = "gating",
    color_by: str = "condition",
    reference: Optional[Sequence[Tuple[float, float]]] = None,
    reference_label: str = "static",
) -> str:
    """Plots SI-SDRi against average utilization (Figs. 5, 7, 10).

    One marker shape per ``marker_by`` value (e.g. gating mode or model), one
    colour per ``color_by`` value (e.g. overlap ratio). With more than one
    condition, the mean over conditions is drawn in red. If the rows carry
    ``gmacs``, a top axis gives GMAC/s from an affine fit to ``x``.
    ``reference`` points (e.g. the static networks' averages) are joined by a
    dashed line: a dynamic network above it beats interpolating between them.

    Arguments
    ---------
    summary_rows : sequence of dict
        Rows from ``summarize``.
    path : str
        Output PNG file.
    x : str
        Key for the x axis.
    y : str
        Key for the y axis.
    marker_by : str
        Key that selects the marker shape.
    color_by : str
        Key that selects the colour.
    reference : sequence of (x, y), optional
        Points joined by a dashed grey line, in order of ``x``.
    reference_label : str
        Legend entry of the line.

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> import tempfile, os
    >>> rows = [{"condition": c, "gating": g, "avg_utilization": u,
    ...          "si_sdri": s, "gmacs": 4 + 24 * u}
    ...         for c, g, u, s in [("ov100", "static", 1.0, 20.0),
    ...                            ("ov25", "dsn", 0.4, 19.0)]]
    >>> path = os.path.join(tempfile.mkdtemp(), "tradeoff.png")
    >>> plot_tradeoff(rows, path, reference=[(0.125, 17.0), (1.0, 20.0)]) == path
    True
    """
    rows = list(summary_rows)
    markers = "osD^vP*Xph"
    marker_keys = list(dict.fromkeys(row.get(marker_by) for row in rows))
    color_keys = list(dict.fromkeys(row.get(color_by) for row in rows))
    colors = [f"C{i % 10}" for i in range(len(color_keys))]

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for row in rows:
        ax.scatter(
            row[x],
            row[y],
            s=45,
            marker=markers[marker_keys.index(row.get(marker_by)) % len(markers)],
            color=colors[color_keys.index(row.get(color_by))],
        )
    if len(color_keys) > 1:
        for i, key in enumerate(marker_keys):
            group = [row for row in rows if row.get(marker_by) == key]
            ax.scatter(
                np.mean([r[x] for r in group]),
                np.mean([r[y] for r in group]),
                s=70,
                marker=markers[i % len(markers)],
                color="red",
                edgecolor="black",
            )
    if reference:
        xs, ys = zip(*sorted(reference))
        ax.plot(xs, ys, linestyle="--", color="grey", linewidth=1, zorder=0, label=reference_label)
    # Legend proxies: marker shapes (black) and colours (circles).
    for i, key in enumerate(marker_keys):
        ax.scatter([], [], marker=markers[i % len(markers)], color="black", label=str(key))
    for key, color in zip(color_keys, colors):
        ax.scatter([], [], marker="o", color=color, label=str(key))
    if len(color_keys) > 1:
        ax.scatter([], [], marker="o", color="red", label="average")
    ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("Average utilization" if x == "avg_utilization" else x)
    ax.set_ylabel("SI-SDRi (dB)" if y == "si_sdri" else y)
    ax.grid(alpha=0.3)

    pairs = np.array(
        [(row[x], row["gmacs"]) for row in rows if row.get("gmacs") is not None and np.isfinite(row["gmacs"])],
        dtype=float,
    ).reshape(-1, 2)
    if len(np.unique(pairs[:, 0])) >= 2:
        slope, intercept = np.polyfit(pairs[:, 0], pairs[:, 1], 1)
        if abs(slope) > 1e-9:
            top = ax.secondary_xaxis(
                "top",
                functions=(
                    lambda u: intercept + slope * u,
                    lambda g: (g - intercept) / slope,
                ),
            )
            top.set_xlabel("GMAC/s")
    fig.tight_layout()
    return _save(fig, path)


def plot_level_shares(
    shares: Mapping[str, Sequence[float]],
    levels: Sequence[float],
    path: str,
    title: Optional[str] = None,
) -> str:
    """Plots the share of each utilization level per segment type (Figs. 9, 15).

    Arguments
    ---------
    shares : dict of str to sequence of float
        Segment type (e.g. ``silence``, ``single``, ``overlap``, in plotting
        order) to the share of each level, in the order of ``levels``.
    levels : sequence of float
        The utilization levels.
    path : str
        Output PNG file.
    title : str, optional
        Figure title.

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "shares.png")
    >>> shares = {"silence": [0.9, 0.1], "single": [0.5, 0.5], "overlap": [0.2, 0.8]}
    >>> plot_level_shares(shares, (0.125, 1.0), path) == path
    True
    """
    names = list(shares)
    values = np.array([list(shares[name]) for name in names], dtype=float).reshape(len(names), -1)
    if values.shape[1] != len(levels):
        raise ValueError(f"expected {len(levels)} shares per segment type (one per level), got {values.shape[1]}")
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    bottom = np.zeros(len(names))
    for k, level in enumerate(levels):
        ax.bar(names, values[:, k], bottom=bottom, color=f"C{k}", label=f"U = {level:g}")
        for i, share in enumerate(values[:, k]):
            if share >= 0.06:  # label only bars tall enough to hold the text
                ax.text(i, bottom[i] + share / 2, f"{100 * share:.0f}%", ha="center", va="center", fontsize=8)
        bottom += np.nan_to_num(values[:, k])
    ax.set_ylim(0, 1)
    ax.set_ylabel("Share of frames")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
