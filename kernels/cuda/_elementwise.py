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
        if len(self._optional):
            keep = set(self.used(flags))
            args = tuple(a for n, a in zip(self.arg_names, args) if n in keep)
        self.variant(flags)(*args)


def rule(args: str, optional: dict[str, str] | None = None, average: bool = False
         ) -> Callable[[Callable[..., str]], CudaRule]:
    """Decorator turning a body factory into a :class:`CudaRule`."""
    return lambda factory: CudaRule(factory, args, optional, average)


class CupyCall:
    """A twin that is a plain CuPy call rather than a generated kernel (data movement)."""

    def __init__(self, fn: Callable[..., None]) -> None:
        import inspect

        self._fn = fn
        self.arg_names = list(inspect.signature(fn).parameters)
        self.device_scalars = [i for i, n in enumerate(self.arg_names) if n == "gs"]
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, flags: tuple[tuple[str, bool], ...], *args: Any) -> None:
        """Run on ``args`` given in the CPU kernel's order."""
        self._fn(*args)


def cupy_call(fn: Callable[..., None]) -> CupyCall:
    """Decorator: a CUDA twin written as a CuPy call."""
    return CupyCall(fn)
