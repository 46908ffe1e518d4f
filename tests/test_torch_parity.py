"""Parity with torch.optim itself: params and every state buffer, each step."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import CASES, DTYPES, REGISTRY, RULES, tol, torch_kwargs

torch = pytest.importorskip("torch")

STEPS = 12
SHAPES = [(6, 5), (0,), (), (23,)]
#: torch's Adafactor divides by a size-0 parameter's element count (fastgd skips it):
#: compared without that parameter
TORCH_FAILS_ON_SIZE_0 = {"Adafactor"}
# torch's state names are fastgd's; "step" and "mu_product" are scalar tensors there.
SCALARS = ("step", "mu_product")


@pytest.fixture
def torch_dtype(request):
    old = torch.get_default_dtype()
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), [
    c for c in CASES if torch_kwargs(c.values[0], RULES[c.values[0]][2][c.values[1]]) is not None
])
def test_matches_torch(name, case, dtype, rng, torch_dtype):
    cls, _, options = RULES[name]
    hp = options[case]
    # torch keeps scalar state (step, NAdam's mu_product) in the default dtype.
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    shapes = [s for s in SHAPES if name not in TORCH_FAILS_ON_SIZE_0 or np.prod(s) != 0]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    params = [a.copy() for a in init]
    tparams = [torch.tensor(a.copy()) for a in init]
    opt = cls(params, **hp)
    topt = getattr(torch.optim, REGISTRY[name].torch)(tparams, **torch_kwargs(name, hp))
    for t in range(STEPS):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        if t == 5:
            grads[-1] = None
        for tp, g in zip(tparams, grads):
            tp.grad = None if g is None else torch.tensor(g)
        opt.step(grads)
        topt.step()
        for i, (p, tp) in enumerate(zip(params, tparams)):
            np.testing.assert_allclose(p, tp.detach().numpy(), **tol(dtype),
                                       err_msg=f"param {i} step {t}")
            tstate = topt.state.get(tp, {})
            ours = opt.state.get(i, {})
            for key, v in tstate.items():
                if key in SCALARS:
                    if key in ours:
                        assert ours[key] == pytest.approx(float(v), rel=1e-6), key
                    continue
                np.testing.assert_allclose(ours[key], v.numpy(), **tol(dtype),
                                           err_msg=f"state {key} of param {i} step {t}")
            assert {k for k in tstate if k not in SCALARS} == {
                k for k in ours if k not in SCALARS
            }, i
