r"""Learning-rate schedules.

Pure schedules (optax style) are functions of the optimizer's count of *applied* steps:
``schedule(count) -> lr``, with ``count = 0`` for the first update. Pass one wherever a
float learning rate goes, ``fastgd.SGD(params, lr=schedules.cosine(0.1, 1000))``: the
optimizer evaluates it on the host each step and folds the value into the kernel's scalars
(no recompilation, no extra pass). Their arguments are checked when they are built; they
hold no state, so resuming at step N (the count is in the optimizer's state dict) gives the
same sequence as an uninterrupted run. Skipped steps (non-finite gradients) do not advance
the count.

Two stateful rules react to a metric and rewrite the groups' float learning rates:
:class:`ReduceLROnPlateau` (torch's semantics) and :class:`BoldDriver`.

Example:
    >>> from fastgd import schedules
    >>> lr = schedules.join([schedules.linear(0.0, 0.1, 10), schedules.cosine(0.1, 90)],
    ...                     boundaries=[10])
    >>> round(lr(0), 3), round(lr(10), 3), round(lr(100), 3)
    (0.0, 0.1, 0.0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fastgd import _validate as V

__all__ = [
    "BoldDriver",
    "ReduceLROnPlateau",
    "Schedule",
    "constant",
    "cosine",
    "cosine_warm_restarts",
    "exponential_decay",
    "from_spec",
    "inverse_time_decay",
    "join",
    "linear",
    "multi_step",
    "one_cycle",
    "polynomial",
    "step_decay",
]


def _count(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"a schedule takes an integer step count, got {step!r}")
    if step < 0:
        raise ValueError(f"step count must be >= 0, got {step}")
    return int(step)


def _pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _nonneg_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


class Schedule:
    """A learning-rate schedule: a pure, checked function of the applied-step count.

    Call it with the count (0 for the first update); :meth:`spec` gives plain data that
    :func:`from_spec` turns back into an equal schedule (used by state dicts and
    checkpoints).
    """

    name = "schedule"

    def __init__(self, **params: Any) -> None:
        self._params = params

    def __call__(self, step: int) -> float:
        """The learning rate for the update after ``step`` applied steps."""
        return float(self._value(_count(step)))

    def _value(self, t: int) -> float:  # pragma: no cover - every schedule overrides it
        raise TypeError(f"{type(self).__name__} does not define a value")

    def spec(self) -> dict[str, Any]:
        """The schedule as plain data: ``{"schedule": name, **arguments}``."""
        out: dict[str, Any] = {"schedule": self.name}
        for k, v in self._params.items():
            if isinstance(v, Schedule):
                v = v.spec()
            elif isinstance(v, (list, tuple)):
                v = [x.spec() if isinstance(x, Schedule) else x for x in v]
            out[k] = v
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(repr(self.spec()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"schedules.{self.name}({args})"


class _Constant(Schedule):
    name = "constant"

    def _value(self, t: int) -> float:
        return self._params["value"]


def constant(value: float) -> Schedule:
    """A constant learning rate.

    Args:
        value: the learning rate (finite, >= 0).

    Example:
        >>> constant(0.1)(1000)
        0.1
    """
    return _Constant(value=V.lr(value, "value"))


class _StepDecay(Schedule):
    name = "step_decay"

    def _value(self, t: int) -> float:
        p = self._params
        return p["init_value"] * p["gamma"] ** (t // p["step_size"])


def step_decay(init_value: float, step_size: int, gamma: float = 0.1) -> Schedule:
    r"""Multiply by ``gamma`` every ``step_size`` steps (torch's StepLR).

    .. math:: \gamma_t = \gamma_0\,\text{gamma}^{\lfloor t / \text{step\_size}\rfloor}

    Args:
        init_value: :math:`\gamma_0`.
        step_size: steps between decays (positive integer).
        gamma: decay factor, >= 0.

    Example:
        >>> step_decay(1.0, 10, 0.5)(25)
        0.25
    """
    return _StepDecay(init_value=V.lr(init_value, "init_value"),
                      step_size=_pos_int("step_size", step_size),
                      gamma=V.nonneg("gamma", gamma))


class _MultiStep(Schedule):
    name = "multi_step"

    def _value(self, t: int) -> float:
        p = self._params
        return p["init_value"] * p["gamma"] ** sum(1 for m in p["milestones"] if t >= m)


def multi_step(init_value: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    r"""Multiply by ``gamma`` at each milestone (torch's MultiStepLR).

    Args:
        init_value: initial learning rate.
        milestones: increasing step counts.
        gamma: decay factor, >= 0.

    Example:
        >>> multi_step(1.0, [10, 20], 0.1)(15)
        0.1
    """
    ms = [_nonneg_int("milestones[i]", m) for m in milestones]
    if any(b <= a for a, b in itertools.pairwise(ms)):
        raise ValueError(f"milestones must be strictly increasing, got {list(milestones)}")
    return _MultiStep(init_value=V.lr(init_value, "init_value"), milestones=ms,
                      gamma=V.nonneg("gamma", gamma))


class _Exponential(Schedule):
    name = "exponential_decay"

    def _value(self, t: int) -> float:
        p = self._params
        e = t / p["transition_steps"]
        if p["staircase"]:
            e = math.floor(e)
        v = p["init_value"] * p["decay_rate"] ** e
        end = p["end_value"]
        if end is not None:
            v = max(v, end) if p["decay_rate"] < 1 else min(v, end)
        return v


def exponential_decay(init_value: float, decay_rate: float, transition_steps: int = 1,
                      staircase: bool = False, end_value: float | None = None) -> Schedule:
    r"""Exponential decay (optax's exponential_decay; torch's ExponentialLR at defaults).

    .. math:: \gamma_t = \gamma_0\,r^{t / T}\ (\lfloor t/T\rfloor \text{ if staircase})

    Args:
        init_value: :math:`\gamma_0`.
        decay_rate: :math:`r > 0`.
        transition_steps: :math:`T`.
        staircase: decay in discrete jumps.
        end_value: a floor (or ceiling, when ``decay_rate > 1``).

    Example:
        >>> exponential_decay(1.0, 0.5, transition_steps=2)(4)
        0.25
    """
    rate = V.real("decay_rate", decay_rate)
    if rate <= 0:
        raise ValueError(f"decay_rate must be > 0, got {decay_rate!r}")
    return _Exponential(init_value=V.lr(init_value, "init_value"), decay_rate=rate,
                        transition_steps=_pos_int("transition_steps", transition_steps),
                        staircase=V.flag("staircase", staircase),
                        end_value=None if end_value is None else V.lr(end_value, "end_value"))


class _InverseTime(Schedule):
    name = "inverse_time_decay"

    def _value(self, t: int) -> float:
        p = self._params
        e = t / p["transition_steps"]
        if p["staircase"]:
            e = math.floor(e)
        return p["init_value"] / (1.0 + p["decay_rate"] * e)


def inverse_time_decay(init_value: float, decay_rate: float, transition_steps: int = 1,
                       staircase: bool = False) -> Schedule:
    r"""Inverse-time decay.

    .. math:: \gamma_t = \frac{\gamma_0}{1 + r\,t/T}

    Args:
        init_value: :math:`\gamma_0`.
        decay_rate: :math:`r \ge 0`.
        transition_steps: :math:`T`.
        staircase: use :math:`\lfloor t/T\rfloor`.

    Example:
        >>> inverse_time_decay(1.0, 1.0)(3)
        0.25
    """
    return _InverseTime(init_value=V.lr(init_value, "init_value"),
                        decay_rate=V.nonneg("decay_rate", decay_rate),
                        transition_steps=_pos_int("transition_steps", transition_steps),
                        staircase=V.flag("staircase", staircase))


class _Polynomial(Schedule):
    name = "polynomial"

    def _value(self, t: int) -> float:
        p = self._params
        frac = min(max(t - p["transition_begin"], 0), p["transition_steps"])
        frac /= p["transition_steps"]
        return (p["init_value"] - p["end_value"]) * (1.0 - frac) ** p["power"] + p["end_value"]


def polynomial(init_value: float, end_value: float, power: float, transition_steps: int,
               transition_begin: int = 0) -> Schedule:
    r"""Polynomial decay from ``init_value`` to ``end_value`` (optax's polynomial_schedule).

    .. math:: \gamma_t = (\gamma_0 - \gamma_e)(1 - s/T)^{p} + \gamma_e,\quad
       s = \min(\max(t - t_0, 0), T)

    Args:
        init_value: :math:`\gamma_0`.
        end_value: :math:`\gamma_e`.
        power: :math:`p > 0`.
        transition_steps: :math:`T`.
        transition_begin: :math:`t_0`, steps held at ``init_value`` first.

    Example:
        >>> polynomial(1.0, 0.0, 2.0, 10)(5)
        0.25
    """
    pw = V.real("power", power)
    if pw <= 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    return _Polynomial(init_value=V.lr(init_value, "init_value"),
                       end_value=V.lr(end_value, "end_value"), power=pw,
                       transition_steps=_pos_int("transition_steps", transition_steps),
                       transition_begin=_nonneg_int("transition_begin", transition_begin))


def linear(init_value: float, end_value: float, transition_steps: int,
           transition_begin: int = 0) -> Schedule:
    r"""Linear ramp from ``init_value`` to ``end_value`` (a linear warm-up when rising).

    .. math:: \gamma_t = \gamma_0 + (\gamma_e - \gamma_0)\,s/T

    Args:
        init_value: start value.
        end_value: value from ``transition_begin + transition_steps`` on.
        transition_steps: length of the ramp.
        transition_begin: steps held at ``init_value`` first.

    Example:
        >>> linear(0.0, 1.0, 4)(1)
        0.25
    """
    return polynomial(init_value, end_value, 1.0, transition_steps, transition_begin)


class _Cosine(Schedule):
    name = "cosine"

    def _value(self, t: int) -> float:
        p = self._params
        frac = min(t, p["decay_steps"]) / p["decay_steps"]
        c = 0.5 * (1.0 + math.cos(math.pi * frac))
        return p["end_value"] + (p["init_value"] - p["end_value"]) * c ** p["exponent"]


def cosine(init_value: float, decay_steps: int, end_value: float = 0.0,
           exponent: float = 1.0) -> Schedule:
    r"""Cosine annealing (torch's CosineAnnealingLR, optax's cosine_decay_schedule).

    .. math:: \gamma_t = \gamma_e + (\gamma_0 - \gamma_e)\left(\tfrac12\left(1 +
       \cos\tfrac{\pi\min(t, T)}{T}\right)\right)^{k}

    Args:
        init_value: :math:`\gamma_0`.
        decay_steps: :math:`T`; the value stays at ``end_value`` afterwards.
        end_value: :math:`\gamma_e` (torch's ``eta_min``).
        exponent: :math:`k > 0`.

    Example:
        >>> cosine(1.0, 10)(5)
        0.5
    """
    k = V.real("exponent", exponent)
    if k <= 0:
        raise ValueError(f"exponent must be > 0, got {exponent!r}")
    return _Cosine(init_value=V.lr(init_value, "init_value"),
                   decay_steps=_pos_int("decay_steps", decay_steps),
                   end_value=V.lr(end_value, "end_value"), exponent=k)


class _WarmRestarts(Schedule):
    name = "cosine_warm_restarts"

    def _value(self, t: int) -> float:
        p = self._params
        period, mult = p["T_0"], p["T_mult"]
        if mult == 1:
            t_cur = t % period
        else:
            n = int(math.log(t / period * (mult - 1) + 1, mult))
            t_cur = t - period * (mult**n - 1) // (mult - 1)
            period = period * mult**n
            if t_cur >= period:  # guard against floating-point log rounding
                t_cur -= period
                period *= mult
            elif t_cur < 0:
                period //= mult
                t_cur += period
        c = 0.5 * (1.0 + math.cos(math.pi * t_cur / period))
        return p["eta_min"] + (p["init_value"] - p["eta_min"]) * c


def cosine_warm_restarts(init_value: float, T_0: int, T_mult: int = 1,
                         eta_min: float = 0.0) -> Schedule:
    r"""Cosine annealing with warm restarts (SGDR; torch's CosineAnnealingWarmRestarts).

    .. math:: \gamma_t = \eta_{min} + (\gamma_0 - \eta_{min})\tfrac12(1 +
       \cos(\pi T_{cur} / T_i))

    with periods :math:`T_0, T_0 T_{mult}, T_0 T_{mult}^2, \dots`.

    Args:
        init_value: :math:`\gamma_0`.
        T_0: first period (positive integer).
        T_mult: period growth factor (integer >= 1).
        eta_min: minimum value.

    Example:
        >>> f = cosine_warm_restarts(1.0, 4)
        >>> f(0), f(2), f(4)
        (1.0, 0.5, 1.0)
    """
    if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
        raise ValueError(f"T_mult must be an integer >= 1, got {T_mult!r}")
    return _WarmRestarts(init_value=V.lr(init_value, "init_value"), T_0=_pos_int("T_0", T_0),
                         T_mult=T_mult, eta_min=V.lr(eta_min, "eta_min"))


class _OneCycle(Schedule):
    name = "one_cycle"

    def _value(self, t: int) -> float:
        p = self._params
        total, peak = p["total_steps"], p["max_lr"]
        init = peak / p["div_factor"]
        final = init / p["final_div_factor"]
        up = float(p["pct_start"] * total) - 1
        if p["three_phase"]:
            phases = [(up, init, peak), (2 * up, peak, init), (total - 1, init, final)]
        else:
            phases = [(up, init, peak), (total - 1, peak, final)]
        t = min(t, total - 1)
        start = 0.0
        for end, lo, hi in phases:
            if t <= end or end == phases[-1][0]:
                pct = (t - start) / (end - start) if end > start else 1.0
                if p["anneal_strategy"] == "cos":
                    return hi + (lo - hi) / 2.0 * (math.cos(math.pi * pct) + 1)
                return (hi - lo) * pct + lo
            start = end
        return final  # pragma: no cover - the last phase always matches


def one_cycle(max_lr: float, total_steps: int, pct_start: float = 0.3,
              anneal_strategy: str = "cos", div_factor: float = 25.0,
              final_div_factor: float = 1e4, three_phase: bool = False) -> Schedule:
    """The 1cycle policy (Smith & Topin, 2018), the learning-rate part of torch's OneCycleLR.

    Rises from ``max_lr / div_factor`` to ``max_lr`` over ``pct_start`` of the steps, then
    anneals to ``max_lr / div_factor / final_div_factor`` (with ``three_phase``: back to
    the initial value first).

    Args:
        max_lr: peak learning rate.
        total_steps: length of the cycle (positive integer).
        pct_start: fraction of the steps spent rising, in [0, 1].
        anneal_strategy: ``"cos"`` or ``"linear"``.
        div_factor: ``max_lr / initial``, > 0.
        final_div_factor: ``initial / final``, > 0.
        three_phase: torch's three-phase variant.

    Example:
        >>> f = one_cycle(1.0, 100)
        >>> round(f(0), 3), round(f(29), 3), round(f(99), 6)
        (0.04, 1.0, 4e-06)
    """
    pct = V.real("pct_start", pct_start)
    if not 0.0 <= pct <= 1.0:
        raise ValueError(f"pct_start must be in [0, 1], got {pct_start!r}")
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    for name, v in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
        if V.real(name, v) <= 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    return _OneCycle(max_lr=V.lr(max_lr, "max_lr"),
                     total_steps=_pos_int("total_steps", total_steps), pct_start=pct,
                     anneal_strategy=anneal_strategy, div_factor=float(div_factor),
                     final_div_factor=float(final_div_factor),
                     three_phase=V.flag("three_phase", three_phase))


class _Join(Schedule):
    name = "join"

    def _value(self, t: int) -> float:
        p = self._params
        start = 0
        for sched, bound in zip(p["schedules"], [*p["boundaries"], None]):
            if bound is None or t < bound:
                return sched(t - start)
            start = bound
        return 0.0  # pragma: no cover - the last schedule always matches


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Schedules in sequence (optax's join_schedules): each restarts its count at 0.

    Args:
        schedules: ``k`` schedules.
        boundaries: ``k - 1`` increasing step counts where the next schedule takes over.

    Example:
        >>> f = join([constant(1.0), step_decay(0.5, 1, 0.5)], boundaries=[10])
        >>> f(9), f(10), f(11)
        (1.0, 0.5, 0.25)
    """
    scheds = list(schedules)
    if not scheds or not all(isinstance(s, Schedule) for s in scheds):
        raise TypeError("schedules must be a non-empty list of fastgd schedules")
    bounds = [_nonneg_int("boundaries[i]", b) for b in boundaries]
    if len(bounds) != len(scheds) - 1:
        raise ValueError(f"join needs {len(scheds) - 1} boundaries for {len(scheds)} "
                         f"schedules, got {len(bounds)}")
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"boundaries must be strictly increasing, got {list(boundaries)}")
    return _Join(schedules=scheds, boundaries=bounds)


_BUILDERS = {
    "constant": constant, "step_decay": step_decay, "multi_step": multi_step,
    "exponential_decay": exponential_decay, "inverse_time_decay": inverse_time_decay,
    "polynomial": polynomial, "cosine": cosine, "cosine_warm_restarts": cosine_warm_restarts,
    "one_cycle": one_cycle, "join": join,
}


def from_spec(spec: Mapping[str, Any]) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.spec` data (checked like a fresh build).

    Raises:
        ValueError: unknown schedule name or bad arguments.
    """
    if not isinstance(spec, Mapping) or spec.get("schedule") not in _BUILDERS:
        raise ValueError(f"not a schedule spec: {spec!r}")
    kw = {k: v for k, v in spec.items() if k != "schedule"}
    if spec["schedule"] == "join":
        kw["schedules"] = [from_spec(s) for s in kw.get("schedules", [])]
    try:
        return _BUILDERS[spec["schedule"]](**kw)
    except TypeError as e:
        raise ValueError(f"bad arguments in schedule spec {spec!r}: {e}") from None


# ---------------------------------------------------------------------------------------
# Stateful rules that react to a metric.
# ---------------------------------------------------------------------------------------


def _float_lrs(optimizer: Any, who: str) -> None:
    for gi, group in enumerate(optimizer.param_groups):
        if isinstance(group["lr"], Schedule):
            raise TypeError(f"{who} rewrites learning rates, but param group {gi} has a "
                            f"schedule as lr; use a float lr with {who}")


class ReduceLROnPlateau:
    """Reduce the learning rate when a metric stops improving (torch's semantics).

    Call :meth:`step` with the metric once per evaluation (e.g. per epoch). After
    ``patience`` evaluations without improvement beyond ``threshold``, every group's
    learning rate is multiplied by ``factor`` (not below ``min_lr``; changes smaller than
    ``eps`` are ignored), then ``cooldown`` evaluations pass before counting again.

    Args:
        optimizer: a fastgd optimizer whose groups have float learning rates.
        mode: ``"min"`` (lower is better) or ``"max"``.
        factor: multiplier in [0, 1).
        patience: evaluations without improvement to tolerate.
        threshold: what counts as an improvement.
        threshold_mode: ``"rel"`` (``best * (1 -/+ threshold)``) or ``"abs"``.
        cooldown: evaluations to wait after a reduction.
        min_lr: a floor, one float or one per group.
        eps: minimal change of the learning rate.

    Example:
        >>> import numpy as np, fastgd
        >>> opt = fastgd.SGD([np.zeros(2)], lr=1.0)
        >>> plateau = ReduceLROnPlateau(opt, factor=0.5, patience=1)
        >>> [plateau.step(loss) for loss in [1.0, 1.0, 1.0]]
        [False, False, True]
        >>> opt.param_groups[0]["lr"]
        0.5
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                 eps: float = 1e-8) -> None:
        _float_lrs(optimizer, "ReduceLROnPlateau")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        factor = V.real("factor", factor)
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"Factor should be < 1.0. (factor must be in [0, 1), got {factor})")
        n = len(optimizer.param_groups)
        mins = list(min_lr) if isinstance(min_lr, Sequence) else [min_lr] * n
        if len(mins) != n:
            raise ValueError(f"expected {n} min_lr values, got {len(mins)}")
        self.optimizer = optimizer
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = factor
        self.patience = _nonneg_int("patience", patience)
        self.threshold = V.nonneg("threshold", threshold)
        self.cooldown = _nonneg_int("cooldown", cooldown)
        self.min_lrs = [V.lr(m, "min_lr") for m in mins]
        self.eps = V.nonneg("eps", eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            ref = best * (1.0 - self.threshold) if self.threshold_mode == "rel" \
                else best - self.threshold
            return a < ref
        ref = best * (1.0 + self.threshold) if self.threshold_mode == "rel" \
            else best + self.threshold
        return a > ref

    def step(self, metric: float) -> bool:
        """Record one evaluation of the metric; returns whether the lr was reduced."""
        current = float(metric)  # NaN never counts as an improvement
        _float_lrs(self.optimizer, "ReduceLROnPlateau")
        self.last_epoch += 1
        if self._better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            reduced = False
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(group["lr"])
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group["lr"] = new
                    reduced = True
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
            return reduced
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the counters and the best metric so far."""
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` data (checked first)."""
        self.prepare_load(state)()

    def prepare_load(self, state: Mapping[str, Any]) -> Callable[[], None]:
        """Check :meth:`state_dict` data; return the function that restores it."""
        keys = {"best", "num_bad_epochs", "cooldown_counter", "last_epoch"}
        if not isinstance(state, Mapping) or set(state) != keys:
            raise ValueError(f"ReduceLROnPlateau state must have keys {sorted(keys)}")
        if not isinstance(state["best"], (int, float)) or isinstance(state["best"], bool):
            raise ValueError(f"ReduceLROnPlateau state 'best' must be a number, got "
                             f"{state['best']!r}")
        best = float(state["best"])
        counters = {k: _nonneg_int(k, state[k]) for k in keys - {"best"}}

        def apply() -> None:
            self.best = best
            for k, v in counters.items():
                setattr(self, k, v)

        return apply


class BoldDriver:
    """The "bold driver" rule: grow the lr while the loss falls, cut it when it rises.

    Call :meth:`step` with the loss at the current parameters after every optimizer step.
    If the loss went down (or it is the first call), every group's lr is multiplied by
    ``increase``; if it went up, by ``decrease``, and with ``undo=True`` the parameters
    and optimizer state go back to where they were before the step that made it worse
    (this keeps a copy of both, taken at each accepted step).

    Args:
        optimizer: a fastgd optimizer whose groups have float learning rates.
        increase: factor >= 1 applied after an improvement.
        decrease: factor in (0, 1] applied after a worse loss.
        undo: restore the parameters and optimizer state after a worse loss.
        max_lr: an upper bound for the lr.

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.array([3.0])
        >>> opt = fastgd.SGD([w], lr=0.1)
        >>> driver = BoldDriver(opt, increase=1.1, decrease=0.5)
        >>> driver.step(float(w[0] ** 2))
        True
        >>> opt.param_groups[0]["lr"]
        0.11000000000000001
    """

    def __init__(self, optimizer: Any, increase: float = 1.05, decrease: float = 0.5,
                 undo: bool = False, max_lr: float = math.inf) -> None:
        _float_lrs(optimizer, "BoldDriver")
        inc, dec = V.real("increase", increase), V.real("decrease", decrease)
        if inc < 1.0:
            raise ValueError(f"increase must be >= 1, got {increase!r}")
        if not 0.0 < dec <= 1.0:
            raise ValueError(f"decrease must be in (0, 1], got {decrease!r}")
        self.optimizer, self.increase, self.decrease = optimizer, inc, dec
        self.undo = V.flag("undo", undo)
        if not (isinstance(max_lr, (int, float)) and max_lr > 0):
            raise ValueError(f"max_lr must be > 0, got {max_lr!r}")
        self.max_lr = float(max_lr)
        self.last_loss: float | None = None
        self._saved: tuple[list[Any], dict[str, Any]] | None = None
        if self.undo:
            self._snapshot()

    def _snapshot(self) -> None:
        opt = self.optimizer
        self._saved = ([p.copy() for p in opt._params], opt.state_dict())

    def step(self, loss: float) -> bool:
        """Record the loss after a step; returns True if the step was kept.

        A NaN or inf loss counts as worse.
        """
        loss = float(loss)
        _float_lrs(self.optimizer, "BoldDriver")
        better = self.last_loss is None or (math.isfinite(loss) and loss <= self.last_loss)
        factor = self.increase if better else self.decrease
        if better:
            self.last_loss = loss
        elif self.undo and self._saved is not None:
            params, sd = self._saved
            for p, saved in zip(self.optimizer._params, params):
                p[...] = saved
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(sd)
            for g, lr in zip(self.optimizer.param_groups, lrs):
                g["lr"] = lr
        for group in self.optimizer.param_groups:
            group["lr"] = min(float(group["lr"]) * factor, self.max_lr)
        if better and self.undo:
            self._snapshot()
        return better

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the last accepted loss (the undo copy is not part of it)."""
        return {"last_loss": self.last_loss}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` data."""
        self.prepare_load(state)()

    def prepare_load(self, state: Mapping[str, Any]) -> Callable[[], None]:
        """Check :meth:`state_dict` data; return the function that restores it.

        With ``undo``, restoring also takes a fresh copy of the parameters and optimizer
        state as they are then (load those first).
        """
        if not isinstance(state, Mapping) or set(state) != {"last_loss"}:
            raise ValueError("BoldDriver state must have the key 'last_loss'")
        v = state["last_loss"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"BoldDriver state 'last_loss' must be a number or None, got {v!r}")

        def apply() -> None:
            self.last_loss = None if v is None else float(v)
            if self.undo:
                self._snapshot()

        return apply
