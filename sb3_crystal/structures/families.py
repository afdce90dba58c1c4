"""Fixed, seeded test families of structures that no training run sees, for judging relaxers on unseen cells.

Each family is a list of *cells* and of *starts* built deterministically from seeds reserved for evaluation
(:data:`EVALUATION_SEEDS`): the ``validation`` split for choosing among runs, the ``test`` split only for the
final report, and ``test2``, a second one-time test split. ``test2`` exists because the first test split's starts
became *seen*: the learned-curvature relaxer's stall rule failed on two of them, and a rule chosen after that
could no longer be judged on the same starts. A fix is chosen on ``validation`` and checked once on ``test2``;
nothing is chosen on ``test2``. Training code should refuse all three (:func:`check_training_seed`).

=========================  =================================================================================
family                     cells and starts
=========================  =================================================================================
``random_4-8_beta0.3``     24 random symmetric Al–Fe cells of 4–8 atoms (:class:`RandomCellGenerator`: any
``random_4-8_beta0.5``     composition, volume 0.9–1.1 × Vegard), relaxed at fixed cell with the EAM to
                           1e-3 eV/Å (saddle points pushed off into a true minimum; cells that do neither, and
                           draws the generator cannot build, are replaced by the next draw); 2 starts per cell at
                           β 0.3 or 0.5 Å around the minimum.
``random_10-20_beta0.3``   the same with 12 cells of 10–20 atoms.
``random_10-20_beta0.5``
``bcc_solid_solution_N``   N = 16, 54, 128 (2×2×2, 3×3×3, 4×4×4 bcc cubes at the potential's bcc Fe constant):
                           random Fe–Al occupancy with Al fraction 0.1–0.5; 12, 8 and 6 configurations with 2
                           starts each, ideal sites plus a 0.05 Å rattle (minimum unknown).
``b2_defect_N``            N = 16, 54, 128 sites of B2 AlFe (the potential's constant) with one vacancy (even
                           configurations) or one antisite (odd ones); 12, 8 and 6 configurations × 2 starts
                           from ideal sites plus a 0.05 Å rattle.
=========================  =================================================================================

A second chemistry, on ASE's EMT (the family's ``calculator``, which relaxes its cells and is the default of
:func:`test_family` for it): ``cuau_random_4-8_beta0.3``, 12 random symmetric Cu–Au cells of 4–8 atoms (any
composition, volume 0.9–1.1 × Vegard between EMT's fcc Cu and fcc Au) relaxed with EMT like the Al–Fe random cells,
2 starts per cell at β 0.3 Å; ``cuau_fcc_solid_solution_32``, fcc Cu–Au 2×2×2 cubes with Cu fraction 0.25–0.75 at
Vegard's constant of each configuration, 8 configurations × 2 starts, ideal sites plus a 0.05 Å rattle.

Seeds: family number ``f`` (its place in :data:`FAMILIES`) owns the master seeds
``base + 10_000·f … base + 10_000·f + 9_999`` with ``base`` 7,000,000 (validation), 8,000,000 (test) or
9,000,000 (test2).
Cell ``j`` of a family is drawn from ``default_rng(SeedSequence(cell_seed, spawn_key=(j,)))`` (the two β
families of one size share the cells of their ``cell_family``); start ``i`` (counted over the family) from
``default_rng(start_seed + 1 + i)``, recorded in ``info["start_seed"]``. Rattles and distortions are the
paper's β·U(−1, 1) per coordinate, no two atoms of a start closer than 1.5 Å.

:func:`training_matches` checks a family's cells against a training set with pymatgen's ``StructureMatcher``
(volume scaled, the tolerances the project's training script uses); :func:`test_family` can leave matching
cells out.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from sb3_crystal.calculators import CalculatorSpec, calculator_fingerprint, make_calculator
from sb3_crystal.files import atomic_file
from sb3_crystal.structures.generators import RandomCellGenerator, SolidSolutionGenerator, StructureGenerator
from sb3_crystal.structures.geometry import distort
from sb3_crystal.structures.minima import RelaxationError, default_cache_dir, escape_saddle, relaxed_minimum

__all__ = [
    "EVALUATION_SEEDS",
    "FAMILIES",
    "SPLITS",
    "EvaluationFamily",
    "FamilySpec",
    "ReservedSeedError",
    "check_training_seed",
    "family_seed",
    "test_family",
    "training_matches",
]

SPLITS: tuple[str, ...] = ("validation", "test", "test2")

#: Master seeds reserved for evaluation, per split: no training run may draw structures or starts from them.
EVALUATION_SEEDS: dict[str, range] = {
    "validation": range(7_000_000, 8_000_000),
    "test": range(8_000_000, 9_000_000),
    "test2": range(9_000_000, 10_000_000),
}

#: Seeds of one family within its split's range.
SEEDS_PER_FAMILY = 10_000

#: No two atoms of a start closer than this, Å.
START_MIN_DISTANCE = 1.5

#: Force threshold of the fixed-cell relaxation of the random cells, eV/Å.
MINIMUM_FMAX = 1e-3


class ReservedSeedError(ValueError):
    """A training run asked for a seed that evaluation families use."""


def check_training_seed(seed: int, what: str = "seed") -> None:
    """Raise :class:`ReservedSeedError` when ``seed`` lies in a range of :data:`EVALUATION_SEEDS`.

    :param seed: a seed a training run is about to use (of its structures, starts or environments).
    :param what: what to call it in the message.
    """
    for split, seeds in EVALUATION_SEEDS.items():
        if int(seed) in seeds:
            raise ReservedSeedError(
                f"{what} {seed} lies in the {split} families' reserved seeds {seeds.start:,}–{seeds.stop - 1:,}: "
                "choose a seed outside every range of EVALUATION_SEEDS"
            )


@dataclass(frozen=True)
class FamilySpec:
    """How one family is built.

    :param name: family name.
    :param description: one line for tables.
    :param generator: the cells' generator.
    :param n_cells: cells (relaxed minima or ideal configurations).
    :param starts_per_cell: starts drawn around each cell.
    :param amplitude: β of the starts' distortion (around a minimum) or rattle (of ideal sites), Å.
    :param relax: cells are relaxed minima (True) or ideal sites whose minimum is unknown (False).
    :param cell_family: name of the family whose cells this one shares (``None``: its own).
    :param alternate: a second generator for odd cells (B2: vacancy for even cells, antisite for odd ones).
    :param calculator: the potential the family is defined on (it relaxes the cells and judges the starts).
    """

    name: str
    description: str
    generator: StructureGenerator
    n_cells: int
    starts_per_cell: int
    amplitude: float
    relax: bool
    cell_family: str | None = None
    alternate: StructureGenerator | None = None
    calculator: str = "lammps"


def _families() -> dict[str, FamilySpec]:
    specs: list[FamilySpec] = []
    for size, (low, high), n_cells in (("4-8", (4, 8), 24), ("10-20", (10, 20), 12)):
        generator = RandomCellGenerator(atoms=(low, high))
        first = f"random_{size}_beta0.3"
        for beta in (0.3, 0.5):
            specs.append(
                FamilySpec(
                    name=f"random_{size}_beta{beta:g}",
                    description=f"random Al–Fe cells of {size} atoms, relaxed; starts β {beta:g} Å around the minimum",
                    generator=generator,
                    n_cells=n_cells,
                    starts_per_cell=2,
                    amplitude=beta,
                    relax=True,
                    cell_family=None if beta == 0.3 else first,
                )
            )
    for n, n_cells in ((2, 12), (3, 8), (4, 6)):
        specs.append(
            FamilySpec(
                name=f"bcc_solid_solution_{2 * n**3}",
                description=f"bcc Fe–Al, Al 0.1–0.5, {n}×{n}×{n} cubes; ideal sites + 0.05 Å rattle",
                generator=SolidSolutionGenerator("bcc", size=n, al=(0.1, 0.5), rattle=0.0),
                n_cells=n_cells,
                starts_per_cell=2,
                amplitude=0.05,
                relax=False,
            )
        )
    for n, n_cells in ((2, 12), (3, 8), (4, 6)):
        specs.append(
            FamilySpec(
                name=f"b2_defect_{2 * n**3}",
                description=f"B2 AlFe {n}×{n}×{n} with one vacancy or one antisite; ideal sites + 0.05 Å rattle",
                generator=SolidSolutionGenerator("b2", size=n, vacancies=1, rattle=0.0),
                alternate=SolidSolutionGenerator("b2", size=n, antisites=1, rattle=0.0),
                n_cells=n_cells,
                starts_per_cell=2,
                amplitude=0.05,
                relax=False,
            )
        )
    # a second chemistry on ASE's EMT; appended, so the Al–Fe families keep their seed blocks
    specs.append(
        FamilySpec(
            name="cuau_random_4-8_beta0.3",
            description="random Cu–Au cells of 4-8 atoms (EMT), relaxed; starts β 0.3 Å around the minimum",
            generator=RandomCellGenerator(atoms=(4, 8), elements=("Cu", "Au")),
            n_cells=12,
            starts_per_cell=2,
            amplitude=0.3,
            relax=True,
            calculator="emt",
        )
    )
    specs.append(
        FamilySpec(
            name="cuau_fcc_solid_solution_32",
            description="fcc Cu–Au (EMT), Cu 0.25–0.75, 2×2×2 cubes; ideal sites + 0.05 Å rattle",
            generator=SolidSolutionGenerator("fcc", size=2, elements=("Cu", "Au"), fraction=(0.25, 0.75), rattle=0.0),
            n_cells=8,
            starts_per_cell=2,
            amplitude=0.05,
            relax=False,
            calculator="emt",
        )
    )
    return {spec.name: spec for spec in specs}


#: Every test family by name, in the order that numbers their seed blocks.
FAMILIES: dict[str, FamilySpec] = _families()


def family_seed(name: str, split: str) -> int:
    """First master seed of a family's block (see the module docstring).

    :param name: a family of :data:`FAMILIES`.
    :param split: a name of :data:`SPLITS`.
    """
    if split not in EVALUATION_SEEDS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if name not in FAMILIES:
        raise KeyError(f"Unknown test family '{name}': choose from {', '.join(FAMILIES)}")
    return EVALUATION_SEEDS[split].start + SEEDS_PER_FAMILY * list(FAMILIES).index(name)


@dataclass
class EvaluationFamily:
    """A built test family.

    :param name: family name.
    :param split: a name of :data:`SPLITS`.
    :param description: one line for tables.
    :param cells: relaxed minima (``info["minimum"]`` holds the :class:`~sb3_crystal.structures.minima.MinimumReport`)
        or ideal configurations; ``info["cell_seed"]`` and ``info["name"]`` set.
    :param starts: the starts, each with ``info["cell"]`` (index into ``cells``), ``info["start_seed"]``, ``info["name"]``.
    :param relaxed: whether ``cells`` are relaxed minima.
    :param dropped: notes on candidate cells left out (relaxation failed, saddle not escaped, matched training).
    """

    name: str
    split: str
    description: str
    cells: list[Atoms]
    starts: list[Atoms]
    relaxed: bool
    dropped: list[str] = field(default_factory=list)

    @property
    def max_atoms(self) -> int:
        """Largest number of atoms of a start."""
        return max((len(start) for start in self.starts), default=0)


def _relaxed_cell(candidate: Atoms, calc: object, cache_dir: str | os.PathLike | bool | None) -> tuple[Atoms | None, str]:
    """The candidate's true fixed-cell minimum (saddles pushed off), or ``None`` and why not."""
    try:
        minimum, report = relaxed_minimum(candidate, calc, fmax=MINIMUM_FMAX, cache_dir=cache_dir)
        if not report.is_minimum:
            minimum, _ = escape_saddle(minimum, calc, fmax=MINIMUM_FMAX, cache_dir=cache_dir)
    except RelaxationError as err:
        return None, str(err)
    return minimum, ""


def _draw(generator: StructureGenerator, seed: int, j: int, cache_dir: str | os.PathLike | bool | None) -> Atoms:
    """Candidate ``j`` of a family: drawn, or read back from the disk cache (pyxtal draws of 10–20 atoms take
    seconds to minutes each). The cache sits next to the minima cache, keyed by the generator's spec and seed."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(j,)))
    if cache_dir is False:
        return generator.ideal(rng) if isinstance(generator, SolidSolutionGenerator) else generator.sample(rng)
    folder = (default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)).parent / "families"  # type: ignore[arg-type]
    key = hashlib.sha256(f"{generator.spec}|{seed}|{j}".encode()).hexdigest()[:24]
    path = folder / f"{key}.extxyz"
    if path.is_file():
        try:
            cached = read(path)
            cached.info = json.loads(cached.info["family_info"])
            cached.calc = None
            return cached
        except Exception as err:  # a corrupt entry is drawn again, not fatal
            warnings.warn(f"Ignoring unreadable family cache entry {path}: {err}", stacklevel=2)
    atoms = generator.ideal(rng) if isinstance(generator, SolidSolutionGenerator) else generator.sample(rng)
    entry = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    entry.info["family_info"] = json.dumps({k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float))})
    with atomic_file(path) as tmp:
        write(tmp, entry, format="extxyz")
    return atoms


#: Cells built in this process, by (owner family, split, potential fingerprint, cache folder): the two β
#: families of a size share their cells, and drawing random cells with pyxtal takes seconds each.
_BUILT: dict[tuple[str, str, str, str], tuple[list[Atoms], list[str], int]] = {}


def _cells(
    spec: FamilySpec, split: str, calc: object, cache_dir: str | os.PathLike | bool | None, n_cells: int
) -> tuple[list[Atoms], list[str]]:
    owner = spec.cell_family or spec.name
    seed = family_seed(owner, split)
    key = (owner, split, calculator_fingerprint(calc), repr(cache_dir))  # type: ignore[arg-type]
    cells, dropped, j = _BUILT.get(key, ([], [], 0))
    if len(cells) >= n_cells:
        kept = cells[:n_cells]
        last = int(str(kept[-1].info["cell_seed"]).rsplit("/", 1)[1])
        return [cell.copy() for cell in kept], [d for d in dropped if int(d.split()[2]) < last]
    cells, dropped = list(cells), list(dropped)
    while len(cells) < n_cells:
        if j >= SEEDS_PER_FAMILY:
            raise RuntimeError(f"{spec.name}: fewer than {n_cells} usable cells among {j} draws")
        generator = spec.alternate if spec.alternate is not None and j % 2 == 1 else spec.generator
        try:
            candidate = _draw(generator, seed, j, cache_dir)
        except RuntimeError as err:  # the generator found no structure for this draw (e.g. no space group fits)
            dropped.append(f"cell draw {j} (not built): {err}")
            j += 1
            continue
        candidate.info["cell_seed"] = f"{seed}/{j}"
        if spec.relax:
            minimum, why = _relaxed_cell(candidate, calc, cache_dir)
            if minimum is None:
                dropped.append(f"cell draw {j} ({candidate.info['source']}): {why}")
                j += 1
                continue
            candidate = minimum
        cells.append(candidate)
        j += 1
    _BUILT[key] = (cells, dropped, j)
    return [cell.copy() for cell in cells], list(dropped)


def training_matches(
    cells: Sequence[Atoms], training: Sequence[Atoms], ltol: float = 0.2, stol: float = 0.3, angle_tol: float = 5.0
) -> list[tuple[int, int]]:
    """Pairs ``(cell index, training index)`` that pymatgen's ``StructureMatcher`` calls the same structure.

    Volume scaled (``scale=True``) and on primitive cells, so a supercell or a strained copy of a training cell
    matches; only pairs of the same reduced formula are compared (others cannot match).

    :param cells: family cells.
    :param training: training structures (minima or unrelaxed cells).
    :param ltol: fractional length tolerance.
    :param stol: site tolerance.
    :param angle_tol: angle tolerance in degrees.
    """
    import warnings

    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    to_structure = AseAtomsAdaptor().get_structure
    matcher = StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol, primitive_cell=True, scale=True)
    theirs = [to_structure(atoms) for atoms in training]
    matches = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spglib deprecation notes through pymatgen
        for i, atoms in enumerate(cells):
            mine = to_structure(atoms)
            formula = mine.composition.reduced_formula
            for k, other in enumerate(theirs):
                if other.composition.reduced_formula == formula and matcher.fit(mine, other):
                    matches.append((i, k))
    return matches


def test_family(
    name: str,
    split: str = "validation",
    calculator: CalculatorSpec = None,
    cache_dir: str | os.PathLike | bool | None = None,
    training: Sequence[Atoms] | None = None,
    n_cells: int | None = None,
) -> EvaluationFamily:
    """Build a test family (cells and starts) deterministically from its reserved seeds.

    :param name: a family of :data:`FAMILIES`.
    :param split: ``"validation"`` (model selection), ``"test"`` or ``"test2"`` (one-time reports only).
    :param calculator: the potential that relaxes the random cells; ``None`` for the family's own (the default EAM,
        or EMT for the Cu–Au families).
    :param cache_dir: minima cache folder (see :func:`~sb3_crystal.structures.minima.relaxed_minimum`).
    :param training: training structures; family cells that match one (:func:`training_matches`) are left out
        with their starts and named in ``dropped``.
    :param n_cells: build only the first ``n_cells`` cells (a prefix of the full family: the same cells and starts).
    """
    seed = family_seed(name, split)
    spec = FAMILIES[name]
    count = spec.n_cells if n_cells is None else int(n_cells)
    if not 1 <= count <= spec.n_cells:
        raise ValueError(f"n_cells must be 1–{spec.n_cells} for {name}, got {n_cells}")
    calc = make_calculator(spec.calculator if calculator is None else calculator)
    cells, dropped = _cells(spec, split, calc, cache_dir, count)
    if training is not None:
        matched = {i: k for i, k in training_matches(cells, training)}
        for i in sorted(matched):
            dropped.append(f"cell {i} ({cells[i].info.get('source')}) matches training structure {matched[i]}")
    else:
        matched = {}
    kept_cells: list[Atoms] = []
    starts: list[Atoms] = []
    for j, cell in enumerate(cells):
        cell.info["name"] = f"{name}[{j}]"
        for k in range(spec.starts_per_cell):
            start_seed = seed + 1 + j * spec.starts_per_cell + k
            if j in matched:
                continue
            start = distort(cell, spec.amplitude, np.random.default_rng(start_seed), min_distance=START_MIN_DISTANCE)
            start.calc = None
            start.info = {
                "name": f"{name}[{j}]",
                "source": cell.info.get("source", ""),
                "cell": len(kept_cells),
                "start_seed": start_seed,
            }
            starts.append(start)
        if j not in matched:
            kept_cells.append(cell)
    return EvaluationFamily(name, split, spec.description, kept_cells, starts, spec.relax, dropped)


test_family.__test__ = False  # type: ignore[attr-defined]  # a builder, not a pytest test
