"""The largest algebraic eigenvalue is found even when the largest-magnitude one is negative."""

import torch

from cifarlab.analysis.hessian import largest_eigenvalue, top_eigenvalues


def test_largest_eigenvalue_with_negative_dominant():
    diag = torch.tensor([-3.0, 1.0, 0.5, -0.2], dtype=torch.float64)
    params = {"w": torch.zeros(4, dtype=torch.float64)}
    hvp = lambda v: {"w": diag * v["w"]}
    g = torch.Generator().manual_seed(0)
    (top,), _ = top_eigenvalues(hvp, params, 1, 500, 1e-10, g)
    assert abs(top - -3.0) < 1e-6
    assert abs(largest_eigenvalue(hvp, params, top, 500, 1e-10, g) - 1.0) < 1e-4
    assert largest_eigenvalue(hvp, params, 2.0) == 2.0  # a positive dominant one is already the largest
