r"""Weight averaging: torch.optim.swa_utils' EMA and SWA averages of the parameters.

An optimizer built with ``average=EMA(decay)`` or ``average=SWA(start, every)`` keeps a
running average of its parameters and updates it *inside its step kernel* (one more array
streamed by the same pass; rules that update each parameter whole, such as Adafactor, Muon
and SparseAdam, add one elementwise pass). :class:`WeightAverage` does the same on its own,
for parameters updated by anything else.

The averages are torch's (:class:`torch.optim.swa_utils.AveragedModel`): the first
averaged step copies the parameters, later ones compute

.. math::
    \bar\theta \leftarrow \operatorname{lerp}(\bar\theta, \theta, 1 - \text{decay})
    \quad\text{(EMA)}, \qquad
    \bar\theta \leftarrow \bar\theta + \frac{\theta - \bar\theta}{n + 1}
    \quad\text{(SWA, the mean of the $n + 1$ averaged steps)}.

Example:
    >>> import numpy as np, fastgd
    >>> w = np.zeros(2)
    >>> opt = fastgd.SGD([w], lr=1.0, average=fastgd.SWA())
    >>> for _ in range(4):
    ...     _ = opt.step([-np.ones(2)])      # w: 1, 2, 3, 4
    >>> opt.averaged()[0]                    # the mean of the four
    array([2.5, 2.5])
    >>> with opt.swap_averaged():            # evaluate with the averaged weights
    ...     w.copy()
    array([2.5, 2.5])
    >>> w
    array([4., 4.])
"""

from __future__ import annotations

import contextlib
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fastgd import _backend
from fastgd import _validate as V

__all__ = ["EMA", "SWA", "Averaging", "WeightAverage", "averaging_from_spec"]

#: The name of the averaged weights in an optimizer's per-parameter state.
AVERAGE = "average"


class Averaging(ABC):
    """How the average takes in the parameters after a step (:class:`EMA`, :class:`SWA`)."""

    kind: ClassVar[str]

    @abstractmethod
    def weights(self, n_averaged: int, step: int) -> tuple[float, float] | None:
        """The kernel's ``(w, div)`` for averaging in the parameters after step ``step``.

        Args:
            n_averaged: how many steps the average holds so far.
            step: the 1-based count of steps taken, this one included.

        Returns:
            None if this step is not averaged; else ``div != 0`` for the running mean
            ``avg + (p - avg) / div`` (``div = 1`` copies into a zero average), or
            ``div = 0`` for torch's ``lerp(avg, p, w)``.
        """

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The averaging as plain data (for state dicts and checkpoints)."""


@dataclass(frozen=True)
class EMA(Averaging):
    r"""Exponential moving average of the parameters, updated after every step.

    .. math::
        \bar\theta_1 = \theta_1, \qquad
        \bar\theta_t = \text{decay}\,\bar\theta_{t-1} + (1 - \text{decay})\,\theta_t

    computed as torch's ``lerp`` (``torch.optim.swa_utils.get_ema_multi_avg_fn``).

    Args:
        decay: in [0, 1] (torch's range; 1 keeps the first step's parameters).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.zeros(1)
        >>> opt = fastgd.SGD([w], lr=1.0, average=fastgd.EMA(0.5))
        >>> _ = opt.step([-np.ones(1)]); _ = opt.step([-np.ones(1)])   # w: 1, then 2
        >>> opt.averaged()[0]                                          # 0.5 * 1 + 0.5 * 2
        array([1.5])
    """

    decay: float = 0.999
    kind: ClassVar[str] = "ema"

    def __post_init__(self) -> None:
        object.__setattr__(self, "decay", V.closed_unit("decay", self.decay))

    def weights(self, n_averaged: int, step: int) -> tuple[float, float] | None:
        """Copy on the first averaged step, then torch's lerp with weight 1 - decay."""
        if n_averaged == 0:
            return (1.0, 1.0)  # the first averaged step copies
        return (1.0 - self.decay, 0.0)

    def spec(self) -> dict[str, Any]:
        """``{"kind": "ema", "decay": decay}``."""
        return {"kind": self.kind, "decay": self.decay}


@dataclass(frozen=True)
class SWA(Averaging):
    r"""Stochastic weight averaging: the mean of the parameters after chosen steps.

    The parameters after steps ``start + every``, ``start + 2 every``, ... (counted from
    1) enter an equal-weight running mean,

    .. math:: \bar\theta \leftarrow \bar\theta + (\theta - \bar\theta) / (n + 1),

    torch's ``AveragedModel`` default (Izmailov et al., 2018). Averaging every epoch of
    ``k`` steps from epoch ``e`` on is ``SWA(start=e * k, every=k)``.

    Args:
        start: steps taken before the first averaged one (>= 0).
        every: average every ``every``-th step from there (>= 1).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.zeros(1)
        >>> opt = fastgd.SGD([w], lr=1.0, average=fastgd.SWA(start=2, every=2))
        >>> for _ in range(6):
        ...     _ = opt.step([-np.ones(1)])   # w: 1 .. 6; steps 4 and 6 are averaged
        >>> opt.averaged()[0], opt.n_averaged
        (array([5.]), 2)
    """

    start: int = 0
    every: int = 1
    kind: ClassVar[str] = "swa"

    def __post_init__(self) -> None:
        V.nonneg_int("start", self.start)
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be an integer >= 1, got {self.every!r}")

    def weights(self, n_averaged: int, step: int) -> tuple[float, float] | None:
        """The running mean's divisor n + 1 on averaged steps, None on the others."""
        if step <= self.start or (step - self.start) % self.every:
            return None
        return (0.0, float(n_averaged + 1))

    def spec(self) -> dict[str, Any]:
        """``{"kind": "swa", "start": start, "every": every}``."""
        return {"kind": self.kind, "start": self.start, "every": self.every}


_KINDS: dict[str, type[Averaging]] = {"ema": EMA, "swa": SWA}


def averaging_from_spec(spec: Any) -> Averaging:
    """The :class:`Averaging` a :meth:`Averaging.spec` dict describes.

    Raises:
        ValueError: not such a dict, or values out of range.
    """
    if not isinstance(spec, Mapping) or spec.get("kind") not in _KINDS:
        raise ValueError(f"an averaging spec must be a dict with kind 'ema' or 'swa', got "
                         f"{spec!r}")
    cls = _KINDS[spec["kind"]]
    fields = {k: v for k, v in spec.items() if k != "kind"}
    names = set(cls.__dataclass_fields__) - {"kind"}
    if set(fields) != names:
        raise ValueError(f"a {spec['kind']!r} averaging spec has keys {sorted(names)}, got "
                         f"{sorted(fields)}")
    try:
        return cls(**fields)
    except TypeError as e:
        raise ValueError(f"bad averaging spec {spec!r}: {e}") from None


def check_averaging(average: Any) -> Averaging | None:
    """``average`` if it is None or an :class:`Averaging`, else a TypeError naming it."""
    if average is None or isinstance(average, Averaging):
        return average
    raise TypeError(f"average must be None, fastgd.EMA(decay) or fastgd.SWA(start, every), "
                    f"got {average!r}")


def check_n_averaged(value: Any) -> int:
    """A stored ``n_averaged``: an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"n_averaged must be an integer >= 0, got {value!r}")
    return int(value)


def average_into(p: Any, avg: Any, weights: tuple[float, float]) -> None:
    """Average the 1-D span ``p`` into ``avg`` (``kernels/<backend>/average.py``)."""
    w, div = weights
    # average(p, avg_w, avg_w1, avg_div | avg)
    _backend.launch("average", "average", (), p, w, 1.0 - w, div, avg)


def _together(pairs: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """(parameter, average) kernel arguments for pairs of 1-D spans, fewest launches.

    NumPy spans of a dtype that has several become one pair of
    :class:`fastgd._backend.MultiSpan` (one multi-array launch updates them all, with the
    results of one launch per span); CuPy spans and a dtype's lone span stay as they are;
    empty spans are left out.
    """
    out: list[tuple[Any, Any]] = []
    ps: list[Any] = []
    avs: list[Any] = []
    for p, a in pairs:
        if not p.size:
            continue
        if type(p) is np.ndarray:
            ps.append(p)
            avs.append(a)
        else:
            out.append((p, a))
    if ps:
        out.extend(_backend.per_dtype(ps, avs))
    return out


def swap(a: Any, b: Any) -> None:
    """Exchange the contents of two 1-D spans of one dtype, in place."""
    _backend.launch("average", "swap", (), a, b)


class WeightAverage:
    """An EMA or SWA average of parameters that anything may update (standalone).

    The same average an optimizer's ``average=`` keeps, for parameters that fastgd does
    not step (or steps through several optimizers): call :meth:`update` after each step.
    Over a :class:`~fastgd.FlatParams` each update is one kernel launch per dtype.

    Args:
        params: a list of arrays (NumPy or CuPy, C-contiguous, writeable), a
            :class:`~fastgd.FlatParams` or a FlatGroup.
        average: :class:`EMA` or :class:`SWA`.

    Example:
        >>> import numpy as np, fastgd
        >>> flat = fastgd.FlatParams([(3,)], np.float64)
        >>> ema = fastgd.WeightAverage(flat, fastgd.EMA(0.9))
        >>> for v in (1.0, 2.0):
        ...     flat.params[0][:] = v
        ...     _ = ema.update()
        >>> ema.averaged[0]                    # 0.9 * 1 + 0.1 * 2
        array([1.1, 1.1, 1.1])
    """

    def __init__(self, params: Any, average: Averaging) -> None:
        from fastgd.flat import _AttachedViews

        if check_averaging(average) is None:
            raise TypeError("average must be fastgd.EMA(decay) or fastgd.SWA(start, every), "
                            "got None")
        self.average = average
        plist = list(params.params) if isinstance(params, _AttachedViews) else params
        if isinstance(plist, np.ndarray) or _backend.is_cupy(plist) or not isinstance(
                plist, Sequence):
            raise TypeError("params must be a list of arrays, a FlatParams or a FlatGroup, "
                            f"got {type(params).__name__}")
        if not plist:
            raise ValueError("WeightAverage got an empty parameter list")
        seen: dict[Any, int] = {}
        for i, p in enumerate(plist):
            _backend.check_array(p, f"params[{i}]", writeable=True)
            if type(p) is not type(plist[0]) or _backend.device_of(p) != _backend.device_of(
                    plist[0]):
                raise TypeError(f"params[{i}] is a {_backend.kind(p)}, params[0] is a "
                                f"{_backend.kind(plist[0])}")
            # (as an optimizer's: one array twice would be swapped twice over)
            for key in _backend.identity_keys(p):
                if key in seen:
                    raise ValueError(f"params[{i}] is params[{seen[key]}] again; each "
                                     "parameter may appear once")
                seen[key] = i
        self._params = list(plist)
        #: (parameter span, average span, the parameters' shapes) per run of parameters
        #: that lie back to back in memory
        self._spans: list[tuple[Any, Any, list[tuple[int, ...]]]] = []
        self.averaged: list[Any] = []
        for ps in _runs(self._params):
            span = _backend.span(ps)
            with _backend.on_device_of(span):  # CuPy: on the parameters' GPU
                buf = _backend.xp_of(span).zeros(span.size, span.dtype)
            self._spans.append((span, buf, [p.shape for p in ps]))
            at = 0
            for p in ps:
                self.averaged.append(buf[at : at + p.size].reshape(p.shape))
                at += p.size
        # the launches of an update or a swap: separate NumPy runs of a dtype go together
        self._launches = _together([(span, buf) for span, buf, _ in self._spans])
        #: How many updates the average holds; :attr:`steps` counts :meth:`update` calls.
        self.n_averaged = 0
        self.steps = 0
        self._swapped = False

    def update(self) -> bool:
        """Take the parameters' current values into the average.

        Returns:
            Whether this call averaged (an :class:`SWA` skips the calls before ``start``
            and between its ``every``).
        """
        if self._swapped:
            raise RuntimeError("update() inside swap(): the parameters hold the averaged "
                               "weights")
        self.steps += 1
        weights = self.average.weights(self.n_averaged, self.steps)
        if weights is None:
            return False
        for span, buf in self._launches:
            average_into(span, buf, weights)
        self.n_averaged += 1
        return True

    @contextlib.contextmanager
    def swap(self) -> Iterator[None]:
        """Within the block the parameters hold the averaged weights (swapped back after)."""
        with _swapped(self, self._launches):
            yield

    def state_dict(self) -> dict[str, Any]:
        """``{"average": spec, "n_averaged": n, "steps": k, "averaged": [arrays]}`` (copies)."""
        with _backend.on_device_of(self._params[0]):  # CuPy: copies on their GPU
            averaged = [a.copy() for a in self.averaged]
        return {"average": self.average.spec(), "n_averaged": self.n_averaged,
                "steps": self.steps, "averaged": averaged}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a :meth:`state_dict` (checked in full first; nothing changes on error).

        Raises:
            TypeError, ValueError: another averaging, counts or arrays that do not fit.
        """
        if not isinstance(state_dict, Mapping) or set(state_dict) != {
                "average", "n_averaged", "steps", "averaged"}:
            raise ValueError("state_dict must be a dict with keys 'average', 'n_averaged', "
                             "'steps' and 'averaged'")
        saved = averaging_from_spec(state_dict["average"])
        if saved != self.average:
            raise ValueError(f"state_dict holds the average of {saved}, this WeightAverage "
                             f"keeps {self.average}")
        n = check_n_averaged(state_dict["n_averaged"])
        steps = check_n_averaged(state_dict["steps"])
        arrays = list(state_dict["averaged"])
        if len(arrays) != len(self.averaged):
            raise ValueError(f"state_dict has {len(arrays)} averaged arrays, this "
                             f"WeightAverage has {len(self.averaged)}")
        for i, (a, ours) in enumerate(zip(arrays, self.averaged)):
            a = a.get() if _backend.is_cupy(a) else a
            if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.shape != ours.shape:
                raise ValueError(f"state_dict['averaged'][{i}] must be a float array of "
                                 f"shape {ours.shape}")
            arrays[i] = a
        with _backend.on_device_of(self._params[0]):
            for a, ours in zip(arrays, self.averaged):
                ours[...] = _backend.to_module_of(a.astype(ours.dtype, copy=False), ours)
        self.n_averaged, self.steps = n, steps

    def __repr__(self) -> str:
        return (f"WeightAverage({self.average}, {len(self._params)} arrays, "
                f"n_averaged={self.n_averaged})")


def _runs(params: list[Any]) -> list[list[Any]]:
    """The parameters in runs of one dtype that one 1-D span covers (back to back)."""
    runs: list[list[Any]] = []
    end = None
    for p in params:
        if runs and p.dtype == runs[-1][0].dtype and (not p.size or
                                                      _backend.address(p) == end):
            runs[-1].append(p)
        else:
            runs.append([p])
        if p.size:
            end = _backend.address(p) + p.nbytes
    out = []
    for run in runs:  # adjacent, but maybe of different buffers: then one by one
        out.extend([run] if _backend.span(run) is not None else [[p] for p in run])
    return out


@contextlib.contextmanager
def _swapped(owner: Any, pairs: list[tuple[Any, Any]]) -> Iterator[None]:
    """Swap each (parameter span, average span) pair in, and out again after the block."""
    if owner._swapped:
        raise RuntimeError("the averaged weights are already swapped in")
    if owner.n_averaged == 0:
        raise RuntimeError("no step has been averaged yet: nothing to swap in")
    pairs = _together(pairs)
    for p, a in pairs:
        swap(p, a)
    owner._swapped = True
    try:
        yield
    finally:
        for p, a in pairs:
            swap(p, a)
        owner._swapped = False
