"""RLOptimizer and HybridOptimizer: the environment's moves, force calls, sizes, species and the handover rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase.io import read
from ase.optimize import BFGS, BFGSLineSearch, GPMin

from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.calculators import UnsupportedElementsError
from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.relax import CrystalAgent, HybridOptimizer, NoDefaultAgentError, RLOptimizer, agent_io, save_agent
from sb3_crystal.relax.optimizer import (
    AUTO_GPMIN_MAX_ATOMS,
    bfgs_hessian,
    bfgs_inverse_hessian,
    secant_pairs,
    warm_start,
)
from sb3_crystal.structures.geometry import distort
from tests.helpers import TINY_TFN, CountingEAM

#: the agent's raw moves, as the environment (without a trust region) makes them
RAW = dict(trust_region=False, patience=None)


class ScriptedPolicy:
    """A stand-in policy: the same action (per atom, padded slots zero) whatever it sees."""

    def __init__(self, per_atom: np.ndarray, n_max: int) -> None:
        self.action = np.zeros((n_max, 3), np.float32)
        self.action[: len(per_atom)] = per_atom
        self.calls = 0

    def predict(self, observation, deterministic=False):
        assert deterministic
        self.calls += 1
        return self.action.reshape(-1).copy(), None


class ForcePolicy:
    """A steepest-descent stand-in: the action is ``gain`` times the observed forces."""

    def __init__(self, gain: float) -> None:
        self.gain = gain

    def predict(self, observation, deterministic=False):
        return np.clip(self.gain * observation["forces"].reshape(-1), -1.0, 1.0), None

    @classmethod
    def agent(cls, gain: float) -> CrystalAgent:
        settings = {"max_displacement": 0.3, "min_distance": 1.5}
        return CrystalAgent(cls(gain), n_max=2, env_settings=settings, species=("Al", "Fe"))


def scripted(per_atom, **settings) -> CrystalAgent:
    settings = {"max_displacement": 0.3, "min_distance": 1.5, **settings}
    return CrystalAgent(ScriptedPolicy(np.asarray(per_atom), 2), n_max=2, env_settings=settings, species=("Al", "Fe"))


@pytest.fixture(scope="module")
def env4():
    environment = CrystalRelaxEnv(n_max=4, max_steps=10)
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def tfn_pair(relax_env, env4):
    """Two TFN models with the same weights, built for n_max = 2 and n_max = 4."""
    policies = pytest.importorskip("sb3_crystal.policies")
    small = CrystalTD3(policies.CrystalTFNPolicy, relax_env, policy_kwargs=TINY_TFN, seed=0)
    large = CrystalTD3(policies.CrystalTFNPolicy, env4, policy_kwargs=TINY_TFN, seed=1)
    large.policy.load_state_dict(small.policy.state_dict())
    return small, large


@pytest.fixture(scope="module")
def minimum(relax_env):
    return relax_env.dataset[0].copy()


def start(minimum, seed=0, beta=0.3, repeat=(1, 1, 1)):
    atoms = distort(minimum.repeat(repeat), beta, np.random.default_rng(seed), min_distance=1.6)
    atoms.info.clear()
    atoms.calc = CountingEAM()
    return atoms


def frames(path):
    return read(path, index=":")


def distinct(images) -> int:
    return len({image.positions.tobytes() for image in images})


# -- the agent alone ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action_scale", ["fixed", "force"])
def test_moves_are_the_environments(relax_env, mlp_model, action_scale, minimum):
    """Step for step, the optimizer puts the atoms where the environment puts them (action scale, contact rule)."""
    rule = relax_env.moves
    relax_env.moves = dataclasses.replace(rule, action_scale=action_scale)  # as if the relax_env had been built with it
    try:
        observation, _ = relax_env.reset(options={"atoms": start(minimum, seed=3)})
        expected, fractions = [], []
        for _ in range(4):
            action, _ = mlp_model.predict(observation, deterministic=True)
            observation, _, _, _, info = relax_env.step(action)
            expected.append(relax_env.atoms.positions)
            fractions.append(info["action_fraction"])
    finally:
        relax_env.moves = rule
    atoms = start(minimum, seed=3)
    optimizer = RLOptimizer(atoms, model=mlp_model, logfile=None, action_scale=action_scale, **RAW)
    assert optimizer.settings["action_scale"] == action_scale
    for k, positions in enumerate(expected):
        optimizer.run(fmax=1e-9, steps=1)
        np.testing.assert_array_equal(atoms.positions, positions)
        assert optimizer.last_fraction == fractions[k]


def test_settings_travel_with_the_model(minimum):
    environment = CrystalRelaxEnv(max_steps=5, max_displacement=0.2, action_scale="force", force_cap=2.0, min_distance=1.2)
    model = CrystalTD3("MultiInputPolicy", environment, policy_kwargs={"net_arch": [8]}, seed=0)
    optimizer = RLOptimizer(start(minimum), model=model, logfile=None)
    expected = {
        "max_displacement": 0.2,
        "action_scale": "force",
        "force_cap": 2.0,
        "min_distance": 1.2,
        "action_mode": "absolute",
        "max_strain": 0.01,
    }
    assert optimizer.settings == expected
    overridden = RLOptimizer(start(minimum), model=model, logfile=None, max_displacement=0.1)
    assert overridden.settings["max_displacement"] == 0.1 and overridden.settings["force_cap"] == 2.0
    with pytest.raises(ValueError, match="action_scale"):
        RLOptimizer(start(minimum), model=model, logfile=None, action_scale="huge")


def test_force_calls_are_distinct_geometries_and_the_trajectory_holds_every_step(mlp_model, minimum, tmp_path):
    atoms = start(minimum, seed=1)
    calc = atoms.calc
    path = tmp_path / "rl.traj"
    optimizer = RLOptimizer(
        atoms, model=mlp_model, logfile=None, trajectory=str(path), max_displacement=0.05, min_distance=0.5, **RAW
    )
    converged = optimizer.run(fmax=1e-6, steps=12)
    assert converged is False and optimizer.nsteps == 12
    images = frames(path)
    assert len(images) == optimizer.nsteps + 1  # the start and every step
    assert optimizer.force_calls == calc.count == distinct(images) > 1
    assert atoms.calc is calc  # the user's calculator is back, holding the final results
    np.testing.assert_array_equal(images[-1].positions, atoms.positions)
    atoms.get_forces(), atoms.get_potential_energy()
    assert calc.count == optimizer.force_calls


def test_blocked_moves_cost_no_force_call(minimum):
    agent = scripted([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], min_distance=2.6)  # above the 2.47 Å Al–Fe bond
    atoms = start(minimum, beta=0.05)
    before = atoms.positions.copy()
    optimizer = RLOptimizer(atoms, model=agent, logfile=None)
    with pytest.warns(UserWarning, match="closer than the agent's min_distance 2.6 Å"):
        optimizer.run(fmax=1e-9, steps=5)
    assert optimizer.nsteps == 5 and optimizer.last_fraction == 0.0 and optimizer.last_max_shift == 0.0
    assert optimizer.force_calls == atoms.calc.count == 1
    np.testing.assert_array_equal(atoms.positions, before)


def test_size_agnostic_agent_relaxes_a_supercell_beyond_n_max(tfn_pair, minimum):
    small, large = tfn_pair
    assert small.observation_space["positions"].shape[0] == 2
    moved = []
    for model in (small, large):
        atoms = start(minimum, seed=2, repeat=(2, 1, 1))  # 4 atoms
        RLOptimizer(atoms, model=model, logfile=None, **RAW).run(fmax=1e-9, steps=3)
        moved.append(atoms.positions)
    np.testing.assert_allclose(moved[0], moved[1], atol=1e-6)  # beyond n_max = the same net on a larger padding
    assert np.abs(moved[0] - start(minimum, seed=2, repeat=(2, 1, 1)).positions).max() > 1e-3
    assert small.policy.actor.n_max == 2  # restored after the call


def test_padding_invariance(tfn_pair, minimum):
    """A 2-atom cell moves the same whether the TFN agent has 2 or 4 slots."""
    moved = []
    for model in tfn_pair:
        atoms = start(minimum, seed=4)
        RLOptimizer(atoms, model=model, logfile=None, **RAW).run(fmax=1e-9, steps=3)
        moved.append(atoms.positions)
    np.testing.assert_allclose(moved[0], moved[1], atol=1e-6)


def test_fixed_size_agent_refuses_a_larger_cell(mlp_model, minimum):
    with pytest.raises(ValueError, match=r"4 atoms, more than the 2 slots .* fixed input size"):
        RLOptimizer(start(minimum, repeat=(2, 1, 1)), model=mlp_model, logfile=None)


def test_unseen_species_are_refused_by_name(mlp_model, minimum):
    atoms = start(minimum)
    atoms.symbols[0] = "Ni"
    with pytest.raises(UnsupportedElementsError, match=r"Ni not seen in training \(the agent was trained on Al, Fe\)"):
        RLOptimizer(atoms, model=mlp_model, logfile=None)
    # species unknown: the calculator's elements decide
    anonymous = CrystalAgent(mlp_model.policy, n_max=2, species=None)
    with pytest.raises(UnsupportedElementsError, match=r"element\(s\) Ni not covered by potential"):
        RLOptimizer(atoms, model=anonymous, logfile=None)
    RLOptimizer(start(minimum), model=anonymous, logfile=None)  # Al and Fe are fine


def test_no_default_agent_installed(minimum, mlp_model, monkeypatch, tmp_path):
    monkeypatch.setitem(agent_io.SHIPPED_AGENTS, "alfe", tmp_path / "default_agent")
    with pytest.raises(NoDefaultAgentError, match="No agent is installed"):
        RLOptimizer(start(minimum))
    save_agent(mlp_model, tmp_path / "default_agent")  # the hook loads whatever is installed there
    assert RLOptimizer(start(minimum), logfile=None).agent.n_max == 2


def test_needs_a_calculator_and_periodic_cell(mlp_model, minimum):
    atoms = start(minimum)
    atoms.calc = None
    with pytest.raises(ValueError, match="attach a calculator"):
        RLOptimizer(atoms, model=mlp_model, logfile=None)
    atoms = start(minimum)
    atoms.pbc = [True, True, False]
    with pytest.raises(ValueError, match="fully periodic"):
        RLOptimizer(atoms, model=mlp_model, logfile=None)


# -- hybrid ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("finisher", ["BFGS", "lbfgs", "FIRE", "BFGSLineSearch", "GPMin", "GPMinFitted"])
def test_hybrid_converges_from_an_untrained_agent(mlp_model, minimum, finisher, tmp_path):
    atoms = start(minimum, seed=5, beta=0.4)
    path = tmp_path / "hybrid.traj"
    hybrid = HybridOptimizer(atoms, model=mlp_model, finisher=finisher, logfile=None, trajectory=str(path))
    assert hybrid.run(fmax=0.01, steps=300) is True
    assert hybrid.phase == "finisher" and hybrid.handover_reason is not None
    assert hybrid.nsteps == hybrid.agent_steps + hybrid.finisher_steps + (hybrid.handover_reason != "switch_fmax")
    images = frames(path)
    assert len(images) == hybrid.nsteps + 1
    assert hybrid.force_calls == atoms.calc.count
    if finisher in ("BFGSLineSearch", "GPMin", "GPMinFitted"):  # line searches / retries: geometries between frames
        assert hybrid.force_calls >= distinct(images)
    else:
        assert hybrid.force_calls == distinct(images)
    assert np.sqrt((atoms.get_forces() ** 2).sum(axis=1)).max() < 0.01


@pytest.mark.parametrize("finisher", [BFGS, BFGSLineSearch])
def test_hybrid_handing_over_at_once_is_the_finisher_alone(mlp_model, minimum, finisher):
    """switch_fmax above the start's fmax: the hybrid is the finisher alone, force calls included (the start
    counted once), warm start or not (there is nothing to learn from)."""
    atoms = start(minimum, seed=6)
    hybrid = HybridOptimizer(atoms, model=mlp_model, switch_fmax=1e3, finisher=finisher, logfile=None)
    assert hybrid.run(fmax=0.01, steps=200)
    reference = start(minimum, seed=6)
    classical = finisher(reference, logfile=None)
    classical.run(fmax=0.01, steps=200)
    assert hybrid.handover_reason == "switch_fmax" and hybrid.agent_steps == 0 and hybrid.handover_force_calls == 1
    assert hybrid.warm_start_size == 0
    assert hybrid.nsteps == classical.nsteps and hybrid.force_calls == reference.calc.count
    np.testing.assert_array_equal(atoms.positions, reference.positions)


def test_the_default_finisher_is_gpmin_on_small_cells_and_bfgs_line_search_on_large_ones(mlp_model, minimum):
    hybrid = HybridOptimizer(start(minimum), mlp_model, logfile=None)
    assert len(minimum) <= AUTO_GPMIN_MAX_ATOMS
    assert hybrid.finisher_class is GPMin and hybrid.warm_start
    assert (hybrid.patience, hybrid.min_improvement, hybrid.max_energy_rise) == (1, 0.3, 0.0)
    assert HybridOptimizer.resolve_finisher("AUTO", AUTO_GPMIN_MAX_ATOMS + 1) is BFGSLineSearch
    assert HybridOptimizer.resolve_finisher("auto", AUTO_GPMIN_MAX_ATOMS) is GPMin
    with pytest.raises(ValueError, match="n_atoms"):
        HybridOptimizer.resolve_finisher("auto")
    with pytest.raises(ValueError, match="choose from auto"):
        HybridOptimizer.resolve_finisher("newton")


# -- warm start of the finisher from the agent's path ---------------------------------------------------------------
def quadratic_path(n_points=4, ndofs=6, seed=0):
    """Points of a path on E = ½ xᵀAx (A positive definite), with their energies and gradients."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(ndofs, ndofs))
    a = q @ q.T + ndofs * np.eye(ndofs)
    xs = np.cumsum(rng.normal(scale=0.1, size=(n_points, ndofs)), axis=0)
    return [(x, 0.5 * x @ a @ x, a @ x) for x in xs]


def test_secant_pairs_skip_negative_curvature_and_repeated_points():
    x0, x1 = np.zeros(3), np.array([0.1, 0.0, 0.0])
    up, down = np.array([1.0, 0.0, 0.0]), np.array([-1.0, 0.0, 0.0])
    noise = np.array([-1e-12, 0.0, 0.0])
    path = [(x0, np.zeros(3)), (x1, up), (x1, up), (x0, up), (x1, up + down), (x0, up + down + noise)]
    pairs = secant_pairs(path)
    # (x0→x1, +curvature) kept; x1→x1 (blocked move) and x1→x0 with no gradient change skipped; x0→x1 with the
    # gradient falling along the step (negative curvature) skipped; a rigid translation (gradient noise) skipped
    assert len(pairs) == 1
    np.testing.assert_allclose(pairs[0][0], x1 - x0)


def test_bfgs_hessian_and_its_inverse_satisfy_the_secant_condition():
    path = quadratic_path()
    pairs = secant_pairs([(x, g) for x, _, g in path])
    assert len(pairs) == 3
    hessian = bfgs_hessian(pairs, 70.0 * np.eye(6))
    inverse = bfgs_inverse_hessian(pairs, np.eye(6) / 70.0)
    s, y = pairs[-1]
    np.testing.assert_allclose(hessian @ s, y, rtol=1e-10)
    np.testing.assert_allclose(inverse @ y, s, rtol=1e-10)
    np.testing.assert_allclose(inverse, np.linalg.inv(hessian), rtol=1e-8, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(hessian) > 0)  # positive curvature pairs keep it positive definite


def test_warm_start_sets_the_finishers_hessian_from_the_agents_path(mlp_model, minimum):
    """Replayed on a real (EAM) path, the quasi-Newton finisher's Hessian differs from its initial one and satisfies
    the secant condition of the last pair; a BFGSLineSearch keeps it (in its units: gradients / alpha) at step one."""
    atoms = start(minimum, seed=12, beta=0.3)
    path = []
    for _ in range(4):
        path.append((atoms.positions.ravel().copy(), atoms.get_potential_energy(), -atoms.get_forces().ravel()))
        atoms.positions += 0.02 * atoms.get_forces()  # steepest descent: an agent stand-in
    pairs = secant_pairs([(x, g) for x, _, g in path])
    assert pairs
    s, y = pairs[-1]

    bfgs = BFGS(atoms, logfile=None)
    assert warm_start(bfgs, path) == len(pairs)
    assert not np.allclose(bfgs.H0, 70.0 * np.eye(6))
    np.testing.assert_allclose(bfgs.H0 @ s, y, rtol=1e-8)
    bfgs.step()
    np.testing.assert_allclose(bfgs.H, bfgs_hessian(pairs, 70.0 * np.eye(6)))  # the first step used it as it is

    hybrid = HybridOptimizer(atoms, mlp_model, finisher="BFGSLineSearch", logfile=None)
    line_search = hybrid.make_finisher()
    assert isinstance(line_search, BFGSLineSearch)
    assert warm_start(line_search, path) == len(pairs)
    np.testing.assert_allclose(line_search.H @ (y / line_search.alpha), s, rtol=1e-8)
    preset = line_search.H.copy()
    line_search.step()
    np.testing.assert_allclose(line_search.H, preset)  # ASE's first update would have reset it to the identity
    with pytest.raises(TypeError, match="with_preset_inverse_hessian"):
        warm_start(BFGSLineSearch(atoms, logfile=None), path)


def test_warm_start_gives_gpmin_the_agents_points_near_the_handover_geometry(minimum):
    atoms = start(minimum, seed=13, beta=0.2)
    here = atoms.positions.ravel().copy()
    gradient = -atoms.get_forces().ravel()
    near, far = here + 0.05, here + 1.0
    path = [(far, 1.0, gradient), (near, 0.5, gradient), (here, 0.0, gradient)]
    gpmin = GPMin(atoms, logfile=None)
    assert warm_start(gpmin, path) == 1  # the far point and the current geometry (its own first point) left out
    np.testing.assert_array_equal(gpmin.x_list[0], near)
    np.testing.assert_array_equal(gpmin.y_list[0], np.append(0.5, gradient))


def test_hybrid_warm_start_counts_each_geometry_once(minimum, tmp_path):
    """The agent's steps inform the finisher (the secant pairs of its path) and cost nothing more."""
    results = {}
    for warm in (True, False):
        atoms = start(minimum, seed=7, beta=0.2)
        path = tmp_path / f"warm_{warm}.traj"
        hybrid = HybridOptimizer(
            atoms, ForcePolicy.agent(gain=0.03), switch_fmax=0.5, patience=50, max_energy_rise=0.05, finisher="BFGS",
            warm_start=warm, logfile=None, trajectory=str(path),
        )  # fmt: skip
        assert hybrid.run(fmax=0.01, steps=100)
        assert hybrid.handover_reason == "switch_fmax" and hybrid.agent_steps >= 2
        assert (hybrid.warm_start_size > 0) is warm
        assert hybrid.handover_force_calls == hybrid.agent_steps + 1
        assert hybrid.force_calls == hybrid.handover_force_calls + hybrid.finisher_steps == atoms.calc.count
        assert hybrid.force_calls == distinct(frames(path))
        results[warm] = (hybrid.agent_steps, hybrid.finisher.H0)
    assert results[True][0] == results[False][0]  # the same agent phase
    assert not np.allclose(results[True][1], results[False][1])  # a different start for BFGS


def test_hybrid_hands_over_at_switch_fmax_without_double_counting(minimum):
    atoms = start(minimum, seed=7, beta=0.2)
    hybrid = HybridOptimizer(
        atoms, ForcePolicy.agent(gain=0.03), switch_fmax=0.5, patience=50, max_energy_rise=0.05, logfile=None
    )
    assert hybrid.run(fmax=0.01, steps=100)
    assert hybrid.handover_reason == "switch_fmax" and hybrid.agent_steps >= 2
    # every agent step is a new geometry; the handover geometry is the finisher's start, counted once
    assert hybrid.handover_force_calls == hybrid.agent_steps + 1
    assert hybrid.force_calls == hybrid.handover_force_calls + hybrid.finisher_steps == atoms.calc.count


def test_hybrid_hands_over_on_an_energy_rise_and_restarts_from_the_lowest_energy(minimum, tmp_path):
    atoms = start(minimum, seed=8, beta=0.05)
    first = atoms.positions.copy()
    push = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])  # atoms 0 and 1 straight at each other
    path = tmp_path / "energy.traj"
    hybrid = HybridOptimizer(
        atoms,
        scripted(push),
        switch_fmax=1e-4,
        max_energy_rise=1e-3,
        patience=50,
        finisher="BFGS",  # one force call per step
        logfile=None,
        trajectory=str(path),
    )
    assert hybrid.run(fmax=0.01, steps=100)
    assert hybrid.handover_reason == "energy" and hybrid.agent_steps == 1
    images = frames(path)
    assert images[1].get_potential_energy() > images[0].get_potential_energy() + 2e-3
    np.testing.assert_array_equal(images[2].positions, first)  # back to the lowest-energy geometry, the start
    assert hybrid.handover_force_calls == 2  # start + the agent's step; going back is free
    assert hybrid.force_calls == 2 + hybrid.finisher_steps == atoms.calc.count


def test_hybrid_hands_over_when_the_agent_stalls(minimum):
    atoms = start(minimum, seed=9, beta=0.2)
    translate = np.array([[0.1, 0.0, 0.0], [0.1, 0.0, 0.0]])  # a rigid translation: forces never improve
    hybrid = HybridOptimizer(atoms, scripted(translate), switch_fmax=1e-4, patience=3, max_energy_rise=0.05, logfile=None)
    assert hybrid.run(fmax=0.01, steps=100)
    assert hybrid.handover_reason == "stall" and hybrid.agent_steps == 3
    assert hybrid.force_calls == atoms.calc.count


def test_auto_finisher_is_bfgs_line_search_at_switch_fmax_and_gpmin_after_an_early_handover(mlp_model, minimum):
    near = HybridOptimizer(start(minimum, seed=6), model=mlp_model, switch_fmax=1e3, logfile=None)  # reached at once
    assert near.run(fmax=0.01, steps=200) and near.handover_reason == "switch_fmax"
    assert near.finisher_class is BFGSLineSearch and isinstance(near.finisher, BFGSLineSearch)
    far = HybridOptimizer(start(minimum, seed=10), scripted(np.zeros((2, 3))), switch_fmax=1e-4, logfile=None)
    assert far.run(fmax=0.01, steps=200) and far.handover_reason == "blocked"
    assert isinstance(far.finisher, GPMin)


def test_hybrid_hands_over_when_every_move_is_blocked(minimum):
    hybrid = HybridOptimizer(start(minimum, seed=10), scripted(np.zeros((2, 3))), switch_fmax=1e-4, logfile=None)
    assert hybrid.run(fmax=0.01, steps=100)
    assert hybrid.handover_reason == "blocked" and hybrid.agent_steps == 1


def test_hybrid_hands_over_after_max_agent_steps(minimum):
    translate = np.array([[0.1, 0.0, 0.0], [0.1, 0.0, 0.0]])
    hybrid = HybridOptimizer(
        start(minimum, seed=11),
        scripted(translate),
        switch_fmax=1e-4,
        patience=50,
        max_energy_rise=0.05,
        max_agent_steps=2,
        logfile=None,
    )
    assert hybrid.run(fmax=0.01, steps=100)
    assert hybrid.handover_reason == "agent_steps" and hybrid.agent_steps == 2


def test_hybrid_rejects_bad_settings(mlp_model, minimum):
    with pytest.raises(ValueError, match="Unknown finisher 'Newton'"):
        HybridOptimizer(start(minimum), mlp_model, finisher="Newton", logfile=None)
    with pytest.raises(ValueError, match="switch_fmax"):
        HybridOptimizer(start(minimum), mlp_model, switch_fmax=0, logfile=None)


def test_hybrid_old_keyword_names_still_work_and_warn(mlp_model, minimum):
    """``f_switch``, ``optimizer`` and ``optimizer_kwargs`` are the deprecated names of ``switch_fmax``, ``finisher``
    and ``finisher_kwargs``: they warn, mean the same, and cannot be given together with the new names."""
    with pytest.warns(DeprecationWarning) as caught:
        old = HybridOptimizer(
            start(minimum), mlp_model, f_switch=0.3, optimizer="BFGS", optimizer_kwargs={"maxstep": 0.1}, logfile=None
        )
    deprecated = {str(w.message).split(": ")[1].split("=")[0] for w in caught if w.category is DeprecationWarning}
    assert deprecated == {"f_switch", "optimizer", "optimizer_kwargs"}
    new = HybridOptimizer(
        start(minimum), mlp_model, switch_fmax=0.3, finisher="BFGS", finisher_kwargs={"maxstep": 0.1}, logfile=None
    )
    for hybrid in (old, new):
        assert (hybrid.switch_fmax, hybrid.finisher_class, hybrid.finisher_kwargs) == (0.3, BFGS, {"maxstep": 0.1})
    assert old.todict() == new.todict() and old.todict()["finisher"] == "BFGS"
    with pytest.raises(TypeError, match="give finisher= only"):
        HybridOptimizer(start(minimum), mlp_model, finisher="FIRE", optimizer="BFGS", logfile=None)
