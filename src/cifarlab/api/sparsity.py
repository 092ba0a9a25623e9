"""DessiLBI as torch optimizers, and pruning by the order it found.

opt = cifarlab.SLBI(model, lr=0.1, kappa=1, mu=100)   # or model.named_parameters()
... loss.backward(); opt.step() ...; opt.end_epoch(epoch)   # end_epoch records the selection order
report = cifarlab.prune(opt, model, 80, ["conv3.weight"]); cifarlab.recover(opt, model)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from ..sparsity.prune import prune, recover
from ..train import slbi as _slbi

__all__ = ["SLBI", "SLBIAdam", "prune", "recover"]

Params = nn.Module | Iterable[tuple[str, nn.Parameter]]


def _named(params: Params) -> list[tuple[str, nn.Parameter]]:
    """SLBI tracks weights by name: a module gives its trainable named parameters."""
    if isinstance(params, nn.Module):
        return [(n, p) for n, p in params.named_parameters() if p.requires_grad]
    named = list(params)
    if named and not (isinstance(named[0], tuple) and isinstance(named[0][0], str)):
        raise TypeError("SLBI needs the model or model.named_parameters(): it tracks weights by their names")
    return named


class SLBI(_slbi.SLBI):
    """DessiLBI (Fu et al. 2020) with momentum, exactly as the authors' slbi_opt.py. `params`: the
    model or its named_parameters(); the other arguments as cifarlab.train.slbi.SLBI (kappa, mu,
    momentum, weight_decay, layers, lambda_conv, lambda_fc, fc_group). Call end_epoch(epoch) after
    each epoch: it records the order in which Gamma selected the filters, which prune() reads."""

    def __init__(self, params: Params, lr: float, **kwargs: Any) -> None:
        super().__init__(_named(params), lr, **kwargs)


class SLBIAdam(_slbi.SLBIAdam):
    """SLBI-Adam: the coupled gradient drives a bias-corrected Adam step (see SLBI for `params`)."""

    def __init__(self, params: Params, lr: float, **kwargs: Any) -> None:
        super().__init__(_named(params), lr, **kwargs)
