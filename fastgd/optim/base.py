"""The optimizer base class: param groups, flat state, one kernel call per segment.

A *segment* is a run of parameters of one group and one dtype that lie back to back in
memory (all of a :class:`~fastgd.FlatParams` buffer, or a single array). Its optimizer state
is allocated flat, one buffer per state name, so a step over a segment is one kernel call.
Scalar state (the step count, NAdam's ``mu_product``) is per parameter, as in torch; while
every parameter of a segment shares it (the usual case), it is kept once on the segment.

``param_groups`` is the user's to edit between steps, as in torch: hyperparameter values
(also edited in place, e.g. ``group["betas"][1] = 0.99``), the groups themselves (``pop``,
``append``, assignment) and their ``"params"`` lists. Every step compares what it sees with
the layout it was built for and rebuilds the segments when they differ, keeping the state
of every parameter that is still there; the new layout is checked in full before anything
changes.
"""

from __future__ import annotations

import contextlib
import copy
import math
import operator
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any, ClassVar

import numpy as np

from fastgd import _backend
from fastgd import _validate as V
from fastgd import clip as _clip
from fastgd.averaging import (
    AVERAGE,
    Averaging,
    _swapped,
    average_into,
    averaging_from_spec,
    check_averaging,
    check_n_averaged,
)
from fastgd.flat import _AttachedViews
from fastgd.schedules import Schedule
from fastgd.sparse import SparseGrad

__all__ = ["Optimizer"]

Scalars = dict[str, float]

#: Piece bounds ``(k0, k1)`` that stand for "the whole segment, at its shared scalar state"
#: in a step's plan (see :meth:`Optimizer._plan`): no parameter range needs slicing out.
WHOLE_SEGMENT = (-1, -1)

_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_C_CONTIGUOUS = operator.attrgetter("flags.c_contiguous")
_SHARED = operator.attrgetter("shared")


class _Segment:
    """Parameters of one group and dtype that lie back to back in memory.

    A state buffer holds one slice per parameter: of the parameter's size (every
    elementwise rule), or of another shape per parameter (Adafactor's row and column
    statistics), described by ``layouts[name] = (offsets, shapes)``; a shape of None means
    the parameter has no such buffer.
    """

    __slots__ = ("grad_span", "index", "layouts", "offsets", "shapes", "shared", "span",
                 "state")

    def __init__(self, index: list[int], params: list[np.ndarray], span: np.ndarray,
                 grad_span: np.ndarray | None, init: Scalars) -> None:
        self.index = index
        self.shapes = [p.shape for p in params]
        self.offsets = [0]
        for p in params:
            self.offsets.append(self.offsets[-1] + p.size)
        self.span = span
        self.grad_span = grad_span
        self.state: dict[str, np.ndarray] = {}
        self.layouts: dict[str, tuple[list[int], list[tuple[int, ...] | None]]] = {}
        # The scalar state all of the segment's parameters share, or None when they differ
        # (then Optimizer._scalars holds each parameter's own).
        self.shared: Scalars | None = init

    def view(self, name: str, k: int) -> np.ndarray | None:
        """The ``k``-th parameter's view of state buffer ``name`` (None: it has none)."""
        layout = self.layouts.get(name)
        if layout is None:
            lo, hi = self.offsets[k], self.offsets[k + 1]
            return self.state[name][lo:hi].reshape(self.shapes[k])
        offsets, shapes = layout
        if shapes[k] is None:
            return None
        return self.state[name][offsets[k] : offsets[k + 1]].reshape(shapes[k])


def _segments(index: list[int], params: list[np.ndarray], attached: list[Any],
              init: Scalars) -> list[_Segment]:
    """Split one group's parameters into segments (by dtype, then memory adjacency)."""
    by_dtype: dict[np.dtype, list[int]] = {}
    for k, p in enumerate(params):
        by_dtype.setdefault(p.dtype, []).append(k)
    out = []
    for ks in by_dtype.values():
        runs: list[list[int]] = []
        end = None
        for k in ks:
            p = params[k]
            if runs and not p.size:  # occupies no memory: joins the run wherever it points
                runs[-1].append(k)
                continue
            a = _backend.address(p)
            if runs and a == end:
                runs[-1].append(k)
            else:
                runs.append([k])
            end = a + p.nbytes
        for run in runs:
            sp = _backend.span([params[k] for k in run])
            pieces = [run] if sp is not None else [[k] for k in run]
            for piece in pieces:
                ps = [params[k] for k in piece]
                pspan = sp if len(pieces) == 1 else ps[0].reshape(-1)
                grads = [attached[k] for k in piece]
                gspan = None if any(g is None for g in grads) else _backend.span(grads)
                out.append(_Segment([index[k] for k in piece], ps, pspan, gspan, init))
    return out


class _Edits:
    """A counter of layout edits, shared by an optimizer and its param_groups containers.

    Every edit that may change which arrays a step updates (a group added, removed or
    replaced, a group's ``"params"`` assigned or edited in place) increments ``layout``, so
    a step finds out whether to rebuild its segments with one comparison.
    """

    __slots__ = ("layout",)

    def __init__(self) -> None:
        self.layout = 0


def _flat_grad(g: Any) -> Any:
    """A gradient's values as one 1-D array (a SparseGrad's rows), for norms and checks."""
    return g.values.reshape(-1) if isinstance(g, SparseGrad) else g.reshape(-1)


class _ParamList(list):  # type: ignore[type-arg]
    """A param group's ``"params"`` list: counts its in-place edits, so a step sees them."""

    __slots__ = ("_edits", "version")

    def __init__(self, items: Any = (), edits: _Edits | None = None) -> None:
        super().__init__(items)
        self.version = 0
        self._edits = edits or _Edits()

    def __reduce__(self) -> tuple[Any, ...]:  # copies and pickles are plain lists
        return (list, (list(self),))


class _GroupList(list):  # type: ignore[type-arg]
    """``optimizer.param_groups``: counts groups added, removed or replaced."""

    __slots__ = ("_edits",)

    def __init__(self, items: Any = (), edits: _Edits | None = None) -> None:
        super().__init__(items)
        self._edits = edits or _Edits()

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))


class _Group(dict):  # type: ignore[type-arg]
    """One param group: counts its edits (``version``), and layout edits (``"params"``)."""

    __slots__ = ("_edits", "version")

    def __init__(self, items: Any = (), edits: _Edits | None = None) -> None:
        super().__init__(items)
        self.version = 0
        self._edits = edits or _Edits()

    def __reduce__(self) -> tuple[Any, ...]:  # copies and pickles are plain dicts
        return (dict, (dict(self),))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.version += 1
        if key == "params":
            self._edits.layout += 1
        dict.__setitem__(self, key, value)


def _counting(cls: type, name: str, versioned: bool) -> None:
    method = getattr(cls.__mro__[1], name)

    def edit(self: Any, *args: Any, **kwargs: Any) -> Any:
        if versioned:
            self.version += 1
        self._edits.layout += 1
        return method(self, *args, **kwargs)

    edit.__name__ = name
    setattr(cls, name, edit)


for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend",
              "insert", "pop", "remove", "clear", "sort", "reverse"):
    _counting(_ParamList, _name, True)
    _counting(_GroupList, _name, False)
for _name in ("__delitem__", "__ior__", "pop", "popitem", "clear", "update", "setdefault"):
    _counting(_Group, _name, True)


class _Same:
    """Compares by identity (a schedule, an opaque object) inside a hyperparameter key."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


_ATOMS = frozenset({float, int, bool, str, type(None)})


def _freeze(v: Any) -> Any:
    """A snapshot of a hyperparameter value that compares by content.

    Lists and arrays edited in place then compare unequal to their earlier snapshot, and
    arrays compare without NumPy's elementwise ``==``.
    """
    t = type(v)
    if t in _ATOMS or isinstance(v, np.generic):
        return v
    if t is tuple or t is list:
        return (t, tuple(_freeze(x) for x in v))
    if isinstance(v, np.ndarray) or _backend.is_cupy(v):
        host = _backend.to_module_of(v, np.empty(0)) if _backend.is_cupy(v) else v
        return ("ndarray", host.dtype.str, host.shape, host.tobytes())
    if isinstance(v, dict):
        return ("dict", tuple((k, _freeze(x)) for k, x in v.items()))
    return _Same(v)


def _needs_snapshot(v: Any) -> bool:
    """Whether a hyperparameter value can change in place (a list, dict or array)."""
    t = type(v)
    if t is list or t is dict or isinstance(v, np.ndarray) or _backend.is_cupy(v):
        return True
    return t is tuple and any(_needs_snapshot(x) for x in v)


def _frozen(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``values`` as a key that sees in-place edits (itself when every value is immutable)."""
    for v in values:
        t = type(v)
        if t not in _ATOMS and not (t is tuple and all(type(x) in _ATOMS for x in v)):
            return tuple(_freeze(x) for x in values)
    return values


def _torch_options(who: str, *, foreach: Any, fused: Any, differentiable: Any,
                   capturable: Any) -> None:
    """Accept torch.optim's implementation switches, which mean nothing here.

    Every fastgd update is already one fused kernel per segment, so ``foreach`` and
    ``fused`` (None, True or False) change nothing. ``differentiable=True`` (autograd
    through the step) and ``capturable=True`` (CUDA-graph capture) are refused.
    """
    for name, value in (("foreach", foreach), ("fused", fused)):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name} must be None, True or False, got {value!r}")
    if foreach and fused:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if V.flag("differentiable", differentiable):
        raise ValueError(f"{who}(differentiable=True) is not supported: fastgd's kernels "
                         "update arrays in place outside any autograd graph")
    if V.flag("capturable", capturable):
        raise ValueError(f"{who}(capturable=True) is not supported: CUDA-graph capture is "
                         "not available; fastgd's CUDA steps never synchronize with the host "
                         "anyway")


class Optimizer(ABC):
    """Base class of fastgd's optimizers (torch.optim-style param groups and state).

    Subclasses define the hyperparameter defaults and four hooks: ``_normalize`` (check a
    group's hyperparameters, return them as plain floats/bools), ``_state_names``,
    ``_state_init`` and ``_update`` (one kernel call through :mod:`fastgd.functional`).

    ``param_groups`` may be edited between steps as in torch (values, in-place edits of
    list values, groups popped, appended or replaced, a group's ``"params"`` replaced or
    edited): the next step checks the edit in full before any array changes and keeps the
    state of every parameter still there. ``step`` holds a lock, so threads stepping one
    optimizer take turns instead of losing updates.

    Args:
        params: a list of arrays, a :class:`~fastgd.FlatParams`, or a list of dicts, each
            with ``"params"`` and per-group hyperparameter overrides.
        defaults: the hyperparameter defaults of the optimizer. ``lr`` may be a float or a
            :mod:`fastgd.schedules` schedule, evaluated at :attr:`steps_applied`.
        nonfinite: what :meth:`step` does when a gradient holds NaN or inf:
            ``"propagate"`` (apply it, as torch does: NaN reaches the parameters),
            ``"skip"`` (change nothing, return False) or ``"raise"``
            (:class:`fastgd.clip.NonFiniteGradientError`, nothing changed). Detection is
            fused into the norm pass when clipping; otherwise it costs one read of the
            gradients.
        foreach: accepted for torch.optim code (None, True or False); no effect, every
            update is already fused.
        fused: likewise.
        differentiable: only False (torch's default) is accepted.
        capturable: only False (torch's default) is accepted.
        average: weight averaging of the parameters, :class:`~fastgd.EMA` or
            :class:`~fastgd.SWA` (torch.optim.swa_utils' averages), updated by the step
            kernels as one more stream; read with :meth:`averaged`, evaluate with
            :meth:`swap_averaged`. Part of :meth:`state_dict` and checkpoints.
    """

    #: Whether ``average=`` is supported (not by LBFGS, whose steps are whole solves).
    can_average: ClassVar[bool] = True

    #: Whether :meth:`_update` takes ``average=(buffer, w, div)`` and updates the average
    #: in its kernel; other rules get one elementwise averaging pass after their update.
    fused_average: ClassVar[bool] = False

    #: Whether :meth:`_update` is one elementwise kernel launch (each element's update reads
    #: only that element): then separate arrays alike are updated by one multi-array
    #: launch (a list of arrays costs one call, not one per array).
    elementwise: ClassVar[bool] = False

    #: Scalar state of a parameter that has not stepped yet.
    _scalar_init: ClassVar[Scalars] = {"step": 0.0}

    #: Hyperparameters added after the first release, with the values that reproduce the
    #: update from before them: a state dict saved without them loads with these. ``maximize``
    #: is one for every optimizer, as in torch (its ``test_can_load_older_state_dict``).
    _added_hyperparameters: ClassVar[dict[str, Any]] = {"maximize": False}

    #: The policies for non-finite gradients (see ``nonfinite`` in :class:`Optimizer`).
    NONFINITE_POLICIES = ("propagate", "skip", "raise")

    def __init__(self, params: Any, defaults: dict[str, Any], *,
                 nonfinite: str = "propagate", foreach: bool | None = None,
                 fused: bool | None = None, differentiable: bool = False,
                 capturable: bool = False, average: Averaging | None = None) -> None:
        _torch_options(type(self).__name__, foreach=foreach, fused=fused,
                       differentiable=differentiable, capturable=capturable)
        average = check_averaging(average)
        if average is not None and not self.can_average:
            raise TypeError(f"{type(self).__name__} does not take average=: its steps are "
                            "whole solves; use fastgd.WeightAverage to average its parameters")
        #: The weight averaging (:class:`~fastgd.EMA`, :class:`~fastgd.SWA`) or None.
        self.average = average
        #: How many steps the weight average holds.
        self.n_averaged = 0
        self._swapped = False
        if nonfinite not in self.NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {self.NONFINITE_POLICIES}, got "
                             f"{nonfinite!r}")
        #: What a step does with a NaN or inf gradient: "propagate" (torch's behaviour),
        #: "skip" (nothing changes, the step is counted in steps_skipped) or "raise".
        self.nonfinite = nonfinite
        #: Steps applied / skipped so far; schedules are evaluated at steps_applied.
        self.steps_applied = 0
        self.steps_skipped = 0
        #: The gradient norm of the last step taken with ``clip_norm`` (else None).
        self.last_grad_norm: float | None = None
        self.defaults = dict(defaults)
        names = tuple(self.defaults)
        getter = operator.itemgetter(*names)
        self._hp_key = getter if len(names) > 1 else (lambda g: (getter(g),))
        self._lock = threading.RLock()
        self._reset_layout()
        self._layout_version = 0
        groups = [dict(g) for g in self._groups_from(params)]
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        self._relayout(groups)
        #: Whether the parameters are CuPy arrays (the CUDA backend).
        self._cuda = _backend.is_cupy(self._params[0])

    #: What a pickle keeps besides the param groups (the layout is rebuilt from them).
    _LAYOUT_FIELDS = ("_params", "_attached", "_scalars", "_segments", "_checked", "_flats",
                      "_attached_all", "_group_refs", "_groups_seen", "_layout_seen",
                      "_plain", "_edits", "param_groups", "_multi_cache", "_together",
                      "_grad_spans")

    def __getstate__(self) -> dict[str, Any]:
        """The optimizer as plain data: its param groups and its state dict.

        A group built on a FlatParams keeps it (not copies of its views), so an optimizer
        pickled with its model steps that model again.
        """
        with self._lock:
            self._sync()
            state = {k: v for k, v in self.__dict__.items()
                     if k not in self._LAYOUT_FIELDS and k != "_lock"}
            groups = []
            for group, ref in zip(self.param_groups, self._group_refs):
                origin = ref[3]
                groups.append({**group, "params": origin if origin is not None
                               else list(group["params"])})
            state["_pickled_groups"] = groups
            state["_pickled_state"] = self.state_dict() if not self._swapped else None
            return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        groups = state.pop("_pickled_groups")
        saved = state.pop("_pickled_state")
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._reset_layout()
        self._relayout([dict(g) for g in groups])
        if saved is not None:
            self.load_state_dict(saved)
            for values, group in zip(groups, self.param_groups):  # as they were (a list
                for k in self.defaults:                           # stays a list)
                    if k in values and group[k] is not values[k]:
                        group[k] = values[k]

    def _reset_layout(self) -> None:
        """The empty layout :meth:`_relayout` builds on."""
        self._edits = _Edits()
        self.param_groups: list[dict[str, Any]] = _GroupList((), self._edits)
        self._params: list[np.ndarray] = []
        self._attached: list[np.ndarray | None] = []
        self._scalars: list[Scalars] = []
        self._segments: list[list[_Segment]] = []
        # per group: (group dict, its edit count, a snapshot of its hyperparameters or None,
        # the checked values, the raw values); see _checked_entry
        self._checked: list[tuple[Any, ...]] = []
        self._flats: list[_AttachedViews] = []
        self._attached_all: tuple[np.ndarray, ...] | None = None
        # What the layout was built from: per group (dict, its "params" list, that list's
        # edit count, the FlatParams / FlatGroup it came from or None); see _sync.
        self._group_refs: list[tuple[dict[str, Any], _ParamList, int, Any]] = []
        self._groups_seen: list[dict[str, Any]] = self.param_groups
        self._layout_seen = 0  # self._edits.layout when the layout was last confirmed
        self._plain = False  # some group container is not ours: check it every step
        # MultiSpans (raw addresses) of segments updated together; see _update_together
        self._multi_cache: dict[tuple[Any, ...], Any] = {}
        # per group of separate segments (their ids) that _step_separate last launched:
        # (layout version, the scalar state it gave every one of them); cleared by any
        # other step, which may give some of them another
        self._together: dict[tuple[int, ...], tuple[int, Scalars]] = {}
        # per segment of several parameters: the 1-D span of the gradients last given for
        # it (found again for the same gradient objects, without reading their addresses)
        self._grad_spans = _backend.SpanMemo()

    # -- construction ----------------------------------------------------------------

    @staticmethod
    def _groups_from(params: Any) -> list[dict[str, Any]]:
        if isinstance(params, _AttachedViews):
            return [{"params": params}]
        if isinstance(params, np.ndarray) or _backend.is_cupy(params) or isinstance(
            params, (str, bytes, Mapping)
        ):
            raise TypeError(
                "params must be a list of arrays, a FlatParams or a list of dicts, got "
                f"{type(params).__name__}; wrap a single array in a list"
            )
        try:
            items = list(params)
        except TypeError:
            raise TypeError(
                "params must be a list of arrays, a FlatParams or a list of dicts, got "
                f"{type(params).__name__}"
            ) from None
        if not items:
            raise ValueError("optimizer got an empty parameter list")
        if all(isinstance(x, Mapping) for x in items):
            return [dict(x) for x in items]
        if any(isinstance(x, Mapping) for x in items):
            raise TypeError("params mixes dicts (param groups) and arrays")
        return [{"params": items}]

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group of parameters with its own hyperparameters (torch's semantics).

        Args:
            param_group: ``{"params": arrays, a FlatParams or a FlatGroup
                (``flat.select(indices)``), "<hyperparameter>": value}``;
                missing hyperparameters take the optimizer's defaults.

        Raises:
            TypeError, ValueError: bad parameters or hyperparameters; nothing is added.
        """
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError("a param group must be a dict with a 'params' entry")
        with self._lock:
            self._sync()
            self._relayout([*self.param_groups, dict(param_group)])

    def _group_arrays(self, gi: int, group: dict[str, Any], attached_of: dict[int, Any],
                      refs: dict[int, tuple[Any, ...]]) -> tuple[list[Any], list[Any], Any]:
        """A group's parameters, their attached gradients and the FlatParams they came from."""
        raw = group["params"]
        ref = refs.get(id(group))
        if ref is not None and raw is ref[1] and raw.version == ref[2]:
            params, origin = list(raw), ref[3]  # unchanged since the last layout
        elif isinstance(raw, _AttachedViews):
            return list(raw.params), list(raw.grads), raw
        elif isinstance(raw, np.ndarray) or _backend.is_cupy(raw):
            params, origin = [raw], None
        elif isinstance(raw, (str, bytes, Mapping)):
            raise TypeError(f"param_groups[{gi}]['params'] must be a list of arrays, a "
                            f"FlatParams or a FlatGroup, got {type(raw).__name__}")
        else:
            try:
                params, origin = list(raw), None
            except TypeError:
                raise TypeError(f"param_groups[{gi}]['params'] must be a list of arrays, a "
                                f"FlatParams or a FlatGroup, got {type(raw).__name__}"
                                ) from None
        return params, [attached_of.get(id(p)) for p in params], origin

    def _relayout(self, groups: list[Any]) -> None:
        """Make ``groups`` this optimizer's param groups, checked in full first.

        Parameters that were already here keep their state (buffers and scalars), wherever
        they now are; parameters that left lose theirs, as torch's state dict drops them.
        Missing hyperparameters are set to the defaults in the group dicts (torch's
        ``add_param_group`` does the same) only once everything has been checked.

        Raises:
            TypeError, ValueError: a group, parameter or hyperparameter is not valid;
                nothing changed.
        """
        own = groups is not self.param_groups  # new groups (construction, add_param_group)
        attached_of = {id(p): g for p, g in zip(self._params, self._attached)
                       if g is not None}
        refs = {id(r[0]): r for r in self._group_refs}
        plan = []
        params: list[Any] = []
        seen: set[Any] = set()  # the parameters' identity keys
        first = None
        for gi, group in enumerate(groups):
            if not isinstance(group, dict) or "params" not in group:
                raise TypeError(f"param_groups[{gi}] must be a dict with a 'params' entry, "
                                f"got {group!r}")
            if own and type(group) is dict and not any(group is g for g in self.param_groups):
                group = groups[gi] = _Group(group, self._edits)  # a copy of ours
            ps, att, origin = self._group_arrays(gi, group, attached_of, refs)
            if not ps:
                raise ValueError(f"param group {gi} got an empty parameter list")
            for p in ps:
                name = f"params[{len(params)}]"
                _backend.check_array(p, name, writeable=True)
                self._check_param(p, name)
                if first is None:
                    first = p
                if type(p) is not type(first) or (
                        _backend.device_of(p) != _backend.device_of(first)):
                    where = (f" on device {_backend.device_of(p)}" if _backend.is_cupy(p)
                             else "")
                    raise TypeError(
                        f"{name} is a {_backend.kind(p)}{where}, params[0] is a "
                        f"{_backend.kind(first)}"
                        + (f" on device {_backend.device_of(first)}"
                           if _backend.is_cupy(first) else "")
                        + "; one optimizer updates arrays of one kind on one device"
                    )
                keys = _backend.identity_keys(p)
                if not seen.isdisjoint(keys):
                    raise ValueError(f"some parameters appear more than once ({name})")
                seen.update(keys)
                params.append(p)
            # (a list or array default is copied: groups never share a mutable value)
            missing = {k: copy.deepcopy(v) if _needs_snapshot(v) else v
                       for k, v in self.defaults.items() if k not in group}
            hp = self._normalize({**group, **missing, "params": ps})
            plan.append((group, ps, att, origin, missing, hp))
        # -- everything is checked: commit --------------------------------------------------
        self._layout_version += 1
        old = {}
        for segs in self._segments:
            for seg in segs:
                for k, i in enumerate(seg.index):
                    p = self._params[i]
                    views = {name: seg.view(name, k) for name in seg.state}
                    old[id(p)] = (p, self._scalar_state(seg, i),
                                  {n: v for n, v in views.items() if v is not None})
        self._params, self._attached, self._scalars = [], [], []
        self._segments, self._checked, self._flats, self._group_refs = [], [], [], []
        for group, ps, att, origin, missing, hp in plan:
            dict.update(group, missing)
            plist = group["params"]
            if type(plist) is not _ParamList or plist._edits is not self._edits or len(
                    plist) != len(ps) or any(a is not b for a, b in zip(plist, ps)):
                plist = _ParamList(ps, self._edits)
                dict.__setitem__(group, "params", plist)
            base = len(self._params)
            index = list(range(base, base + len(ps)))
            self._params.extend(ps)
            self._attached.extend(att)
            self._scalars.extend([self._scalar_init] * len(ps))
            segs = _segments(index, ps, att, self._scalar_init)
            for seg in segs:
                self._restore(seg, hp, old)
            self._segments.append(segs)
            self._checked.append(self._checked_entry(group, hp))
            self._group_refs.append((group, plist, plist.version, origin))
            if origin is not None:
                self._flats.append(origin)
        if groups is not self.param_groups:  # add_param_group, __init__: our own list
            list.__setitem__(self.param_groups, slice(None), groups)
        self._groups_seen = self.param_groups
        self._plain = type(self.param_groups) is not _GroupList or any(
            type(g) is not _Group or g._edits is not self._edits for g in self.param_groups)
        if len(self._flats) == 1 and len(self._flats[0].grads) == len(self._params):
            # so that step(flat.grads) is recognized as the attached gradients at once
            self._attached_all = self._flats[0].grads
        elif self._attached and all(g is not None for g in self._attached):
            self._attached_all = tuple(self._attached)
        else:
            self._attached_all = None
        if self._params:
            self._cuda = _backend.is_cupy(self._params[0])
        self._layout_seen = self._edits.layout

    def _checked_entry(self, group: Mapping[str, Any], hp: dict[str, Any]) -> tuple[Any, ...]:
        """What :meth:`_hyper` compares a group with: (group, version, key or None, hp, raw).

        The key (a snapshot of the values) is kept only when a value can change in place
        (a list, dict or array) or the group is not one of ours; else the group's edit count
        says whether anything changed.
        """
        raw = self._hp_key(group)
        key = None
        if type(group) is not _Group or any(_needs_snapshot(v) for v in raw):
            key = _frozen(raw)
        return (group, getattr(group, "version", -1), key, hp, raw)

    def _restore(self, seg: _Segment, hp: Mapping[str, Any],
                 old: Mapping[int, tuple[Any, Scalars, dict[str, Any]]]) -> None:
        """Give a new segment the state its parameters had in the previous layout."""
        kept = [(k, old[id(self._params[i])]) for k, i in enumerate(seg.index)
                if id(self._params[i]) in old]
        if not kept:
            return
        names = [n for _, (_, _, views) in kept for n in views]
        self._ensure_state(seg, hp, tuple(dict.fromkeys(names)))
        for k, (_, scalars, views) in kept:
            for name, v in views.items():
                target = seg.view(name, k)
                if target is not None and target.shape == v.shape:
                    target[...] = v
            self._scalars[seg.index[k]] = scalars
        first = self._scalars[seg.index[0]]
        seg.shared = first if all(self._scalars[i] == first for i in seg.index) else None

    def _layout_changed(self) -> bool:
        """Whether ``param_groups`` no longer holds the groups and arrays of the layout."""
        groups = self.param_groups
        refs = self._group_refs
        if groups is not self._groups_seen or len(groups) != len(refs):
            return True
        for g, ref in zip(groups, refs):
            if g is not ref[0]:
                return True
            plist = ref[1]
            if g.get("params") is not plist or plist.version != ref[2]:
                return True
        return False

    def _sync(self) -> None:
        """Rebuild the layout if ``param_groups`` was edited since it was built.

        One comparison when nothing changed (the edit counter of the containers this
        optimizer made); a check per group when some container is the user's own.
        """
        if (self.param_groups is self._groups_seen and not self._plain
                and self._edits.layout == self._layout_seen):
            return
        if not self._layout_changed():
            self._layout_seen = self._edits.layout
            return
        groups = self.param_groups
        if not isinstance(groups, list):
            raise TypeError(f"param_groups must be a list of dicts, got "
                            f"{type(groups).__name__}")
        self._relayout(groups)

    @property
    def params(self) -> tuple[Any, ...]:
        """Every parameter, in the order of the param groups (the order ``step`` takes)."""
        with self._lock:
            self._sync()
            return tuple(self._params)

    def resolve_grads(self, grads: Sequence[Any] | None = None) -> Sequence[Any]:
        """The gradients a ``step(grads)`` call would use, checked, one per parameter.

        Args:
            grads: one gradient (or None) per parameter, or None for the gradients attached
                through a FlatParams / FlatGroup.

        Returns:
            One entry per parameter of :attr:`params`: a C-contiguous array (a copy of a
            non-contiguous gradient) or None.

        Raises:
            TypeError, ValueError: as :meth:`step` for bad gradients.
        """
        with self._lock:
            self._sync()
            if grads is None or grads is self._attached_all:
                return self._attached_grads()
            return list(self._check_grads(grads))  # the caller's own list

    def _attached_grads(self) -> Sequence[Any]:
        if self.sparse_gradients:
            raise TypeError(f"{type(self).__name__} needs sparse gradients: pass step() one "
                            "SparseGrad (or None) per parameter; it does not use a "
                            "FlatParams' dense gradient views")
        if self._attached_all is None:
            raise ValueError(
                "step() needs grads: one array (or None) per parameter; it can only be "
                "omitted when every parameter comes from a FlatParams"
            )
        return self._attached_all

    # -- hooks for subclasses ----------------------------------------------------------

    #: Each hyperparameter's checker, ``check(name, value) -> value`` (see
    #: :mod:`fastgd._validate`): the one place a rule declares its ranges. The classes'
    #: groups and the functional functions both check through :meth:`check`.
    hyperparameters: ClassVar[dict[str, Callable[[str, Any], Any]]] = {}

    @classmethod
    def check(cls, values: Mapping[str, Any], *, schedules: bool = True) -> dict[str, Any]:
        """``values`` checked against :attr:`hyperparameters` and the rule's cross-field rules.

        Args:
            values: a value for every hyperparameter (more keys are ignored).
            schedules: whether ``lr`` may be a schedule (classes) or must be a number (the
                functional layer).

        Returns:
            The checked values (floats, bools, tuples, schedules), by name.

        Raises:
            TypeError, ValueError: the first value out of its range, named.
        """
        hp = {}
        for name, check in cls.hyperparameters.items():
            value = values[name]
            hp[name] = V.lr(value, name) if name == "lr" and not schedules else check(name,
                                                                                    value)
        cls._check_together(hp)
        return hp

    @classmethod
    def _check_together(cls, hp: Mapping[str, Any]) -> None:
        """Rules between hyperparameters (e.g. SGD's Nesterov needs momentum); raise if broken."""
        del hp  # none by default

    def _normalize(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """Check a group's hyperparameters; return them as plain floats and bools."""
        return self.check(group)

    @abstractmethod
    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        """The state buffers these hyperparameters need, in kernel argument order."""

    #: True for rules whose update needs each parameter whole (its own norms, rows,
    #: factored statistics): :meth:`_update` is then called once per parameter, with the
    #: gradient as given (an array of the parameter's shape, or a
    #: :class:`~fastgd.SparseGrad`), the parameter and its state views in their own shapes.
    per_parameter: ClassVar[bool] = False

    #: Whether gradients may be :class:`~fastgd.SparseGrad` (SparseAdam: they must be).
    sparse_gradients: ClassVar[bool] = False

    def _state_shape(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The shape of state buffer ``name`` for a parameter of ``shape``.

        None if that parameter has no such buffer. Default: the parameter's own shape.
        """
        return shape

    def _check_param(self, p: Any, name: str) -> None:
        """Raise if the rule cannot update this parameter (e.g. Muon: 2-D only)."""
        del p, name  # every array fits by default

    def _state_init(self, hp: Mapping[str, Any], name: str) -> float:
        """The value state buffer ``name`` starts at."""
        return 0.0

    @abstractmethod
    def _update(self, hp: Mapping[str, Any], ss: Scalars, gs: float, g: np.ndarray,
                p: np.ndarray, state: list[np.ndarray]) -> Scalars:
        """One kernel call on 1-D spans; returns the new scalar state (never mutates ss)."""

    # -- stepping ------------------------------------------------------------------------

    def _hyper(self, gi: int) -> dict[str, Any]:
        """Group ``gi``'s hyperparameters, checked again only when they changed."""
        group = self.param_groups[gi]
        checked = self._checked[gi]
        if group is checked[0] and checked[2] is None and group.version == checked[1]:
            return checked[3]  # our own group, not edited since the check
        if group is checked[0] and checked[2] is not None:
            if _frozen(self._hp_key(group)) == checked[2]:
                return checked[3]
        elif group is checked[0]:  # edited: the same values again need no new check
            raw = self._hp_key(group)
            if not any(_needs_snapshot(v) for v in raw) and raw == checked[4]:
                self._checked[gi] = (group, group.version, None, checked[3], raw)
                return checked[3]
        hp = self._normalize(group)
        self._checked[gi] = self._checked_entry(group, hp)
        return hp

    def _check_grads(self, grads: Any) -> list[np.ndarray | None]:
        if type(grads) not in (list, tuple) and (
            isinstance(grads, np.ndarray) or _backend.is_cupy(grads)
            or not isinstance(grads, Sequence)
        ):
            raise TypeError(
                "grads must be a list with one array (or None) per parameter, got "
                f"{type(grads).__name__}"
            )
        n = len(self._params)
        if len(grads) != n:
            raise ValueError(
                f"expected {n} gradients (one per parameter, None to skip one), got {len(grads)}"
            )
        out = list(grads)
        dense = self._dense_grads(out)
        if dense is not None:
            return dense
        for i, (g, p) in enumerate(zip(out, self._params)):
            if g is None:
                continue
            if isinstance(g, SparseGrad) or self.sparse_gradients:
                out[i] = self._check_sparse(g, p, i)
                continue
            if type(g) is not type(p):
                _backend.check_array(g, f"grads[{i}]")
                raise TypeError(f"grads[{i}] is a {_backend.kind(g)}, params[{i}] is a "
                                f"{_backend.kind(p)}")
            if self._cuda and g.device.id != p.device.id:
                raise ValueError(f"grads[{i}] is on device {g.device.id}, params[{i}] on "
                                 f"device {p.device.id}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape}, params[{i}] has shape "
                                 f"{p.shape}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{i}] has dtype {g.dtype}, params[{i}] has dtype "
                                f"{p.dtype}")
            if not g.flags.c_contiguous:
                out[i] = _backend.xp_of(g).ascontiguousarray(g)
        return out

    def _dense_grads(self, grads: list[Any]) -> list[Any] | None:
        """``grads`` if they are C-contiguous NumPy arrays matching the parameters, else None.

        The common case of :meth:`_check_grads`, checked a list at a time; anything else
        goes through the loop, which accepts it or raises the error that names it. Once a
        list has passed, the next lists (new arrays, or the same again: their shapes and
        dtypes can have been set in place since) are checked by one compiled read of their
        NumPy headers (:class:`fastgd._backend.ShapeRecord`), which also reads their
        addresses for the launch (:meth:`_grads_addresses`); elsewhere, or when it fails,
        a few C-level passes over the list. The same array objects as the last accepted
        ones give back that earlier list (kept here, never handed out), so that a step can
        tell by one identity test that its gradients are the last step's.
        """
        if self.sparse_gradients or self._cuda:
            return None
        cached = self._multi_cache.get("shapes")
        if cached is None or cached[0] != self._layout_version:
            # layout version, the parameters' shapes and dtypes, the last accepted list,
            # its ids, the record of the lists that passed, their addresses
            cached = self._multi_cache["shapes"] = [
                self._layout_version, list(map(_SHAPE, self._params)),
                list(map(_DTYPE, self._params)), None, None, None, None]
        last = cached[3]
        same = last is not None and len(last) == len(grads) and all(
            map(operator.is_, grads, last))
        record = cached[5]
        ids = cached[4] if same else None
        if record is not None:
            if ids is None:
                ids = _backend.ids_of(grads)
            addresses = record.match(ids)
            if addresses is not None:
                if same:
                    return last
                cached[3], cached[4], cached[6] = grads, ids, addresses
                return grads
        # the arrays that passed last time are NumPy arrays, C-contiguous still (an
        # in-place shape change keeps that; setting strides is deprecated): their shapes
        # and dtypes are what can have changed
        if not same and not (all(map(operator.is_, map(type, grads), repeat(np.ndarray)))
                             and all(map(_C_CONTIGUOUS, grads))):
            return None
        ok = list(map(_SHAPE, grads)) == cached[1] and list(map(_DTYPE, grads)) == cached[2]
        if not ok:
            cached[3] = None
            return None
        accepted = last if same else grads
        record = cached[5] = _backend.shape_record(accepted)
        if ids is None and record is not None:
            ids = _backend.ids_of(accepted)
        cached[3], cached[4], cached[6] = accepted, ids, None
        return accepted

    def _grads_addresses(self, given: list[Any]) -> Any:
        """The addresses of ``given`` if it is the list the header read last accepted."""
        cached = self._multi_cache.get("shapes")
        if cached is not None and cached[3] is given:
            return cached[6]
        return None

    def _check_sparse(self, g: Any, p: Any, i: int) -> Any:
        """A gradient for an optimizer of sparse gradients, or a sparse one for another."""
        who = type(self).__name__
        if not self.sparse_gradients:
            raise TypeError(f"grads[{i}] is a SparseGrad: {who} does not support sparse "
                            "gradients, please consider SparseAdam instead")
        if not isinstance(g, SparseGrad):
            raise TypeError(f"grads[{i}] is a {_backend.kind(g)}: {who} does not support dense "
                            "gradients, please consider Adam instead (or pass a SparseGrad)")
        g.check_fits(p, f"grads[{i}]")
        return g.coalesce()

    def _on_device(self) -> contextlib.AbstractContextManager[Any]:
        """A block on the parameters' GPU, whichever is current; nothing for NumPy.

        CuPy allocates and launches on the current GPU, which need not be the parameters'.
        """
        return _backend.on_device_of(self._params[0] if self._params else None)

    def _ensure_state(self, seg: _Segment, hp: Mapping[str, Any],
                      names: tuple[str, ...]) -> list[np.ndarray]:
        state = seg.state
        for name in names:
            if name not in state:
                with _backend.on_device_of(seg.span):
                    state[name] = self._new_state(seg, hp, name)
        return [state[name] for name in names]

    def _new_state(self, seg: _Segment, hp: Mapping[str, Any], name: str) -> Any:
        """A new state buffer ``name`` of a segment (on its device, for CuPy)."""
        xp = _backend.xp_of(seg.span)
        if name == AVERAGE:  # zeros for the first averaged step to copy into; a parameter
            # joining a running average enters it at its current value (as if it had held
            # that value at every averaged step so far)
            return (seg.span.copy() if self.n_averaged else
                    xp.zeros(seg.span.size, seg.span.dtype))
        init = self._state_init(hp, name)
        shapes = [self._state_shape(name, s) for s in seg.shapes]
        size = seg.span.size
        if shapes != seg.shapes:
            offsets = [0]
            for sh in shapes:
                offsets.append(offsets[-1] + (0 if sh is None else math.prod(sh)))
            seg.layouts[name] = (offsets, shapes)
            size = offsets[-1]
        return xp.full(size, init, seg.span.dtype)

    def step(self, grads: Sequence[Any] | None = None, *, grad_scale: float = 1.0,
             clip_norm: float | None = None, norm_type: float | str = 2.0) -> bool:
        r"""Apply one update to every parameter, in place.

        Everything is checked first (gradients, hyperparameters, scheduled learning rates,
        the non-finite policy), so a call that raises changes nothing.

        Args:
            grads: one gradient per parameter, in the order of the param groups (``None``
                leaves that parameter and its state untouched this step). Omit it when the
                parameters come from a :class:`~fastgd.FlatParams`: its gradient views are
                used, and each group's update is one kernel call per dtype.
            grad_scale: a factor applied to every gradient inside the update kernel (e.g.
                ``1/k`` for the mean of ``k`` accumulated micro-batches); no extra pass.
            clip_norm: clip the gradients to this total norm first, as
                :func:`fastgd.clip.clip_grad_norm_` would, fused: one reduction pass for
                the norm, the scale folded into the update kernel. The norm (before
                clipping, after ``grad_scale``) is kept in :attr:`last_grad_norm`.
            norm_type: the norm ``clip_norm`` bounds: ``p > 0`` or ``inf``.

        Returns:
            True if the update was applied; False if it was skipped because a gradient was
            not finite and ``nonfinite="skip"`` (parameters, state and step counts
            untouched; :attr:`steps_skipped` counts these).

        Raises:
            TypeError, ValueError: wrong number, shape, dtype or type of gradients, or an
                invalid hyperparameter; raised before anything changes.
            fastgd.clip.NonFiniteGradientError: a gradient is NaN or inf and
                ``nonfinite="raise"``; nothing changed.
        """
        with self._lock:  # threads stepping one optimizer take turns
            if self._swapped:
                raise RuntimeError("step() inside swap_averaged(): the parameters hold the "
                                   "averaged weights; step after the with block")
            self._sync()
            if self._cuda:
                with self._on_device():
                    return self._step(grads, grad_scale, clip_norm, norm_type)
            return self._step(grads, grad_scale, clip_norm, norm_type)

    def _step(self, grads: Sequence[Any] | None, grad_scale: float, clip_norm: float | None,
              norm_type: float | str) -> bool:
        attached = grads is None or grads is self._attached_all
        gl = self._attached_grads() if attached else self._check_grads(grads)
        scale: Any = 1.0 if grad_scale == 1.0 else V.real("grad_scale", grad_scale)
        if clip_norm is not None:
            clip_norm = V.nonneg("clip_norm", clip_norm)
            p_norm = _clip._norm_type(norm_type)
        hps = [self._scheduled(gi) for gi in range(len(self.param_groups))]
        checks = clip_norm is not None or self.nonfinite != "propagate"
        if (not attached and self.elementwise and not (checks and self._cuda) and (
                self.average is None or (self.fused_average and not self.per_parameter))):
            done = self._step_separate(
                gl, hps, scale,
                None if not checks else lambda spans: self._checked_scale(
                    spans, gl, scale, clip_norm, p_norm if clip_norm is not None else 2.0))
            if done is not None:
                return done
        self._together.clear()
        plan = self._plan(gl, attached)
        if checks:
            spans = [_flat_grad(g) for _, _, pieces in plan for _, _, g in pieces]
        if clip_norm is not None and self._cuda and self.nonfinite == "propagate":
            # on the GPU: norm and scale stay on the device, no host synchronization
            # one scale per dtype: each update kernel takes its own ``raw T gs``
            scale, self.last_grad_norm = _clip.device_clip_scale(
                spans, p_norm, clip_norm, scale, self._params[0],
                dtypes=sorted({p.dtype for p in self._params}, key=str))
        elif checks:
            scale = self._checked_scale(spans, gl, scale, clip_norm,
                                        p_norm if clip_norm is not None else 2.0)
            if scale is None:
                return False
        weights = (None if self.average is None else
                   self.average.weights(self.n_averaged, self.steps_applied + 1))
        fused = weights is not None and self.fused_average and not self.per_parameter
        covered: dict[int, list[tuple[int, int]]] = {}  # averaged by the update kernels
        if self.elementwise and len(plan) > 1:
            plan = self._update_together(plan, hps, scale, weights if fused else None,
                                         covered, gl)
        for gi, seg, pieces in plan:
            hp = hps[gi]
            names = self._state_names(hp)
            state = self._ensure_state(seg, hp, names)
            # a float, or a device array on CUDA (one per dtype when clipped there)
            seg_scale = scale[seg.span.dtype] if isinstance(scale, dict) else scale
            gs = -seg_scale if hp.get("maximize", False) else seg_scale
            if self.per_parameter:
                self._update_each(hp, seg, pieces, gs, names)
                continue
            avg = self._ensure_state(seg, hp, (AVERAGE,))[0] if fused else None
            if len(pieces) == 1 and pieces[0][:2] == WHOLE_SEGMENT:
                if fused:
                    seg.shared = self._update(hp, seg.shared, gs, pieces[0][2], seg.span,
                                              state, average=(avg, *weights))
                    covered[id(seg)] = [(0, len(seg.index))]
                else:
                    seg.shared = self._update(hp, seg.shared, gs, pieces[0][2], seg.span,
                                              state)
                continue
            if seg.shared is not None:
                for i in seg.index:
                    self._scalars[i] = seg.shared
                seg.shared = None
            for k0, k1, g in pieces:
                lo, hi = seg.offsets[k0], seg.offsets[k1]
                extra = {"average": (avg[lo:hi], *weights)} if fused else {}
                new = self._update(hp, self._scalars[seg.index[k0]], gs, g, seg.span[lo:hi],
                                   [s[lo:hi] for s in state], **extra)
                for k in range(k0, k1):
                    self._scalars[seg.index[k]] = new
            if fused:
                covered[id(seg)] = [(k0, k1) for k0, k1, _ in pieces]
            first = self._scalars[seg.index[0]]
            if all(self._scalars[i] == first for i in seg.index):
                seg.shared = first
        if weights is not None:
            self._average_rest(weights, covered)
            self.n_averaged += 1
        self.steps_applied += 1
        return True

    def _update_together(self, plan: list[Any], hps: list[dict[str, Any]], scale: Any,
                         weights: tuple[float, float] | None,
                         covered: dict[int, list[tuple[int, int]]], gl: Sequence[Any]
                         ) -> list[Any]:
        """Update whole segments that share a group, dtype and scalar state in one launch.

        A list of separate arrays is one segment per array: instead of one kernel call
        each, the segments alike are updated by one multi-array launch
        (:class:`fastgd._backend.MultiSpan`), with the same results. Returns the plan
        items left for one call each.
        """
        groups: dict[tuple[Any, ...], list[Any]] = {}
        rest = []
        for item in plan:
            gi, seg, pieces = item
            if len(pieces) == 1 and pieces[0][:2] == WHOLE_SEGMENT and seg.span.size:
                # segments updated together share one scalar-state dict afterwards, so
                # the dict's identity groups them from the second step on
                key = (gi, seg.span.dtype, id(seg.shared))
                groups.setdefault(key, []).append(item)
            else:
                rest.append(item)
        for (gi, dtype, _), items in groups.items():
            if len(items) < 2:
                rest.extend(items)
                continue
            hp = hps[gi]
            segs = [seg for _, seg, _ in items]
            seg_scale = scale[dtype] if isinstance(scale, dict) else scale
            gs = -seg_scale if hp.get("maximize", False) else seg_scale
            # the gradients as given identify the address table (the spans are new views
            # each step)
            self._launch_together(hp, segs, [gl[seg.index[0]] for seg in segs],
                                  lambda items=items: [p[0][2] for _, _, p in items], gs,
                                  weights)
            if weights is not None:
                for seg in segs:
                    covered[id(seg)] = [(0, len(seg.index))]
        return rest

    def _launch_together(self, hp: Mapping[str, Any], segs: list[_Segment],
                         given: list[Any], grads: Callable[[], list[Any]], gs: Any,
                         weights: tuple[float, float] | None = None,
                         ids: tuple[int, ...] | None = None) -> Scalars:
        """One multi-array launch updating ``segs`` (one group, dtype and scalar state).

        Returns the scalar state it gave every segment.

        Args:
            hp: the group's hyperparameters.
            segs: the segments, each updated whole.
            given: per segment, the gradient object it was given: the same objects as at
                the last launch over these segments reuse its address table.
            grads: returns the segments' gradients, C-contiguous (called for a new table).
            gs: the gradient scale (sign included).
            weights: the averaging weights of a fused weight average, or None.
            ids: ``tuple(map(id, segs))``, if known.
        """
        if ids is None:
            ids = tuple(map(id, segs))
        names = self._state_names(hp)
        spans = self._multi_spans(segs, hp, names, weights is not None, ids)
        key = ("grads", self._layout_version, ids)
        cached = self._multi_cache.get(key)
        if cached is not None and (cached[0] is given or (
                len(cached[0]) == len(given) and all(map(operator.is_, cached[0], given)))):
            g_ms = cached[1]
        else:
            g_ms = _backend.MultiSpan(grads(), spans["params"].layout,
                                      self._grads_addresses(given))
            self._multi_cache[key] = (given, g_ms)
        extra = {"average": (spans[AVERAGE], *weights)} if weights is not None else {}
        new = self._update(hp, segs[0].shared, gs, g_ms, spans["params"],
                           [spans[n] for n in names], **extra)
        for seg in segs:
            seg.shared = new
        return new

    def _separate_groups(self) -> tuple[list[tuple[int, list[_Segment], list[int] | None,
                                                   tuple[int, ...]]], list[int] | None]:
        """Per group and dtype: its segments (kept per layout version).

        With each, the parameter index of every segment where each segment is one
        parameter (else None), and the segments' ids. Second, where one group and dtype
        holds every parameter in order, one per segment or all in one segment: that index
        list (the first tuple's third item in the first case), else None.
        """
        cached = self._multi_cache.get("separate")
        if cached is not None and cached[0] == self._layout_version:
            return cached[1], cached[2]
        out = []
        for gi, segs in enumerate(self._segments):
            by_dtype: dict[Any, list[_Segment]] = {}
            for seg in segs:
                by_dtype.setdefault(seg.span.dtype, []).append(seg)
            for group in by_dtype.values():
                single = ([seg.index[0] for seg in group]
                          if all(len(seg.index) == 1 for seg in group) else None)
                out.append((gi, group, single, tuple(map(id, group))))
        everyone = None
        if len(out) == 1:
            index = out[0][2] if out[0][2] is not None else (
                out[0][1][0].index if len(out[0][1]) == 1 else None)
            if index == list(range(len(self._params))):
                everyone = index
        self._multi_cache["separate"] = (self._layout_version, out, everyone)
        return out, everyone

    def _checked_scale(self, spans: list[Any], gl: Sequence[Any], scale: Any,
                       clip_norm: float | None, p_norm: float) -> Any:
        """The step's gradient scale after clipping and the non-finite policy (host side).

        Computes the norm (kept in :attr:`last_grad_norm`) or checks finiteness over the
        gradient ``spans``; returns None for a step that ``nonfinite="skip"`` skips (counted
        in :attr:`steps_skipped`), and raises under ``nonfinite="raise"``.
        """
        if clip_norm is not None:
            norm = _clip.total_norm(spans, p_norm) * abs(scale)
            self.last_grad_norm = norm
            finite = math.isfinite(norm)
        else:
            finite = _clip.all_finite(spans)
        if not finite and self.nonfinite != "propagate":
            if self.nonfinite == "raise":
                raise _clip.NonFiniteGradientError(self._nonfinite_message(gl))
            self.steps_skipped += 1
            return None
        if clip_norm is not None:
            scale *= _clip.clip_coef(clip_norm, norm)
        return scale

    def _step_separate(self, gl: Sequence[Any], hps: list[dict[str, Any]], scale: Any,
                       check: Callable[[list[Any]], Any] | None = None) -> bool | None:
        """A whole step over separate arrays, one multi-array launch per group and dtype.

        The common step of a plain list of arrays (every gradient given; a weight average
        fused into the update kernels), without the general step's plan: the same
        launches and results as :meth:`_update_together`. Returns None, having changed
        nothing, where it does not apply (then the general step runs); else whether the
        update was applied.

        Args:
            gl: the checked gradients.
            hps: the groups' hyperparameters.
            scale: the gradient scale.
            check: for clipping or a non-finite policy (NumPy arrays): given the
                gradients, returns the scale to use, or None to skip the step
                (:meth:`_checked_scale`).
        """
        dense = self._multi_cache.get("shapes")
        if (dense is None or dense[3] is not gl) and any(map(operator.is_, gl, repeat(None))):
            return None  # (gradients that matched as dense arrays hold no None)
        work = []
        together = self._together
        groups, everyone = self._separate_groups()
        for gi, segs, single, ids in groups:
            first = segs[0].shared
            last = together.get(ids)
            if (last is None or last[1] is not first or last[0] != self._layout_version) and (
                    first is None or (
                        not all(map(operator.is_, map(_SHARED, segs), repeat(first)))
                        and any(seg.shared != first for seg in segs[1:]))):
                return None  # differing step counts: the general step splits them
            if single is not None:  # one array per segment: its gradient
                # (every parameter in order: the checked list itself, the same object
                # step after step while the same arrays come back)
                given = gl if single is everyone else list(map(gl.__getitem__, single))
            else:
                given = []
                for seg in segs:
                    if len(seg.index) == 1:
                        given.append(gl[seg.index[0]])
                    else:  # views of one buffer (or size-0 arrays beside one): one span
                        # (of every parameter in order: the checked list itself)
                        g = (self._grad_spans(id(seg), gl, kept=True) if everyone is not None
                             else self._grad_spans(id(seg), [gl[i] for i in seg.index]))
                        if g is None:
                            return None
                        given.append(g)
            work.append((gi, segs, given, ids))
        if check is not None:
            scale = check([g for _, _, given, _ in work for g in given])
            if scale is None:
                return False
        weights = (None if self.average is None else
                   self.average.weights(self.n_averaged, self.steps_applied + 1))
        for gi, segs, given, ids in work:
            hp = hps[gi]
            gs = -scale if hp.get("maximize", False) else scale
            if len(segs) == 1:
                seg = segs[0]
                state = self._ensure_state(seg, hp, self._state_names(hp))
                extra = ({} if weights is None else
                         {"average": (self._ensure_state(seg, hp, (AVERAGE,))[0], *weights)})
                seg.shared = self._update(hp, seg.shared, gs, given[0].reshape(-1), seg.span,
                                          state, **extra)
            else:
                together[ids] = (self._layout_version, self._launch_together(
                    hp, segs, given, lambda given=given: given, gs, weights, ids))
        if weights is not None:  # every segment was averaged by its update kernel
            self.n_averaged += 1
        self.steps_applied += 1
        return True

    def _multi_spans(self, segs: list[_Segment], hp: Mapping[str, Any],
                     names: tuple[str, ...], average: bool,
                     ids: tuple[int, ...]) -> dict[str, Any]:
        """The MultiSpans of some segments' parameters and state (kept per layout)."""
        key = ("state", ids)
        cached = self._multi_cache.get(key)
        wanted = {"params", *names, *((AVERAGE,) if average else ())}
        # state buffers are only ever added within a layout version (a new layout or a
        # loaded state dict bumps it), so spans built since hold the current buffers
        if cached is not None and cached[0] == self._layout_version and wanted <= cached[1].keys():
            return cached[1]
        for seg in segs:
            self._ensure_state(seg, hp, names)
            if average:
                self._ensure_state(seg, hp, (AVERAGE,))
        layout = _backend.MultiLayout([seg.span.size for seg in segs])
        spans = {"params": _backend.MultiSpan([seg.span for seg in segs], layout)}
        for n in wanted - {"params"}:
            spans[n] = _backend.MultiSpan([seg.state[n] for seg in segs], layout)
        if len(self._multi_cache) > 64:
            self._multi_cache.clear()
        self._multi_cache[key] = (self._layout_version, spans)
        return spans

    def _average_rest(self, weights: tuple[float, float],
                      covered: Mapping[int, list[tuple[int, int]]]) -> None:
        """Average the parameters the update kernels did not (no gradient, other rules)."""
        for segs in self._segments:
            for seg in segs:
                done = covered.get(id(seg), [])
                if done == [(0, len(seg.index))]:
                    continue
                avg = self._ensure_state(seg, {}, (AVERAGE,))[0]
                at = 0
                for k0, k1 in [*done, (len(seg.index), len(seg.index))]:
                    lo, hi = seg.offsets[at], seg.offsets[k0]
                    if hi > lo:
                        average_into(seg.span[lo:hi], avg[lo:hi], weights)
                    at = k1

    def _update_each(self, hp: Mapping[str, Any], seg: _Segment, pieces: list[Any], gs: Any,
                     names: tuple[str, ...]) -> None:
        """The per-parameter updates of a segment (:attr:`per_parameter` rules)."""
        if seg.shared is not None:
            for i in seg.index:
                self._scalars[i] = seg.shared
            seg.shared = None
        for k, _, g in pieces:
            i = seg.index[k]
            self._scalars[i] = self._update(hp, self._scalars[i], gs, g, self._params[i],
                                            [seg.view(n, k) for n in names])
        first = self._scalars[seg.index[0]]
        if all(self._scalars[i] == first for i in seg.index):
            seg.shared = first

    def _scheduled(self, gi: int) -> dict[str, Any]:
        """Group ``gi``'s checked hyperparameters with the learning rate of this step."""
        hp = self._hyper(gi)
        lr = hp["lr"]
        if isinstance(lr, Schedule):
            hp = dict(hp)
            value = lr(self.steps_applied)
            hp["lr"] = V.lr(value, f"param_groups[{gi}]['lr'] schedule at step "
                                   f"{self.steps_applied}")
        return hp

    def _plan(self, gl: Sequence[Any], attached: bool) -> list[tuple[int, _Segment, Any]]:
        """The kernel calls of a step, computed without changing anything.

        Returns ``(group, segment, pieces)`` items; ``pieces`` lists ``(k0, k1, gspan)``,
        parameters ``k0:k1`` of the segment with their gradients as one 1-D span, or is
        ``[(*WHOLE_SEGMENT, gspan)]`` when one call updates the whole segment at its shared
        scalar state (the common case: no slicing of the state buffers, no per-parameter
        scalar bookkeeping).
        """
        plan = []
        if self.per_parameter:  # each parameter whole, its gradient as given
            for gi, segs in enumerate(self._segments):
                for seg in segs:
                    pieces = [(k, k + 1, gl[i]) for k, i in enumerate(seg.index)
                              if gl[i] is not None]
                    if pieces:
                        plan.append((gi, seg, pieces))
            return plan
        for gi, segs in enumerate(self._segments):
            for seg in segs:
                if seg.shared is not None:
                    if attached:
                        gspan = seg.grad_span
                    elif len(seg.index) == 1:
                        g = gl[seg.index[0]]
                        gspan = None if g is None else g.reshape(-1)
                    else:
                        seg_grads = [gl[i] for i in seg.index]
                        gspan = (None if any(g is None for g in seg_grads)
                                 else self._grad_spans(id(seg), seg_grads))
                    if gspan is not None:
                        plan.append((gi, seg, [(*WHOLE_SEGMENT, gspan)]))
                        continue
                pieces = self._pieces(seg, gl)
                if pieces:
                    plan.append((gi, seg, pieces))
        return plan

    def _pieces(self, seg: _Segment, gl: Sequence[Any]) -> list[tuple[int, int, Any]]:
        """Runs of a segment's parameters that one kernel call can update together.

        A run: consecutive parameters with a gradient, equal scalar state, and gradients
        lying back to back in memory.
        """
        runs: list[list[int]] = []
        prev_ss: Scalars | None = None
        end = None
        for k, i in enumerate(seg.index):
            g = gl[i]
            if g is None:
                prev_ss = None
                continue
            ss = self._scalar_state(seg, i)
            a = _backend.address(g)
            if prev_ss is not None and ss == prev_ss and a == end:
                runs[-1].append(k)
            else:
                runs.append([k])
            prev_ss, end = ss, a + g.nbytes
        pieces = []
        for run in runs:
            grads = [gl[seg.index[k]] for k in run]
            gspan = _backend.span(grads)
            if gspan is not None:
                pieces.append((run[0], run[-1] + 1, gspan))
            else:
                pieces.extend((k, k + 1, g.reshape(-1)) for k, g in zip(run, grads))
        return pieces

    def _nonfinite_message(self, gl: Sequence[Any]) -> str:
        bad = [i for i, g in enumerate(gl)
               if g is not None and not _clip.all_finite([_flat_grad(g)])]
        shown = ", ".join(f"grads[{i}]" for i in bad[:8]) + (" ..." if len(bad) > 8 else "")
        return (f"non-finite gradient in {shown} (nonfinite='raise'); nothing was updated. "
                "Use nonfinite='skip' to skip such steps or 'propagate' to apply them as torch "
                "does")

    def warmup(self, *, norm_type: float | str | None = 2.0) -> Optimizer:
        """Compile now every kernel this optimizer's steps run, instead of in the first step.

        A first step otherwise pays Numba's compilation of its update kernel (or the load
        of it from the disk cache), in the serial build small arrays use and the parallel
        build large ones use, and of the reductions of clipping and the ``nonfinite``
        policy: 0.3-0.6 s per kernel on a cold cache, a few ms warm. ``warmup`` pays it
        here, on a scratch copy of this optimizer (the same class, ``nonfinite`` policy and
        group hyperparameters, over 1-element arrays of each dtype and array kind of each
        group; 256-element ones for CuPy, whose reductions of 128 elements and more take
        its CUB path, another kernel; two arrays of a dtype where separate arrays are
        updated by one multi-array launch, which has a driver of its own). The copy
        takes two steps with serial kernels, two with parallel ones, the second of each
        clipped by ``norm_type`` (None: no clipping kernel); for CuPy arrays the CUDA
        kernels are compiled likewise; for NumPy arrays also the check that reads the
        headers of gradient arrays given again. Nothing of this optimizer changes.

        Args:
            norm_type: the ``norm_type`` of the ``step(clip_norm=...)`` calls to prepare,
                or None.

        Returns:
            This optimizer, so that ``opt = fastgd.Adam(params).warmup()`` reads.

        Example:
            >>> import numpy as np, fastgd
            >>> w = np.zeros(3)
            >>> opt = fastgd.Adam([w], lr=0.1).warmup()
            >>> opt.steps_applied, float(w.sum())
            (0, 0.0)
        """
        with self._lock:
            self._sync()
            groups = []
            for group, segs in zip(self.param_groups, self._segments):
                kinds = {p.dtype: p for p in group["params"]}  # one device per optimizer
                # CuPy reduces 128+ elements through CUB, fewer by its simple kernel: warm
                # up on arrays as long as the real ones' reductions
                size = 256 if self._cuda else 1
                # separate arrays of a dtype are updated by a multi-array launch: two
                # scratch arrays compile its driver
                together = self.elementwise and not self._cuda
                count = {dt: 2 if together and sum(s.span.dtype == dt for s in segs) > 1
                         else 1 for dt in kinds}
                groups.append({**{k: v for k, v in group.items() if k != "params"},
                               "params": [_backend.to_module_of(np.zeros(size, dt), like)
                                          for dt, like in kinds.items()
                                          for _ in range(count[dt])]})
        modes = [_backend.serial_kernels()]
        if not self._cuda:
            modes.append(_backend.all_parallel_kernels())
        for mode in modes:
            copy = type(self)(groups, nonfinite=self.nonfinite, average=self.average)
            grads = [_backend.to_module_of(np.ones(p.size, p.dtype), p) for p in copy._params]
            with mode:
                copy.step(grads)
                if norm_type is not None:
                    copy.step(grads, clip_norm=1.0, norm_type=norm_type)
        record = _backend.shape_record(grads)  # the header read of later gradients
        if record is not None:
            record.match(_backend.ids_of(grads))
        return self

    def zero_grad(self) -> None:
        """Zero the gradients of the FlatParams (or FlatGroups) this optimizer was built on."""
        with self._lock:
            self._sync()
            for flat in self._flats:
                flat.zero_grad()

    # -- weight averaging ---------------------------------------------------------------

    def _average_spans(self) -> list[tuple[Any, Any]]:
        """(parameter span, average span) of every segment (averages created if missing)."""
        if self.average is None:
            raise RuntimeError(f"this {type(self).__name__} keeps no weight average: build it "
                               "with average=fastgd.EMA(decay) or fastgd.SWA(start, every)")
        if self._swapped:
            raise RuntimeError("inside swap_averaged() the averaged weights are the "
                               "parameters")
        if self.n_averaged == 0:
            raise RuntimeError("no step has been averaged yet")
        return [(seg.span, self._ensure_state(seg, {}, (AVERAGE,))[0])
                for segs in self._segments for seg in segs]

    def averaged(self) -> list[Any]:
        """The averaged weights, one array per parameter, in the order of :attr:`params`.

        Views of the optimizer's average buffers (later steps change them); copy them to
        keep a snapshot, or use :meth:`swap_averaged` to put them into the parameters.

        Raises:
            RuntimeError: no ``average=`` was given, or no step has been averaged yet.

        Example:
            >>> import numpy as np, fastgd
            >>> w = np.zeros(1)
            >>> opt = fastgd.SGD([w], lr=0.5, average=fastgd.EMA(0.9))
            >>> _ = opt.step([-np.ones(1)])     # w = 0.5: the first average copies it
            >>> opt.averaged()[0]
            array([0.5])
        """
        with self._lock:
            self._sync()
            self._average_spans()
            out: list[Any] = [None] * len(self._params)
            for segs in self._segments:
                for seg in segs:
                    for k, i in enumerate(seg.index):
                        out[i] = seg.view(AVERAGE, k)
            return out

    def swap_averaged(self) -> contextlib.AbstractContextManager[None]:
        """A ``with`` block in which the parameters hold the averaged weights.

        The parameters and the averages are exchanged in place (one elementwise pass per
        segment) on entry and again on exit, so models, FlatParams views and anything else
        that holds the parameter arrays see the averaged weights inside the block: evaluate
        or save them there. :meth:`step`, :meth:`state_dict` and loading are refused inside.

        Raises:
            RuntimeError: no ``average=``, nothing averaged yet, or already swapped in.

        Example:
            >>> import numpy as np, fastgd
            >>> w = np.zeros(1)
            >>> opt = fastgd.SGD([w], lr=1.0, average=fastgd.SWA())
            >>> _ = opt.step([-np.ones(1)]); _ = opt.step([-np.ones(1)])  # w: 1, 2
            >>> with opt.swap_averaged():
            ...     print(w)
            [1.5]
            >>> w
            array([2.])
        """
        with self._lock:
            self._sync()
            pairs = self._average_spans()
        return _swapped(self, pairs)

    # -- state ---------------------------------------------------------------------------

    def _scalar_state(self, seg: _Segment, i: int) -> Scalars:
        return seg.shared if seg.shared is not None else self._scalars[i]

    def _param_state(self, copy: bool) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for segs in self._segments:
            for seg in segs:
                for k, i in enumerate(seg.index):
                    ss = self._scalar_state(seg, i)
                    if ss["step"] == 0:
                        continue
                    entry: dict[str, Any] = dict(ss)
                    for name in seg.state:
                        v = seg.view(name, k)
                        if v is not None:
                            entry[name] = v.copy() if copy else v
                    out[i] = entry
        return out

    @property
    def state(self) -> dict[int, dict[str, Any]]:
        """Per-parameter state, keyed by parameter index: scalars and views (not copies).

        Only parameters that have taken a step have state, as in torch.
        """
        with self._lock:
            self._sync()
            return self._param_state(copy=False)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as plain data: arrays (copies) and Python scalars.

        Returns:
            ``{"state": {index: {"step": float, <buffer>: array, ...}},
            "param_groups": [{<hyperparameters>, "params": [indices]}],
            "steps": {"applied": int, "skipped": int}}``, the layout of torch's state
            dicts plus the step counters; with ``average=``, each parameter's state holds
            its ``"average"`` and ``"average"`` describes the averaging
            (``{"kind": "ema", "decay": ..., "n_averaged": n}``); a scheduled ``lr``
            appears as its spec dict. It
            holds no pickled objects, so it can be saved with ``np.savez`` (arrays) and
            JSON (the rest) and loaded with ``allow_pickle=False``.
        """
        with self._lock:
            if self._swapped:
                raise RuntimeError("state_dict() inside swap_averaged(): the parameters hold "
                                   "the averaged weights")
            self._sync()
            groups = []
            for group, segs in zip(self.param_groups, self._segments):
                entry = {k: (v.spec() if isinstance(v, Schedule) else copy.deepcopy(v))
                         for k, v in group.items() if k != "params"}
                entry["params"] = sorted(i for seg in segs for i in seg.index)
                groups.append(entry)
            with self._on_device():  # CuPy: the copies on the parameters' GPU
                state = self._param_state(copy=True)
            out = {"state": state, "param_groups": groups,
                   "steps": {"applied": self.steps_applied, "skipped": self.steps_skipped}}
            if self.average is not None:
                out["average"] = {**self.average.spec(), "n_averaged": self.n_averaged}
            return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a :meth:`state_dict`, into this optimizer's (possibly other) arrays.

        Same as ``opt.prepare_load(state_dict)()``.

        Parameters are matched by position, as in torch; state arrays are cast to each
        parameter's dtype. Everything is checked before anything is changed, so a
        mismatched or corrupt state dict raises and leaves the optimizer as it was.

        Raises:
            TypeError, ValueError: the structure, group sizes, hyperparameters, state
                names, shapes or scalars do not fit this optimizer.
        """
        self.prepare_load(state_dict)()

    def prepare_load(self, state_dict: Mapping[str, Any]) -> Callable[[], None]:
        """Check a state dict against this optimizer; return the function that loads it.

        Nothing changes until the returned function is called, so callers can check
        several things (a checkpoint's parameters, optimizer and schedule) before
        changing any.

        Raises:
            TypeError, ValueError: as :meth:`load_state_dict`.
        """
        with self._lock:
            self._sync()
            return self._prepare_load(state_dict)

    def _prepare_load(self, state_dict: Mapping[str, Any]) -> Callable[[], None]:
        if self._swapped:
            raise RuntimeError("load inside swap_averaged(): the parameters hold the "
                               "averaged weights")
        if not isinstance(state_dict, Mapping) or not (
            {"state", "param_groups"} <= set(state_dict)
            <= {"state", "param_groups", "steps", "average"}
        ):
            raise ValueError("state_dict must be a dict with keys 'state', 'param_groups' "
                             "(and optionally 'steps', 'average')")
        n_averaged = self._check_saved_average(state_dict.get("average"))
        steps = state_dict.get("steps", {"applied": 0, "skipped": 0})
        if not isinstance(steps, Mapping) or set(steps) != {"applied", "skipped"} or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
            for v in steps.values()
        ):
            raise ValueError(f"state_dict['steps'] must be {{'applied': n, 'skipped': k}} "
                             f"with integers >= 0, got {steps!r}")
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        if not isinstance(saved_groups, Sequence) or not isinstance(saved_state, Mapping):
            raise ValueError("state_dict['param_groups'] must be a list and ['state'] a dict")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(saved_groups)} param groups, this "
                             f"optimizer has {len(self.param_groups)}")
        id_map: dict[Any, int] = {}
        new_groups = []
        new_hps = []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, Mapping) or "params" not in saved:
                raise ValueError(f"state_dict param group {gi} has no 'params' list")
            ids = list(saved["params"])
            ours = sorted(i for seg in self._segments[gi] for i in seg.index)
            if len(ids) != len(ours):
                raise ValueError(f"param group {gi} has {len(ours)} parameters, the state "
                                 f"dict's has {len(ids)}")
            missing = [k for k in self.defaults
                       if k not in saved and k not in self._added_hyperparameters]
            if missing:
                raise ValueError(f"state_dict param group {gi} lacks {missing}: it was not "
                                 f"saved by {type(self).__name__}")
            added = {k: v for k, v in self._added_hyperparameters.items() if k in self.defaults}
            new_group = {**added, **{k: v for k, v in saved.items() if k != "params"}}
            new_group["params"] = group["params"]
            hp = self._normalize(new_group)
            # checked values (a spec dict becomes its schedule again, a list of betas a tuple)
            new_group.update((k, hp[k]) for k in self.defaults)
            new_hps.append(hp)
            new_groups.append(new_group)
            for sid, i in zip(ids, ours):
                if sid in id_map:
                    raise ValueError(f"state_dict lists parameter id {sid!r} twice")
                id_map[sid] = i
        group_of = {i: gi for gi, segs in enumerate(self._segments) for seg in segs
                    for i in seg.index}
        loaded: dict[int, tuple[Scalars, dict[str, np.ndarray]]] = {}
        for sid, entry in saved_state.items():
            if sid not in id_map:
                raise ValueError(f"state_dict has state for unknown parameter id {sid!r}")
            i = id_map[sid]
            p = self._params[i]
            hp = new_hps[group_of[i]]
            shapes = {n: self._state_shape(n, p.shape) for n in self._state_names(hp)}
            names = [n for n, sh in shapes.items() if sh is not None]
            if not isinstance(entry, Mapping):
                raise ValueError(f"state of parameter {sid!r} must be a dict")
            expected = set(names) | set(self._scalar_init)
            if n_averaged and AVERAGE in entry:
                names.append(AVERAGE)
                shapes[AVERAGE] = p.shape
                expected.add(AVERAGE)
            if set(entry) != expected:
                raise ValueError(
                    f"state of parameter {sid!r} has keys {sorted(entry)}, "
                    f"{type(self).__name__} with these settings expects {sorted(expected)}"
                )
            scalars = {}
            for key in self._scalar_init:
                v = entry[key]
                if isinstance(v, np.ndarray) and v.shape == ():
                    v = v.item()
                scalars[key] = V.real(f"state[{sid!r}][{key!r}]", v)
            if scalars["step"] < 1 or scalars["step"] != int(scalars["step"]):
                raise ValueError(f"state[{sid!r}]['step'] must be an integer >= 1, got "
                                 f"{scalars['step']}")
            arrays = {}
            for name in names:
                a = entry[name]
                if _backend.is_cupy(a):
                    a = a.get()
                if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
                    raise TypeError(f"state[{sid!r}][{name!r}] must be a float array")
                if a.shape != shapes[name]:
                    raise ValueError(f"state[{sid!r}][{name!r}] has shape {a.shape}, "
                                     f"params[{i}] has shape {p.shape}"
                                     + ("" if shapes[name] == p.shape else
                                        f", for which {name!r} has shape {shapes[name]}"))
                arrays[name] = a
            loaded[i] = (scalars, arrays)
        layout = self._layout_version

        def apply() -> None:
            with self._lock:
                if self._layout_version != layout or self._layout_changed():
                    raise RuntimeError("param_groups changed between prepare_load and its "
                                       "apply; prepare again")
                with self._on_device():
                    self._apply_load(steps, new_groups, new_hps, loaded, n_averaged)

        return apply

    def _check_saved_average(self, saved: Any) -> int:
        """The ``n_averaged`` of a state dict's ``"average"`` entry, checked against ours."""
        if saved is None:
            return 0  # a state dict without averages: ours start again
        if self.average is None:
            raise ValueError("state_dict holds weight averages; this optimizer was built "
                             "without average=")
        if not isinstance(saved, Mapping) or "n_averaged" not in saved:
            raise ValueError(f"state_dict['average'] must be an averaging spec with "
                             f"n_averaged, got {saved!r}")
        spec = {k: v for k, v in saved.items() if k != "n_averaged"}
        theirs = averaging_from_spec(spec)
        if theirs != self.average:
            raise ValueError(f"state_dict holds the average of {theirs}, this optimizer "
                             f"keeps {self.average}")
        return check_n_averaged(saved["n_averaged"])

    def _apply_load(self, steps: Mapping[str, int], new_groups: list[dict[str, Any]],
                    new_hps: list[dict[str, Any]],
                    loaded: dict[int, tuple[Scalars, dict[str, np.ndarray]]],
                    n_averaged: int = 0) -> None:
        self._layout_version += 1
        self.steps_applied = int(steps["applied"])
        self.steps_skipped = int(steps["skipped"])
        self.n_averaged = n_averaged
        for gi, (values, hp) in enumerate(zip(new_groups, new_hps)):
            _, plist, _, origin = self._group_refs[gi]
            new_group = _Group(values, self._edits)
            dict.__setitem__(new_group, "params", plist)
            list.__setitem__(self.param_groups, gi, new_group)
            self._group_refs[gi] = (new_group, plist, plist.version, origin)
            self._checked[gi] = self._checked_entry(new_group, hp)
            names = self._state_names(hp)
            for seg in self._segments[gi]:
                seg.state = {}
                # averages not in the state dict start at the parameters' values
                self._ensure_state(seg, hp, (*names, AVERAGE) if n_averaged else names)
                for k, i in enumerate(seg.index):
                    if i in loaded:
                        scalars, arrays = loaded[i]
                        for name, a in arrays.items():
                            view = seg.view(name, k)
                            view[...] = _backend.to_module_of(a, view)
                        self._scalars[i] = scalars
                    else:
                        self._scalars[i] = self._scalar_init
                first = self._scalars[seg.index[0]]
                seg.shared = (first if all(self._scalars[i] == first for i in seg.index)
                              else None)
        self._plain = type(self.param_groups) is not _GroupList or any(
            type(g) is not _Group for g in self.param_groups)
        self._layout_seen = self._edits.layout

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for gi, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        lines.append(")")
        return "\n".join(lines)
