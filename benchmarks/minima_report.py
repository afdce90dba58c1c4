"""Which structures are true minima of the potential: the paper's sets and the built-in prototypes.

Run by hand: ``python benchmarks/minima_report.py [--shared ../shared/paper_structures] [--write-docs]``.
Each structure is relaxed at fixed cell to fmax ≤ 1e-3 eV/Å (cached) and the lowest eigenvalue of its
fixed-cell Hessian (rigid translations removed) decides minimum or saddle point.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from sb3_crystal.structures import PROTOTYPES, StructureDataset
from sb3_crystal.structures.io import read_structures
from sb3_crystal.structures.minima import SADDLE_TOLERANCE

PAPER_FILES = [
    "AlFe.csv",
    "AlandFe_mono.csv",
    "Al-Fe_N=2-3.csv",
    "Al-Fe_N=4.csv",
    "Al-Fe_N=5.csv",
    "AlFe7.csv",
    "Al8Fe2.csv",
    "Al2Fe18.csv",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_shared = Path(__file__).resolve().parents[1].parent / "shared" / "paper_structures"
    parser.add_argument("--shared", type=Path, default=default_shared, help="folder of the paper's structure CSVs")
    parser.add_argument("--write-docs", action="store_true", help="write docs/minima.md")
    args = parser.parse_args()

    sets: list[tuple[str, list]] = [("prototypes", list(PROTOTYPES))]
    for name in PAPER_FILES:
        path = args.shared / name
        if path.is_file():
            sets.append((name, read_structures(path)))
    lines = [
        "# Minima and saddle points of the Mendelev 2005 Al–Fe potential",
        "",
        f"`python benchmarks/minima_report.py --write-docs`, {time.strftime('%Y-%m-%d')}. Every structure relaxed at fixed "
        "cell to fmax ≤ 1e-3 eV/Å (BFGS, FIRE when BFGS stalls); *saddle* when the lowest eigenvalue of the fixed-cell "
        f"Hessian with rigid translations removed is below {SADDLE_TOLERANCE} eV/Å². 1-atom cells are doubled 2×1×1. "
        "From a saddle point, distorted starts can legitimately relax into other minima.",
        "",
        "| set | structures | minima | saddles | lowest eigenvalue of the saddles (eV/Å²) |",
        "|---|---:|---:|---:|---|",
    ]
    details = [
        "",
        "## Per structure",
        "",
        "| set | source | formula | E (eV/atom) | lowest eigenvalue (eV/Å²) | kind |",
        "|---|---|---|---:|---:|---|",
    ]
    for name, specs in tqdm(sets, desc="sets"):
        dataset = StructureDataset(specs)
        saddles = [r for r in dataset.reports if not r.is_minimum]
        eigen = ", ".join(f"{r.lowest_eigenvalue:.2f}" for r in saddles[:8]) + (" …" if len(saddles) > 8 else "")
        lines.append(f"| {name} | {len(dataset)} | {len(dataset) - len(saddles)} | {len(saddles)} | {eigen} |")
        for r in dataset.reports:
            kind = "minimum" if r.is_minimum else "saddle"
            source = r.source.split("/")[-1]
            energy = r.energy / r.n_atoms
            details.append(f"| {name} | {source} | {r.formula} | {energy:.4f} | {r.lowest_eigenvalue:.3f} | {kind} |")
    text = "\n".join(lines + details) + "\n"
    print(text)
    if args.write_docs:
        (Path(__file__).resolve().parents[1] / "docs" / "minima.md").write_text(text)


if __name__ == "__main__":
    main()
