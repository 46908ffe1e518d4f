"""Kernel construction for the CUDA twins, in one place.

A rule module writes its CUDA C body once, in a *factory* whose arguments are the variant
flags (as in ``kernels/cpu``), and declares its arguments in the CPU kernel's order:
``"g raw:gs l2 ... | p m v vmax"`` (inputs, then ``|``, then the arrays it updates).
An argument is of the placeholder type ``T`` (the parameters' float32 or float64) unless a
prefix says otherwise: ``int64:y`` fixes its dtype (CuPy refuses a call where one ``T``
would bind to two dtypes, so integer labels need it), ``raw.int64:rows`` is a raw array of
that dtype, and ``raw:`` marks an argument the body indexes itself: the gradient scale
``gs``, a 1-element device array read as ``gs[0]`` (so a clipping factor computed on the
GPU reaches the kernel without a host synchronization), or a row-wise kernel's 2-D array. A
state array that only some variants use is dropped from the others' parameter lists
(``optional``); the launcher takes the CPU argument list and drops it likewise.

A rule declared with ``average=True`` carries the weight-averaging stream of
``kernels/cpu/_jit.averaged`` as the variant flag ``average``: the scalars
``avg_w avg_w1 avg_div`` close its inputs, the array ``avg`` its outputs, and
:data:`AVERAGE` follows the body (which leaves the new parameter in ``p``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cupy as cp
import numpy as np

#: threads per block of a multi-array launch (one block per work item of <= 16384 elements)
MULTI_THREADS = 256

#: the raw inputs that are scalars (the rest of ``raw:`` arguments are arrays)
_DEVICE_SCALARS = {"gs", "step"}

#: The weight-averaging stream (see kernels/cpu/_jit.averaged): SWA's running mean when
#: ``avg_div != 0``, else torch's lerp towards the new parameter ``p`` with weight ``avg_w``.
AVERAGE = """
    if (avg_div != 0) avg = avg + (p - avg) / avg_div;
    else if (avg_w < 0.5) avg = avg + avg_w * (p - avg);
    else avg = p - (p - avg) * avg_w1;
    """
_AVERAGE_IN = ("avg_w", "avg_w1", "avg_div")


class CudaRule:
    """A rule's CUDA body as a family of memoized ``ElementwiseKernel`` variants.

    Args:
        factory: ``factory(**flags)`` returns the CUDA C body.
        args: the argument spec, ``"in1 raw:in2 int64:in3 ... | out1 out2"``.
        optional: state argument -> the flag that enables it.
        average: the body takes the weight-averaging stream (variant flag ``average``).
    """

    def __init__(self, factory: Callable[..., str], args: str,
                 optional: dict[str, str] | None = None, average: bool = False) -> None:
        ins, outs = args.split("|")
        self._ins = ins.split()
        self._outs = outs.split()
        optional = dict(optional or {})
        if average:
            self._ins += _AVERAGE_IN
            self._outs.append("avg")
            optional.update(dict.fromkeys((*_AVERAGE_IN, "avg"), "average"))
            body = factory

            def factory(average: bool = False, **flags: bool) -> str:
                return body(**flags) + (AVERAGE if average else "")

            factory.__name__, factory.__doc__ = body.__name__, body.__doc__
        self.arg_names = [a.rpartition(":")[2] for a in self._ins + self._outs]
        self.out_names = self.arg_names[len(self._ins):]
        #: positions of the raw scalar inputs (``raw:gs``, ``raw:step``): the launcher
        #: passes a host number there as a 1-element device array
        self.device_scalars = [i for i, a in enumerate(self._ins)
                               if a.startswith("raw:") and a[4:] in _DEVICE_SCALARS]
        self._optional = optional
        self._factory = factory
        self._kernels: dict[tuple[tuple[str, bool], ...], Any] = {}
        self.__name__ = factory.__name__
        self.__doc__ = factory.__doc__

    def used(self, flags: tuple[tuple[str, bool], ...]) -> list[str]:
        """The argument names the variant ``flags`` declares."""
        on = dict(flags)
        return [n for n in self.arg_names
                if n not in self._optional or on.get(self._optional[n], False)]

    def declaration(self, flags: tuple[tuple[str, bool], ...]) -> tuple[str, str, str]:
        """``(in_params, out_params, body)`` of the variant, as CuPy takes them."""
        used = set(self.used(flags))

        def decl(tokens: list[str]) -> str:
            out = []
            for tok in tokens:
                prefix, _, name = tok.rpartition(":")
                if name in used:  # "raw.int64:rows" declares "raw int64 rows"
                    kind = {"": "T", "raw": "raw T"}.get(prefix, prefix.replace(".", " "))
                    out.append(kind + " " + name)
            return ", ".join(out)

        return decl(self._ins), decl(self._outs), self._factory(**dict(flags))

    def variant(self, flags: tuple[tuple[str, bool], ...] = ()) -> Any:
        """The ``ElementwiseKernel`` of variant ``flags`` (built once, compiled on launch)."""
        k = self._kernels.get(flags)
        if k is None:
            ins, outs, body = self.declaration(flags)
            suffix = "".join(f"_{n}" if v is True else f"_{n}{v}"
                             for n, v in flags if v is not False)
            k = self._kernels[flags] = cp.ElementwiseKernel(
                ins, outs, body, f"fastgd_{self.__name__}{suffix}"
            )
        return k

    def __call__(self, flags: tuple[tuple[str, bool], ...], *args: Any) -> None:
        """Launch on ``args`` given in the CPU kernel's order (unused state dropped)."""
        self.variant(flags)(*self.keep(flags, args))

    def keep(self, flags: tuple[tuple[str, bool], ...], args: tuple[Any, ...]
             ) -> tuple[Any, ...]:
        """``args`` in the CPU kernel's order without the state the variant does not use."""
        if len(self._optional):
            keep = set(self.used(flags))
            args = tuple(a for n, a in zip(self.arg_names, args) if n in keep)
        return args

    # -- multi-array launches --------------------------------------------------------------

    def multi_source(self, flags: tuple[tuple[str, bool], ...], pattern: str,
                     dtype: Any) -> tuple[str, str]:
        """``(name, CUDA source)`` of the variant's multi-array kernel.

        The body is the variant's own, run over work items: block ``b`` updates item
        ``b`` (an array, or a chunk of a long one) whose element ``i`` of each array
        argument lies at ``((T*) table[b])[i]``, and whose length is ``sizes[b]``. Each
        array argument of the kernel is a device table of addresses, one per item.

        Args:
            flags: the variant flags.
            pattern: per used argument, ``"a"`` (an array: a table) or ``"s"`` (a host
                scalar of type ``T``); the raw device scalars (``gs``, ``step``) are
                1-element device arrays read as ``gs[0]``.
            dtype: the arrays' dtype (``T``).
        """
        used = self.used(flags)
        specs = {tok.rpartition(":")[2]: tok.rpartition(":")[0] for tok in self._ins + self._outs}
        if len(pattern) != len(used):
            raise ValueError(f"{self.__name__}: {len(used)} arguments, pattern {pattern!r}")
        params, binds = [], []
        outs = set(self.out_names)
        for name, kind in zip(used, pattern):
            prefix = specs[name]
            if prefix == "raw" and name in _DEVICE_SCALARS:
                params.append(f"const T* {name}")
            elif prefix:
                raise NotImplementedError(f"{self.__name__}: a multi-array kernel takes "
                                          f"T-typed arguments, not {prefix}:{name}")
            elif kind == "a":
                params.append(f"const long long* _t_{name}")
                qual = "" if name in outs else "const "
                binds.append((f"{qual}T* _{name} = ({qual}T*) _t_{name}[_item];",
                              f"{qual}T{'&' if name in outs else ''} {name} = _{name}[i];"))
            else:
                params.append(f"const T {name}")
        typename = {"float32": "float", "float64": "double"}[np.dtype(dtype).name]
        suffix = "".join(f"_{n}" if v is True else f"_{n}{v}" for n, v in flags if v is not False)
        kname = f"fastgd_{self.__name__}{suffix}_multi_{pattern}_{typename}"
        body = self._factory(**dict(flags))
        source = (
            f"typedef {typename} T;\n"
            f'extern "C" __global__ void {kname}(\n    '
            + ",\n    ".join([*params, "const long long* _sizes"]) + ") {\n"
            "  const long long _item = blockIdx.x;\n"
            "  const long long _n = _sizes[_item];\n  "
            + "\n  ".join(b[0] for b in binds) + "\n"
            "  for (long long i = threadIdx.x; i < _n; i += blockDim.x) {\n    "
            + "\n    ".join(b[1] for b in binds) + "\n"
            "    {\n" + body + "\n    }\n  }\n}\n")
        return kname, source

    def multi(self, flags: tuple[tuple[str, bool], ...], pattern: str, dtype: Any) -> Any:
        """The multi-array ``RawKernel`` (see :meth:`multi_source`), built once."""
        key = ("multi", flags, pattern, np.dtype(dtype).str)
        k = self._kernels.get(key)  # type: ignore[call-overload]
        if k is None:
            name, source = self.multi_source(flags, pattern, dtype)
            k = self._kernels[key] = cp.RawKernel(source, name)  # type: ignore[index]
        return k


def rule(args: str, optional: dict[str, str] | None = None, average: bool = False
         ) -> Callable[[Callable[..., str]], CudaRule]:
    """Decorator turning a body factory into a :class:`CudaRule`."""
    return lambda factory: CudaRule(factory, args, optional, average)


class CupyCall:
    """A twin that is a plain CuPy call rather than a generated kernel.

    The function's positional parameters are the CPU kernel's arguments; its keyword-only
    parameters, if any, are the variant flags, passed from the launch's ``flags``.
    """

    def __init__(self, fn: Callable[..., None], outs: tuple[str, ...] | None = None) -> None:
        import inspect

        self._fn = fn
        #: Whether the twin is made of other kernels' launches (``_backend.launch``): a
        #: CPU kernel fusing passes that are each one launch on the GPU already.
        self.composite = outs is not None
        #: A composite's outputs: the arguments it writes that the CPU kernel writes too.
        self.out_names = outs or ()
        params = inspect.signature(fn).parameters.values()
        self.arg_names = [p.name for p in params if p.kind is not p.KEYWORD_ONLY]
        self._flag_names = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        self.device_scalars = [i for i, n in enumerate(self.arg_names) if n == "gs"]
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, flags: tuple[tuple[str, bool], ...], *args: Any) -> None:
        """Run on ``args`` given in the CPU kernel's order."""
        self._fn(*args, **{k: v for k, v in flags if k in self._flag_names})


def cupy_call(fn: Callable[..., None]) -> CupyCall:
    """Decorator: a CUDA twin written as a CuPy call."""
    return CupyCall(fn)


def composite(*outs: str) -> Callable[[Callable[..., None]], CupyCall]:
    """Decorator: a CUDA twin written as launches of other kernels (``_backend.launch``).

    ``outs`` name the arguments it writes. The host parity check runs it, and through it
    each kernel it launches, against the fused CPU kernel, and compares those outputs.
    """
    return lambda fn: CupyCall(fn, outs)
