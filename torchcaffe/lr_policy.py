"""Caffe's learning-rate policies (SGDSolver::GetLearningRate).

The rate is a float32 as in Caffe: products of float fields with `pow`
results are formed in double and rounded once to float, `poly` and `sigmoid`
form their inner terms in float first, as the C++ does. `pow` is C's: a
negative base to a fractional power is NaN and an overflow is inf (as when
`poly` runs past `max_iter`), never a Python math error.

    fixed      base_lr
    step       base_lr * gamma ^ floor(iter / stepsize)
    exp        base_lr * gamma ^ iter
    inv        base_lr * (1 + gamma * iter) ^ (-power)
    multistep  base_lr * gamma ^ (number of stepvalues reached)
    poly       base_lr * (1 - iter / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (iter - stepsize)))
"""
from __future__ import annotations

import logging

import numpy as np

from .errors import CaffeError

log = logging.getLogger(__name__)

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")

_f32 = np.float32


def _field_error(field: str, message: str) -> CaffeError:
    return CaffeError(f"solver: {field} {message}")


def check_policy(param) -> None:
    """Refuse an unknown policy or a field value Caffe would CHECK-fail on."""
    policy = param.lr_policy
    if policy not in POLICIES:
        raise _field_error("lr_policy", f"'{policy}' is not a learning rate policy "
                           f"(choose from {', '.join(POLICIES)})")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise _field_error("stepsize", f"must be > 0 for lr_policy '{policy}', got {param.stepsize}")
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and param.gamma < 0:
        raise _field_error("gamma", f"must be >= 0 for lr_policy '{policy}', got {param.gamma}")
    if policy == "poly" and param.max_iter <= 0:
        raise _field_error("max_iter", f"must be > 0 for lr_policy 'poly', got {param.max_iter}")


def _c_pow(base: float, exponent: float) -> float:
    """C's pow(): NaN / inf where Python's math.pow raises."""
    with np.errstate(all="ignore"):
        return float(np.power(np.float64(base), np.float64(exponent)))


def learning_rate(param, iteration: int, current_step: int) -> tuple[np.float32, int]:
    """(rate, current_step) at `iteration`; `current_step` is the solver's
    step counter, which `step` recomputes and `multistep` advances (by at most
    one per call, as Caffe does)."""
    policy = param.lr_policy
    base_lr = float(_f32(param.base_lr))
    gamma = float(_f32(param.gamma))
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        current_step = iteration // param.stepsize
        rate = base_lr * _c_pow(gamma, current_step)
    elif policy == "exp":
        rate = base_lr * _c_pow(gamma, iteration)
    elif policy == "inv":
        inner = _f32(1) + _f32(gamma) * _f32(iteration)
        rate = base_lr * _c_pow(float(inner), -float(_f32(param.power)))
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
            log.info("MultiStep Status: Iteration %d, step = %d", iteration, current_step)
        rate = base_lr * _c_pow(gamma, current_step)
    elif policy == "poly":
        inner = _f32(1) - _f32(iteration) / _f32(param.max_iter)
        rate = base_lr * _c_pow(float(inner), float(_f32(param.power)))
    elif policy == "sigmoid":
        exponent = -_f32(gamma) * (_f32(iteration) - _f32(param.stepsize))
        with np.errstate(over="ignore"):  # exp overflowing to inf gives rate 0, as in C++
            rate = base_lr * float(_f32(1) / (_f32(1) + np.exp(exponent)))
    else:
        raise _field_error("lr_policy", f"'{policy}' is not a learning rate policy "
                           f"(choose from {', '.join(POLICIES)})")
    with np.errstate(over="ignore"):  # beyond float range: inf, as the C++ cast
        return _f32(rate), current_step
