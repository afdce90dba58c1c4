"""The benchmark summary as a markdown table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sb3_crystal.benchmark.statistics import SUCCESS_FORCE_CALLS

__all__ = ["format_table"]


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def _milliseconds(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{1e3 * seconds:.1f}"


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as an aligned markdown table: force calls over converged runs (median, p10, p90, mean), the
    fractions converged, converged within the force-call budget and converged into the reference minimum, and the
    median wall time per relaxation in milliseconds."""
    budget = f"≤ {SUCCESS_FORCE_CALLS} calls"
    headers = [
        "structure",
        "N",
        "optimizer",
        "ε (eV/Å)",
        "median",
        "p10",
        "p90",
        "mean",
        "success",
        budget,
        "same min",
        "ref min",
        "wall (ms)",
    ]
    body = [
        [
            str(s["structure"]),
            str(s["n_atoms"]),
            str(s["optimizer"]),
            f"{float(s['fmax']):g}",
            _cell(float(s["median"])),
            _cell(float(s["p10"])),
            _cell(float(s["p90"])),
            _cell(float(s["mean"])),
            f"{float(s['success_rate']):.0%}",
            f"{float(s['success_within_budget']):.0%}",
            f"{float(s['same_minimum_rate']):.0%}",
            _cell(bool(s["reference_is_minimum"])),
            _milliseconds(float(s["median_wall_time"])),
        ]
        for s in summary
    ]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)]
    numeric = {i for i, h in enumerate(headers) if h not in ("structure", "N", "optimizer", "ref min")}

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule, *(line(b) for b in body)])
