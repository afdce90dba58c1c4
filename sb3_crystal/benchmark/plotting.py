"""Force calls against the threshold ε, plotted like the paper's Fig. 4."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_crystal.benchmark.files import atomic_write

__all__ = ["plot_force_calls"]


def plot_force_calls(summary: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Force calls vs ε, like the paper's Fig. 4: one panel per structure, one colour per optimizer,
    median (solid, markers), 10–90 % band (shaded) and mean (dashed); log ε axis, decreasing to the right.

    :param summary: rows of :func:`summarize`.
    :param path: PNG file (written atomically).
    :param title: figure title.
    """
    import matplotlib  # plotting is optional for library users

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    structures = list(dict.fromkeys(str(s["structure"]) for s in summary))
    n_panels = max(1, len(structures))
    fig, axes = plt.subplots(1, n_panels, figsize=(4.8 * n_panels + 1.8, 4.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    optimizers = list(dict.fromkeys(str(s["optimizer"]) for s in summary))
    for ax, structure in zip(axes[0], structures, strict=False):
        for j, optimizer in enumerate(optimizers):
            points = sorted(
                (s for s in summary if s["structure"] == structure and s["optimizer"] == optimizer), key=lambda s: s["fmax"]
            )
            if not points:
                continue
            eps = [float(s["fmax"]) for s in points]
            colour = colours[j % len(colours)]
            ax.plot(eps, [s["median"] for s in points], "o-", color=colour, label=optimizer)
            ax.fill_between(eps, [s["p10"] for s in points], [s["p90"] for s in points], color=colour, alpha=0.15)
            ax.plot(eps, [s["mean"] for s in points], "--", color=colour, alpha=0.8)
        ax.set_xscale("log")
        thresholds = sorted({float(s["fmax"]) for s in summary if s["structure"] == structure})
        ax.set_xticks(thresholds, [f"{t:g}" for t in thresholds])  # label the measured ε only
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel("force threshold ε (eV/Å)")
        ax.set_ylabel("force calls")
        n_atoms = next(s["n_atoms"] for s in summary if s["structure"] == structure)
        ax.set_title(f"{structure} (N = {n_atoms})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(title="median, 10–90 %\n(dashed: mean)", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 60 * n_panels)), fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120), ".png", binary=True)
    plt.close(fig)
    return path
