"""Train the Al–Fe agent shipped with the package (``sb3_crystal/relax/default_agent``).

    python pipelines/train_default_agent.py --steps 40000 --seed 0

TD3 + CrystalTFNPolicy ("small" preset) on varied Al–Fe cells: the built-in prototypes (B2 and simple hexagonal
AlFe, fcc/hcp Al, bcc/fcc Fe, I4/mmm Al) and 24 random symmetric Al–Fe cells of 2–8 atoms (pyxtal, seed 0; saddle
points of the potential pushed into true minima), β = 0.5 Å, force-adaptive action scale, hybrid reward, ε 0.05
eV/Å, Gaussian action noise σ 0.1 (it learned faster than state noise on B2, see docs/results.md). Every 2000
steps the agent relaxes 20 fixed B2 starts and 2 starts of every training cell; the model with the best B2
evaluation (success, then fewest steps) is written as weights + plain-data settings (no pickled code) with
:func:`sb3_crystal.relax.save_agent`.

With ``--pretrain-samples N`` the actor is first regressed onto N moves back to the training cells' minima
(:mod:`sb3_crystal.exploration.demonstrations`); with ``--steps 0`` that pretrained actor is the agent (the shipped agent since
session 4, see docs/results.md):

    python pipelines/train_default_agent.py --steps 0 --pretrain-samples 60000 --pretrain-epochs 40 --install
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch as th
from ase.data import chemical_symbols
from stable_baselines3.common.noise import NormalActionNoise

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3, CrystalTD3BC
from sb3_crystal.callbacks import RelaxationEvalCallback
from sb3_crystal.exploration.demonstrations import (
    REFERENCE_MOVES_SEED,
    ReferenceMoves,
    pretrain_actor,
    reference_moves,
    relaxation_moves,
)
from sb3_crystal.relax.agent_io import DEFAULT_AGENT_DIR, save_agent

PROTOTYPES = ["AlFe-B2", "AlFe-hex", "Al-fcc", "Al-hcp", "Fe-bcc", "Fe-fcc", "Al-I4mmm"]
#: relaxation-path samples: seeds PATH_SEED + seed, … (apart from the reference moves)
PATH_SEED = 2_000_000


def unseen_matches(env: CrystalRelaxEnv, specs: list[str]) -> list[int]:
    """Indices of ``env``'s random training cells that match (pymatgen StructureMatcher, volume scaled) a structure
    of ``specs`` or the minimum it escapes to: those cells would make a benchmark structure "seen"."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    from sb3_crystal.structures import StructureDataset

    to_structure = AseAtomsAdaptor().get_structure
    others = [*StructureDataset(specs, saddles="keep"), *StructureDataset(specs, saddles="escape")]
    others = [to_structure(atoms) for atoms in others]
    matcher = StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5, primitive_cell=True, scale=True)
    found = []
    for index, atoms in enumerate(env.dataset):
        if not str(atoms.info.get("source", "")).startswith("random:"):
            continue  # the named prototypes stay: they are the training set
        mine = to_structure(atoms)
        formula = mine.composition.reduced_formula
        if any(other.composition.reduced_formula == formula and matcher.fit(mine, other) for other in others):
            found.append(index)
    return found


def random_cells(count: int) -> str:
    """The structure spec of ``count`` random symmetric Al–Fe cells of 2–8 atoms (pyxtal, seed 0)."""
    return f"random:count={count},atoms=2-8,seed=0"


RANDOM = random_cells(24)
ENV = {
    "structures": [*PROTOTYPES, RANDOM],
    "n_max": 8,
    "beta": 0.5,
    "epsilon": 0.05,
    "reward": "hybrid",
    "reward_weights": (1.0, 0.0, 0.5),
    "action_scale": "force",
    "max_steps": 100,
    "saddles": "escape",
}
TD3_SETTINGS = {
    "learning_rate": 3e-4,
    "gamma": 0.99,
    "batch_size": 100,
    "buffer_size": 200_000,
    "learning_starts": 1000,
    "tau": 0.005,
    "policy_delay": 2,
    "target_policy_noise": 0.05,
    "target_noise_clip": 0.1,
}


def export_agent(env: CrystalRelaxEnv, work: Path, meta: dict, install: bool, fallback: CrystalTD3 | None = None) -> Path:
    """Write the best B2 model of the run (or ``fallback``) as an agent folder; optionally install it."""
    best = work / "best" / "best_model_eps0.05.zip"
    chosen = CrystalTD3.load(best) if best.is_file() else fallback
    if chosen is None:
        raise SystemExit(f"no model to export in {work}")
    chosen.crystal_env_kwargs = env.get_init_kwargs()
    chosen.species = sorted({chemical_symbols[z] for z in env.dataset.atomic_numbers})
    folder = save_agent(chosen, work / "agent")
    print(f"agent written to {folder} (from {best if best.is_file() else 'the final model'})")
    if install:
        if DEFAULT_AGENT_DIR.exists():
            shutil.rmtree(DEFAULT_AGENT_DIR)
        shutil.copytree(folder, DEFAULT_AGENT_DIR)
        (DEFAULT_AGENT_DIR / "training.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "history"}))
        print(f"installed in {DEFAULT_AGENT_DIR}")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("results/default_agent"), help="run folder (models, logs)")
    parser.add_argument("--install", action="store_true", help=f"write the best agent into {DEFAULT_AGENT_DIR}")
    parser.add_argument("--export-only", action="store_true", help="skip training: export the run in --work")
    parser.add_argument("--random-count", type=int, default=24, help="random Al–Fe cells of 2–8 atoms in the set")
    parser.add_argument("--policy-kwargs", type=json.loads, default={}, help='e.g. \'{"mul": 16, "n_layers": 2}\'')
    parser.add_argument("--pretrain-samples", type=int, default=0, help="regress the actor onto N reference moves first")
    parser.add_argument("--pretrain-epochs", type=int, default=40, help="passes over the reference moves")
    parser.add_argument(
        "--exclude-like", nargs="+", default=[], metavar="SPEC", help="drop random cells that match these structures"
    )
    parser.add_argument("--path-samples", type=int, default=0, help="with --pretrain-samples: add N relaxation-path samples")
    parser.add_argument("--init", type=Path, default=None, help="start from this model's weights (SB3 zip)")
    parser.add_argument("--bc-alpha", type=float, default=None, help="TD3+BC with this α (CrystalTD3BC)")
    parser.add_argument("--bc-samples", type=int, default=20_000, help="reference moves the TD3+BC term regresses onto")
    args = parser.parse_args()
    th.set_num_threads(1)
    structures = [*PROTOTYPES, random_cells(args.random_count)]
    env = CrystalRelaxEnv(**{**ENV, "structures": structures})
    if args.exclude_like:  # zero weight: never drawn for pretraining or resets
        excluded = unseen_matches(env, args.exclude_like)
        print(f"excluded {len(excluded)} random cells like {args.exclude_like}: {excluded}", flush=True)
        weights = np.ones(len(env.dataset))
        weights[excluded] = 0.0
        env = CrystalRelaxEnv(**{**ENV, "structures": structures, "structure_weights": weights.tolist()})
    print(env.dataset.summary())
    if args.export_only:
        meta = json.loads((args.work / "training.json").read_text())
        final = args.work / "final.zip"  # a pretraining-only run has no best model
        export_agent(env, args.work, meta, args.install, fallback=CrystalTD3.load(final) if final.is_file() else None)
        return
    n_actions = env.action_space.shape[0]
    algorithm, extra = CrystalTD3, {}
    if args.bc_alpha is not None:  # TD3+BC: the actor stays close to the reference moves while TD3 trains it
        algorithm, extra = CrystalTD3BC, {"bc_alpha": args.bc_alpha}
    model = algorithm(
        "CrystalTFNPolicy",
        env,
        seed=args.seed,
        action_noise=NormalActionNoise(np.zeros(n_actions), 0.1 * np.ones(n_actions)),
        tensorboard_log=str(args.work / "tb"),
        policy_kwargs=args.policy_kwargs or None,
        **TD3_SETTINGS,
        **extra,
    )
    if args.init is not None:
        model.set_parameters(str(args.init), exact_match=True)
    start = time.time()
    # one draw of reference moves serves pretraining and the TD3+BC term
    n_reference = max(args.pretrain_samples, args.bc_samples if isinstance(model, CrystalTD3BC) else 0)
    references = reference_moves(env, n_reference, seed=REFERENCE_MOVES_SEED + args.seed) if n_reference else None
    if isinstance(model, CrystalTD3BC):
        model.set_demonstrations(references)
    if args.pretrain_samples:  # regression onto the moves back to the minima (sb3_crystal.exploration.demonstrations)
        samples = references
        if args.path_samples:  # and onto moves from points of relaxation paths to where they end
            paths = relaxation_moves(env, args.path_samples, seed=PATH_SEED + args.seed)
            print(f"{len(paths)} relaxation-path samples", flush=True)
            samples = ReferenceMoves.concatenate([samples, paths])
        pretrain_actor(model, samples, epochs=args.pretrain_epochs, seed=args.seed)
    evaluation = RelaxationEvalCallback(
        eval_freq=2000,
        n_episodes=20,
        max_steps=100,
        seed=10_000,
        env_kwargs={**ENV, "structures": "AlFe-B2"},
        validation={"train": {"structures": structures}},
        best_model_save_path=args.work / "best",
        verbose=1,
    )
    if args.steps > 0:
        model.learn(args.steps, callback=evaluation, progress_bar=False)
    else:  # pretraining only: the pretrained model is the agent
        args.work.mkdir(parents=True, exist_ok=True)
    model.save(args.work / "final.zip")
    command = "python pipelines/train_default_agent.py " + " ".join(sys.argv[1:])
    meta = {"command": command, "steps": args.steps, "seed": args.seed}
    meta.update(wall_s=round(time.time() - start), history=evaluation.history)
    (args.work / "training.json").write_text(json.dumps(meta, indent=1))
    export_agent(env, args.work, meta, args.install, fallback=model)


if __name__ == "__main__":
    main()
