"""Learned curvature for relaxations: a cheap equivariant Hessian model and the quasi-Newton step that uses it.

- :class:`PairCurvatureModel`: pair force constants over neighbours (acoustic sum rule and rotation, translation
  and permutation equivariance by construction), fitted to exact Hessians (:mod:`sb3_crystal.curvature.fit`);
  :func:`load_model` reads a model file, or the shipped Al–Fe model fitted to the Mendelev EAM.
- :func:`curvature_step`: ``B⁻¹F`` with ``B`` the model Hessian made positive definite and updated by BFGS with
  the relaxation's secant pairs, capped in length; :func:`secant_pairs` and :func:`wants_secant_pairs` (the adaptive
  rule: pairs only after a step without progress) read them off a relaxation history's steps.
- :func:`cell_curvature_step`: the same step for atoms and cell together in ``FrechetCellFilter``'s coordinates, from
  the model's Hessian over atoms and a homogeneous deformation (:meth:`PairCurvatureModel.strain_hessian`,
  :func:`frechet_hessian`); :func:`load_cell_model` reads the shipped model fitted for it.
"""

from sb3_crystal.curvature.model import PairCurvatureModel, load_cell_model, load_model
from sb3_crystal.curvature.step import (
    HessianModel,
    StrainHessianModel,
    cell_curvature_step,
    curvature_step,
    frechet_hessian,
    regularised_hessian,
    secant_pairs,
    wants_secant_pairs,
)

__all__ = [
    "HessianModel",
    "PairCurvatureModel",
    "StrainHessianModel",
    "cell_curvature_step",
    "curvature_step",
    "frechet_hessian",
    "load_cell_model",
    "load_model",
    "regularised_hessian",
    "secant_pairs",
    "wants_secant_pairs",
]
