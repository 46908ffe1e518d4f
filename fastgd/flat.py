"""FlatParams: a model's parameters in one contiguous buffer per dtype.

Per-array Python overhead dominates an optimizer step when a model has many small
parameters. With :class:`FlatParams` every parameter is a view into one buffer (one per
dtype) and every gradient a view into a matching gradient buffer, so an optimizer built on
it updates a whole param group, state included, with one kernel call per dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from fastgd import _backend

__all__ = ["FlatGroup", "FlatParams", "flat_layout"]


def flat_layout(layout: Sequence[tuple[tuple[int, ...], np.dtype]], xp: Any = np
                ) -> tuple[dict[np.dtype, Any], list[Any]]:
    """Zeroed buffers, one per dtype, and views of the given shapes laid out in order.

    Args:
        layout: ``(shape, dtype)`` per array.
        xp: the array module, numpy or cupy.

    Returns:
        ``(buffers, views)``: dtype -> 1-D buffer, and one view per layout entry; views of
        one dtype lie back to back in their buffer, in the order given.
    """
    totals: dict[np.dtype, int] = {}
    for shape, dt in layout:
        totals[dt] = totals.get(dt, 0) + int(np.prod(shape, dtype=np.int64))
    buffers = {dt: xp.zeros(n, dt) for dt, n in totals.items()}
    return buffers, _views(buffers, layout)


def _views(buffers: dict[np.dtype, Any], layout: Sequence[tuple[tuple[int, ...], np.dtype]]
           ) -> list[Any]:
    offsets = dict.fromkeys(buffers, 0)
    views = []
    for shape, dt in layout:
        n = int(np.prod(shape, dtype=np.int64))
        o = offsets[dt]
        offsets[dt] = o + n
        views.append(buffers[dt][o : o + n].reshape(shape))
    return views


class _AttachedViews:
    """Parameter views with one gradient view each, attached (FlatParams, FlatGroup).

    An optimizer built on one steps without being given gradients: it uses ``grads``.
    """

    params: tuple[Any, ...]
    grads: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.params)

    def __getitem__(self, i: int) -> Any:
        return self.params[i]


class FlatParams(_AttachedViews):
    """Parameters and gradients as views into one contiguous buffer per dtype.

    Build it from shapes (zero-initialized) or from existing arrays (their values are
    copied in; keep using ``flat.params``, not the originals). The buffers are CuPy arrays
    (on the current device) when ``xp`` is cupy or any given array is a CuPy array.

    Args:
        specs: a sequence whose items are shapes (tuples or ints) or arrays.
        dtype: the dtype of the items given as shapes (float32 or float64).
        xp: the array module, ``numpy`` (default) or ``cupy``.

    Attributes:
        params: tuple of parameter views, in the order given (same shapes).
        grads: tuple of gradient views, one per parameter, zero-initialized.
        buffers: dict dtype -> 1-D parameter buffer.
        grad_buffers: dict dtype -> 1-D gradient buffer.

    Example:
        >>> import numpy as np, fastgd
        >>> flat = fastgd.FlatParams([(3, 2), np.ones(2, np.float32)])
        >>> w, b = flat.params
        >>> opt = fastgd.SGD(flat, lr=0.1)
        >>> flat.grads[1][:] = 1.0
        >>> opt.step()          # one kernel call over both arrays
        True
        >>> b
        array([0.9, 0.9], dtype=float32)
    """

    def __init__(self, specs: Sequence[Any], dtype: Any = np.float32, *,
                 xp: Any = None) -> None:
        dtype = np.dtype(dtype)
        if dtype not in _backend.FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if isinstance(specs, (np.ndarray, str)) or not isinstance(specs, Sequence):
            raise TypeError(
                f"specs must be a sequence of shapes or arrays, got {type(specs).__name__}"
            )
        items: list[tuple[tuple[int, ...], np.dtype, np.ndarray | None]] = []
        for i, s in enumerate(specs):
            if isinstance(s, np.ndarray) or _backend.is_cupy(s):
                a = _backend.check_array(s, f"specs[{i}]")
                items.append((a.shape, a.dtype, a))
            else:
                shape = (s,) if isinstance(s, (int, np.integer)) else s
                if not isinstance(shape, Sequence) or isinstance(shape, str) or not all(
                    isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape
                ):
                    raise TypeError(f"specs[{i}] must be a shape or an array, got {s!r}")
                shape = tuple(int(d) for d in shape)
                if any(d < 0 for d in shape):
                    raise ValueError(f"specs[{i}] has a negative dimension: {shape}")
                items.append((shape, dtype, None))
        if xp is None:
            xp = next((_backend.xp_of(src) for _, _, src in items if src is not None
                       and _backend.is_cupy(src)), np)
        layout = [(shape, dt) for shape, dt, _ in items]
        self.buffers, params = flat_layout(layout, xp)
        self.grad_buffers, grads = flat_layout(layout, xp)
        for p, (_, _, src) in zip(params, items):
            if src is not None:
                p[...] = _backend.to_module_of(src, p)
        self.params: tuple[np.ndarray, ...] = tuple(params)
        self.grads: tuple[np.ndarray, ...] = tuple(grads)

    def __getstate__(self) -> dict[str, Any]:
        # views would unpickle as separate copies: keep the buffers and the layout instead
        return {"buffers": self.buffers, "grad_buffers": self.grad_buffers,
                "layout": [(p.shape, p.dtype) for p in self.params]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        def own(b: Any) -> Any:  # e.g. a read-only memmap from joblib: take a plain copy
            return b if type(b) is np.ndarray or _backend.is_cupy(b) else np.array(b)

        self.buffers = {dt: own(b) for dt, b in state["buffers"].items()}
        self.grad_buffers = {dt: own(b) for dt, b in state["grad_buffers"].items()}
        self.params = tuple(_views(self.buffers, state["layout"]))
        self.grads = tuple(_views(self.grad_buffers, state["layout"]))

    def zero_grad(self) -> None:
        """Set every gradient to zero (one fill per buffer, on its GPU for CuPy)."""
        for b in self.grad_buffers.values():
            with _backend.on_device_of(b):
                b.fill(0)

    def select(self, indices: Iterable[int]) -> FlatGroup:
        """Some of these arrays, to be one param group with its own hyperparameters.

        E.g. no weight decay for biases, with ``step()`` still taking no gradients::

            AdamW([{"params": flat.select(weights)},
                   {"params": flat.select(biases), "weight_decay": 0.0}], lr=1e-3)

        Args:
            indices: positions in :attr:`params`.

        Raises:
            TypeError, ValueError: an index that is not an integer, out of range, or
                repeated.
        """
        return FlatGroup(self, indices)

    @property
    def size(self) -> int:
        """Total number of parameter elements."""
        return sum(b.size for b in self.buffers.values())

    def __repr__(self) -> str:
        dts = ", ".join(f"{dt}: {b.size}" for dt, b in self.buffers.items())
        return f"FlatParams({len(self.params)} arrays; {dts})"


class FlatGroup(_AttachedViews):
    """Some arrays of a :class:`FlatParams` (``flat.select(indices)``), as a param group.

    An optimizer takes it wherever it takes a FlatParams: its ``step()`` then needs no
    gradients (it uses the selected gradient views), and ``zero_grad()`` zeroes them.
    Selected arrays that lie back to back still update in one kernel call.

    Attributes:
        flat: the FlatParams selected from.
        indices: the selected positions, in the order given.
        params: the selected parameter views.
        grads: their gradient views.

    Example:
        >>> import numpy as np, fastgd
        >>> flat = fastgd.FlatParams([(2, 2), (2,), (2, 1), (1,)])   # w0, b0, w1, b1
        >>> for p in flat.params:
        ...     p[...] = 1.0
        >>> opt = fastgd.SGD([{"params": flat.select([0, 2])},
        ...                   {"params": flat.select([1, 3]), "weight_decay": 0.0}],
        ...                  lr=0.1, weight_decay=0.5)
        >>> opt.step()              # zero gradients: only the decay acts, on weights only
        True
        >>> flat.params[0][0, 0], flat.params[1][0]
        (np.float32(0.95), np.float32(1.0))
    """

    def __init__(self, flat: FlatParams, indices: Iterable[int]) -> None:
        if not isinstance(flat, FlatParams):
            raise TypeError(f"flat must be a FlatParams, got {type(flat).__name__}")
        if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
            raise TypeError(f"indices must be an iterable of integers, got {indices!r}")
        indices = list(indices)  # once: a generator would be spent by the checks below
        picked: list[int] = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"indices must be integers, got {i!r}")
            if not -len(flat) <= i < len(flat):
                raise ValueError(f"index {i} is out of range for a FlatParams of "
                                 f"{len(flat)} arrays")
            picked.append(int(i) % len(flat))
        if len(set(picked)) != len(picked):
            raise ValueError(f"indices repeat an array: {indices!r}")
        if not picked:
            raise ValueError("select() needs at least one index")
        self.flat = flat
        self.indices = tuple(picked)
        self.params: tuple[Any, ...] = tuple(flat.params[i] for i in picked)
        self.grads: tuple[Any, ...] = tuple(flat.grads[i] for i in picked)

    def zero_grad(self) -> None:
        """Set the selected gradients to zero."""
        for g in self.grads:
            with _backend.on_device_of(g):
                g.fill(0)

    def __repr__(self) -> str:
        return f"FlatGroup({list(self.indices)} of {self.flat!r})"
