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
:class:`~fastgd.controllers.ReduceLROnPlateau` (torch's semantics) and
:class:`~fastgd.controllers.BoldDriver`; they live in :mod:`fastgd.controllers` and are
importable from here as well.

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
    "cyclic",
    "exponential_decay",
    "from_spec",
    "inverse_time_decay",
    "join",
    "lambda_lr",
    "linear",
    "lr_or_schedule",
    "multi_step",
    "multiplicative",
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



def lr_or_schedule(name: str, value: Any) -> Any:
    """A learning rate (float) or a schedule (also given as its spec dict), for ``name``.

    The ``lr`` checker of every optimizer's hyperparameter table.

    Raises:
        TypeError: another callable (wrap it in a schedule) or a non-number.
        ValueError: a negative or non-finite learning rate, or a bad spec.
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dict) and "schedule" in value:
        return from_spec(value)
    if callable(value):
        raise TypeError(f"{name} must be a float or a fastgd.schedules schedule, got "
                        f"{value!r}; wrap other callables with a schedule")
    return V.lr(value, name)


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
    ms = [V.nonneg_int("milestones[i]", m) for m in milestones]
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
                       transition_begin=V.nonneg_int("transition_begin", transition_begin))


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


class _Cyclic(Schedule):
    name = "cyclic"

    def _value(self, t: int) -> float:
        p = self._params
        up = p["step_size_up"]
        total = up + (up if p["step_size_down"] is None else p["step_size_down"])
        ratio = up / total
        cycle = math.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        factor = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        height = (p["max_lr"] - p["base_lr"]) * factor
        if p["mode"] == "triangular":
            scale = 1.0
        elif p["mode"] == "triangular2":
            scale = 1 / (2.0 ** (cycle - 1))
        else:  # exp_range scales by the step count, not the cycle
            scale = p["gamma"] ** t
        return p["base_lr"] + height * scale


def cyclic(base_lr: float, max_lr: float, step_size_up: int = 2000,
           step_size_down: int | None = None, mode: str = "triangular",
           gamma: float = 1.0) -> Schedule:
    """A cyclical learning rate (Smith, 2017), the learning rate of torch's CyclicLR.

    Rises from ``base_lr`` to ``max_lr`` over ``step_size_up`` steps and falls back over
    ``step_size_down`` (default: the same), repeatedly; ``"triangular2"`` halves the height
    every cycle, ``"exp_range"`` scales it by ``gamma ** step``. torch's CyclicLR also
    cycles the momentum by default (``cycle_momentum=True``); this schedule is the learning
    rate alone (compare with ``cycle_momentum=False``).

    Args:
        base_lr: the lower bound.
        max_lr: the upper bound.
        step_size_up: steps rising (positive integer).
        step_size_down: steps falling, or None for ``step_size_up``.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: the ``exp_range`` decay per step, in (0, 1].

    Example:
        >>> f = cyclic(0.1, 1.0, step_size_up=4)
        >>> [round(f(t), 3) for t in range(9)]
        [0.1, 0.325, 0.55, 0.775, 1.0, 0.775, 0.55, 0.325, 0.1]
    """
    if mode not in ("triangular", "triangular2", "exp_range"):
        raise ValueError(f"mode must be 'triangular', 'triangular2' or 'exp_range', got "
                         f"{mode!r}")
    g = V.real("gamma", gamma)
    if not 0.0 < g <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    down = None if step_size_down is None else _pos_int("step_size_down", step_size_down)
    return _Cyclic(base_lr=V.lr(base_lr, "base_lr"), max_lr=V.lr(max_lr, "max_lr"),
                   step_size_up=_pos_int("step_size_up", step_size_up),
                   step_size_down=down, mode=mode, gamma=g)


def _callable(name: str, fn: Any) -> Callable[[int], float]:
    if not callable(fn) or isinstance(fn, Schedule):
        raise TypeError(f"{name} must be a function of the step count, got {fn!r}")
    return fn


class _Lambda(Schedule):
    name = "lambda_lr"

    def _value(self, t: int) -> float:
        return self._params["init_value"] * float(self._params["fn"](t))


def lambda_lr(init_value: float, fn: Callable[[int], float]) -> Schedule:
    """``init_value * fn(count)``, torch's LambdaLR (``lr_lambda``).

    The function is part of the schedule's spec, so a state dict holds it as the function
    itself, and a checkpoint cannot store it (``fastgd.save`` refuses it: rebuild the
    schedule when resuming). Each value is checked when the optimizer uses it.

    Args:
        init_value: the learning rate ``fn`` multiplies.
        fn: a function of the applied-step count (0 for the first update).

    Example:
        >>> f = lambda_lr(0.5, lambda t: 0.9**t)
        >>> f(0), round(f(2), 4)
        (0.5, 0.405)
    """
    return _Lambda(init_value=V.lr(init_value, "init_value"), fn=_callable("fn", fn))


class _Multiplicative(Schedule):
    name = "multiplicative"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._cache: list[float] = [params["init_value"]]  # the values so far, by count

    def _value(self, t: int) -> float:
        cache, fn = self._cache, self._params["fn"]
        while len(cache) <= t:
            cache.append(cache[-1] * float(fn(len(cache))))
        return cache[t]


def multiplicative(init_value: float, fn: Callable[[int], float]) -> Schedule:
    """``lr(t) = lr(t - 1) * fn(t)`` from ``lr(0) = init_value``: torch's MultiplicativeLR.

    A pure function of the count: its values are computed once, in order, and kept (a
    count met again is a look-up), so resuming at step N gives the same sequence. The
    function is part of the spec, as for :func:`lambda_lr`.

    Args:
        init_value: the first learning rate.
        fn: the factor at each count ``t >= 1``.

    Example:
        >>> f = multiplicative(1.0, lambda t: 0.5)
        >>> [f(t) for t in range(4)]
        [1.0, 0.5, 0.25, 0.125]
    """
    return _Multiplicative(init_value=V.lr(init_value, "init_value"), fn=_callable("fn", fn))


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
    bounds = [V.nonneg_int("boundaries[i]", b) for b in boundaries]
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
    "one_cycle": one_cycle, "join": join, "cyclic": cyclic, "lambda_lr": lambda_lr,
    "multiplicative": multiplicative,
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


# The stateful controllers live in fastgd.controllers; they are importable from here too.
from fastgd.controllers import BoldDriver, ReduceLROnPlateau  # noqa: E402
