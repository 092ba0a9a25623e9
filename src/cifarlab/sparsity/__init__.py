"""DessiLBI: the SLBI and SLBI-Adam optimizers, pruning by their selection order, and the
authors' official LeNet checkpoint.

    opt = SLBI(list(model.named_parameters()), lr=0.1, kappa=1, mu=20)   # train as usual,
    opt.end_epoch(epoch)                                                 # once per epoch
    report = prune(opt, model, 80, ["conv3.weight", "fc1.weight"], prune_bias=True)
    recover(opt, model)
"""

from ..train.slbi import SLBI, SLBIAdam, build_slbi, build_slbi_adam  # the optimizers live in train/
from .prune import format_report, named_states, prune, recover, selection, use_w_star

__all__ = [
    "SLBI", "SLBIAdam", "build_slbi", "build_slbi_adam",
    "prune", "recover", "use_w_star", "selection", "format_report", "named_states",
]  # fmt: skip
