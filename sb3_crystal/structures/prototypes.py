"""Builders for the paper's prototype structures (fixed-cell, periodic ``ase.Atoms``).

Default lattice parameters: B2 AlFe, fcc Al and bcc Fe take the equilibrium constants of the Mendelev 2005
potential (2.8513, 4.0333 and 2.8553 Å); the others take the cells of the paper's structure sets.
Every builder accepts other lattice parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.spacegroup import crystal


def b2_alfe(a: float = 2.8513) -> Atoms:
    """CsCl-type (B2, Pm-3m) AlFe: Al at the cube corner, Fe at its centre.

    :param a: cubic lattice constant in Å.
    """
    return Atoms("AlFe", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * a, pbc=True)


def simple_hexagonal_alfe(a: float = 2.6502, c: float = 4.9004) -> Atoms:
    """Simple hexagonal (P6/mmm) AlFe: Fe at the origin, Al at (0, 0, 1/2).

    :param a: hexagonal a in Å.
    :param c: hexagonal c in Å.
    """
    return crystal(["Fe", "Al"], basis=[(0, 0, 0), (0, 0, 0.5)], spacegroup=191, cellpar=[a, a, c, 90, 90, 120])


def i4mmm_al(a: float = 3.9180, c: float = 12.2523, z: float = 0.3972) -> Atoms:
    """Hypothetical body-centred tetragonal Al (I4/mmm), 4 atoms in the primitive cell (Wyckoff 4d + 4e).

    :param a: conventional a in Å.
    :param c: conventional c in Å.
    :param z: free coordinate of the 4e site.
    """
    return crystal(
        ["Al", "Al"], basis=[(0, 0.5, 0.25), (0, 0, z)], spacegroup=139, cellpar=[a, a, c, 90, 90, 90], primitive_cell=True
    )


def _elemental(symbol: str, structure: str, a: float, c: float | None = None) -> Callable[..., Atoms]:
    def build(a: float = a, c: float | None = c, cubic: bool = False) -> Atoms:
        if structure == "hcp":
            return bulk(symbol, "hcp", a=a, c=c)
        return bulk(symbol, structure, a=a, cubic=cubic)

    c_text = "" if c is None else f", c = {c} Å"
    build.__doc__ = f"{structure} {symbol} (default a = {a} Å{c_text}); ``cubic`` gives the conventional cell."
    return build


#: Every named prototype, for datasets and YAML configs (``structures: [AlFe-B2, Al-fcc]``).
PROTOTYPES: dict[str, Callable[..., Atoms]] = {
    "AlFe-B2": b2_alfe,
    "AlFe-hex": simple_hexagonal_alfe,
    "Al-I4mmm": i4mmm_al,
    "Al-fcc": _elemental("Al", "fcc", 4.0333),
    "Al-bcc": _elemental("Al", "bcc", 3.2330),
    "Al-hcp": _elemental("Al", "hcp", 2.8125, 4.8669),
    "Fe-bcc": _elemental("Fe", "bcc", 2.8553),
    "Fe-fcc": _elemental("Fe", "fcc", 3.6556),
    "Fe-hcp": _elemental("Fe", "hcp", 2.4342, 3.8419),
}


def build_prototype(name: str, **params: float) -> Atoms:
    """Build a named prototype.

    :param name: one of :data:`PROTOTYPES` (case-insensitive).
    :param params: lattice parameters passed to the builder.
    """
    lookup = {key.lower(): key for key in PROTOTYPES}
    if name.lower() not in lookup:
        raise KeyError(f"Unknown prototype '{name}': choose from {', '.join(PROTOTYPES)}")
    return PROTOTYPES[lookup[name.lower()]](**params)
