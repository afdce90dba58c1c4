"""docs/extending.md, proved: a reward, a calculator and a network layer, each defined in this file only, run through
the environment and a policy's forward pass (and a TD3 update)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from ase.calculators.calculator import Calculator, all_changes
from ase.neighborlist import neighbor_list
from e3nn import o3
from torch import nn

from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.calculators import CALCULATORS, make_calculator, register_calculator
from sb3_crystal.envs import CrystalRelaxEnv
from sb3_crystal.envs.rewards import REWARDS, RewardInput, register_reward
from sb3_crystal.policies.graph import periodic_radius_graph
from sb3_crystal.policies.tfn import EdgeFeatures, TensorFieldNetwork, edge_features
from sb3_crystal.structures.prototypes import build_prototype
from tests.helpers import TINY_TFN


# -- the three extensions, as a user writes them ----------------------------------------------------------------------
def squared_force_reward(step: RewardInput) -> float:
    """A toy reward: −fmax²."""
    return -(step.fmax**2)


class HarmonicSprings(Calculator):
    """A toy calculator: a spring of stiffness ``k`` (eV/Å²) and rest length ``r0`` (Å) between every pair of atoms
    closer than ``cutoff`` (periodic images included). E = ½ Σ_pairs k (d − r0)²."""

    implemented_properties = ("energy", "forces")

    def __init__(self, k: float = 2.0, r0: float = 2.5, cutoff: float = 2.7) -> None:
        super().__init__()
        self.k, self.r0, self.cutoff = k, r0, cutoff

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        i, d, vectors = neighbor_list("idD", self.atoms, self.cutoff)  # every pair twice, vectors from i to j
        stretch = d - self.r0
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, (self.k * stretch / d)[:, None] * vectors)
        self.results = {"energy": 0.25 * self.k * float(np.sum(stretch**2)), "forces": forces}


class NeighbourTensorProduct(nn.Module):
    """A toy interaction block: ``x_i' = Lin(x_i) + Σ_j c(r_ij) TP(x_j, Y(r_ij)) / √avg`` with one shared-weight tensor
    product (no radial MLP). Takes :class:`TensorFieldNetwork`'s constructor arguments and ignores the ones it has
    no use for."""

    def __init__(self, irreps_node_input, irreps_sh, irreps_node_output, avg_num_neighbors: float = 30.0, **_) -> None:
        super().__init__()
        self.self_connection = o3.Linear(irreps_node_input, irreps_node_output)
        self.tp = o3.FullyConnectedTensorProduct(irreps_node_input, irreps_sh, irreps_node_output)
        self.scale = avg_num_neighbors**-0.5

    def forward(self, x: th.Tensor, edges: EdgeFeatures) -> th.Tensor:
        graph = edges.graph
        messages = self.tp(x[graph.edge_src], edges.edge_sh) * graph.edge_cutoff.unsqueeze(-1)
        summed = th.zeros(x.shape[0], messages.shape[1], dtype=x.dtype).index_add_(0, graph.edge_dst, messages)
        return self.self_connection(x) + self.scale * summed


@pytest.fixture
def registered():
    """The toy reward and calculator registered (and removed again afterwards)."""
    register_reward("toy_squared_force")(squared_force_reward)
    register_calculator("toy_springs", HarmonicSprings)
    yield
    REWARDS.pop("toy_squared_force")
    CALCULATORS.pop("toy_springs")


# -- the calculator ----------------------------------------------------------------------------------------------------
def test_the_toy_calculator_is_a_calculator_by_name(registered):
    atoms = build_prototype("AlFe-B2")
    atoms.positions += np.random.default_rng(0).uniform(-0.1, 0.1, atoms.positions.shape)
    atoms.calc = make_calculator("toy_springs")
    assert isinstance(atoms.calc, HarmonicSprings)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 1e-2
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-12)  # pair forces: no net force
    h, numeric = 1e-5, np.zeros_like(forces)
    for a in range(len(atoms)):
        for c in range(3):
            for sign in (1, -1):
                moved = atoms.copy()
                moved.calc = HarmonicSprings()
                moved.positions[a, c] += sign * h
                numeric[a, c] -= sign * moved.get_potential_energy() / (2 * h)
    np.testing.assert_allclose(forces, numeric, atol=1e-6)


# -- the network layer -------------------------------------------------------------------------------------------------
def _network_output(network: TensorFieldNetwork, positions, cell, forces) -> th.Tensor:
    mask = th.ones(1, positions.shape[0])
    graph = periodic_radius_graph(positions[None], cell[None], mask, r_max=4.0)
    edges = edge_features(graph, lmax=1, num_basis=4, r_max=4.0)
    scalars = th.tensor([[1.0, 0.0, 0.5, -0.5], [0.0, 1.0, -0.5, 0.5]])  # invariant node features (two species)
    return network(th.cat([scalars, forces], dim=1), edges)  # a 1o vector in this e3nn is (x, y, z), as in ASE


def test_the_toy_convolution_builds_a_tfn_that_stays_equivariant():
    th.manual_seed(0)
    network = TensorFieldNetwork(
        "4x0e+1x1o", "1x1o", n_layers=1, mul=4, lmax=1, num_basis=4, radial_neurons=8, convolution_cls=NeighbourTensorProduct
    )
    assert all(isinstance(block, NeighbourTensorProduct) for block in [*network.convolutions, network.output])
    atoms = build_prototype("AlFe-B2")
    rng = np.random.default_rng(1)
    positions = th.tensor(atoms.positions + rng.uniform(-0.2, 0.2, (2, 3)), dtype=th.float32)
    cell = th.tensor(np.array(atoms.cell), dtype=th.float32)
    forces = th.tensor(rng.normal(size=(2, 3)), dtype=th.float32)
    out = _network_output(network, positions, cell, forces)
    assert out.shape == (2, 3) and out.abs().max() > 1e-3
    q, r = th.linalg.qr(th.tensor(rng.normal(size=(3, 3)), dtype=th.float32))
    rot = q * th.sign(th.diagonal(r))
    rot = rot if th.det(rot) > 0 else -rot
    rotated = _network_output(network, positions @ rot.T, cell @ rot.T, forces @ rot.T)
    th.testing.assert_close(rotated, out @ rot.T, atol=1e-5, rtol=0)


# -- all three together: environment, policy forward pass, one TD3 update -------------------------------------------
def test_reward_calculator_and_layer_run_through_the_env_and_a_policy(registered, monkeypatch):
    env = CrystalRelaxEnv(
        structures="AlFe-B2", calculator="toy_springs", reward="toy_squared_force", beta=0.2, epsilon=1e-6, max_steps=5
    )
    try:
        assert isinstance(env.calculator, HarmonicSprings)
        # The layer goes into the policy by name, as plain data (saved so in agent files).
        model = CrystalTD3(
            "CrystalTFNPolicy",
            env,
            learning_starts=4,
            batch_size=4,
            train_freq=4,
            policy_kwargs={
                **TINY_TFN,
                "n_layers": 0,  # one block per network: cheap to build
                "n_critics": 1,
                "convolution": f"{__name__}:NeighbourTensorProduct",
            },
            seed=0,
        )
        blocks = [m for m in model.actor.modules() if isinstance(m, NeighbourTensorProduct)]
        assert len(blocks) == 1  # the output convolution (no gated layer here)
        critic_blocks = [m for m in model.critic.modules() if isinstance(m, NeighbourTensorProduct)]
        assert critic_blocks
        obs, info = env.reset(seed=0)
        action, _ = model.predict(obs, deterministic=True)
        _, reward, _, _, info = env.step(action)
        atoms = env.atoms
        atoms.calc = HarmonicSprings()
        fmax = float(np.sqrt((atoms.get_forces() ** 2).sum(axis=1)).max())
        assert info["fmax"] == pytest.approx(fmax, rel=1e-9) and fmax > 1e-4  # the toy calculator's forces
        assert reward == pytest.approx(-(fmax**2), rel=1e-9)  # the toy reward
        layers = (blocks[0], critic_blocks[0])
        before = [[p.detach().clone() for p in layer.parameters()] for layer in layers]
        model.learn(16)  # TD3 updates of the critics and (every second one) the actor, through the toy layer
        for layer, old in zip(layers, before, strict=True):
            assert any(not th.equal(a, b.detach()) for a, b in zip(old, layer.parameters(), strict=True))
    finally:
        env.close()


def test_a_convolution_name_must_be_an_nn_module_class():
    from sb3_crystal.policies.common import resolve_tfn_kwargs

    with pytest.raises(ValueError, match=r"not a torch\.nn\.Module subclass"):
        resolve_tfn_kwargs(convolution="os:system")  # a function named in an agent file is never called
    with pytest.raises(ValueError, match="module:Class"):
        resolve_tfn_kwargs(convolution="NeighbourTensorProduct")
    with pytest.raises(ValueError, match="no_such_module"):
        resolve_tfn_kwargs(convolution="no_such_module:Block")
