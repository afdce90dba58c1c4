"""Crystal policies for SB3: E(3)-equivariant TFN (e3nn) and a CGCNN baseline.

Call :func:`register_policy_aliases` once (``sb3_crystal`` does it on import) so that algorithms accept the policy
names: ``TD3("CrystalTFNPolicy", env)``, ``SAC("CrystalTFNPolicy", env)``, ``SAC("CrystalCGCNNPolicy", env)``.
"""

from stable_baselines3 import SAC, TD3

from sb3_crystal.policies.cgcnn import CGCNNActor, CGCNNCritic, CGCNNSACActor, CrystalCGCNNPolicy, CrystalCGCNNSACPolicy
from sb3_crystal.policies.graph import PeriodicGraph, periodic_radius_graph
from sb3_crystal.policies.sac import CrystalTFNSACPolicy, TFNSACActor
from sb3_crystal.policies.td3 import CrystalTFNPolicy, PassThroughExtractor, TFNActor, TFNCritic
from sb3_crystal.policies.tfn import TFN_PRESETS, TensorFieldNetwork

#: policy name -> {algorithm class: policy class}
POLICY_ALIASES = {
    "CrystalTFNPolicy": {TD3: CrystalTFNPolicy, SAC: CrystalTFNSACPolicy},
    "CrystalCGCNNPolicy": {TD3: CrystalCGCNNPolicy, SAC: CrystalCGCNNSACPolicy},
}


def register_policy_aliases() -> None:
    """Add the crystal policy names to ``TD3.policy_aliases`` and ``SAC.policy_aliases`` (idempotent).

    This mutates SB3's class-level dicts (DDPG, a TD3 subclass without its own dict, sees the TD3 names too).
    """
    for name, per_algo in POLICY_ALIASES.items():
        for algo, policy_class in per_algo.items():
            algo.policy_aliases[name] = policy_class


__all__ = [
    "POLICY_ALIASES",
    "TFN_PRESETS",
    "CGCNNActor",
    "CGCNNCritic",
    "CGCNNSACActor",
    "CrystalCGCNNPolicy",
    "CrystalCGCNNSACPolicy",
    "CrystalTFNPolicy",
    "CrystalTFNSACPolicy",
    "PassThroughExtractor",
    "PeriodicGraph",
    "TFNActor",
    "TFNCritic",
    "TFNSACActor",
    "TensorFieldNetwork",
    "periodic_radius_graph",
    "register_policy_aliases",
]
