"""Learned curvature for relaxations: a cheap equivariant Hessian model and the quasi-Newton step that uses it.

- :class:`PairCurvatureModel`: pair force constants over neighbours (acoustic sum rule and rotation, translation
  and permutation equivariance by construction), fitted to exact Hessians (:mod:`sb3_crystal.curvature.fit`);
  :func:`load_model` reads a model file, or the shipped Al–Fe model fitted to the Mendelev EAM.
- :func:`curvature_step`: ``B⁻¹F`` with ``B`` the model Hessian made positive definite and updated by BFGS with
  the relaxation's secant pairs, capped in length; :func:`secant_pairs` and :func:`wants_secant_pairs` (the adaptive
  rule: pairs only after a step without progress) read them off a relaxation history's steps.
"""

from sb3_crystal.curvature.model import PairCurvatureModel, load_model
from sb3_crystal.curvature.step import HessianModel, curvature_step, regularised_hessian, secant_pairs, wants_secant_pairs

__all__ = [
    "HessianModel",
    "PairCurvatureModel",
    "curvature_step",
    "load_model",
    "regularised_hessian",
    "secant_pairs",
    "wants_secant_pairs",
]
