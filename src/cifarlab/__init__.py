"""cifarlab: train, compare and look inside convolutional networks on CIFAR-10.

    import cifarlab
    run = cifarlab.fit("quick", overrides={"train.epochs": 1})     # trains; run.model is the network
    cams = cifarlab.gradcam(run.model, images)                      # N x H x W numpy
    eigs = cifarlab.hessian_eigs(my_module, x, y, k=3)              # any nn.Module

The names below are cifarlab.api's (see each one's help). They load on first use, so that
`import cifarlab` (and the `cifarlab` command) stays quick: torch is imported when a name is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = [
    "__version__",
    "create_model", "list_models", "count_params",
    "load_data", "loaders", "Dataset",
    "fit", "Run", "load", "Classifier", "sweep",
    "gradcam", "filters", "feature_maps", "landscape", "hessian_eigs", "hessian_trace", "probes",
    "SLBI", "SLBIAdam", "prune", "recover",
    "bn_study", "dessilbi_study",
    "UserError", "SweepFailed",
]  # fmt: skip

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports them
    from .api import (
        SLBI,
        Classifier,
        Dataset,
        Run,
        SLBIAdam,
        SweepFailed,
        UserError,
        bn_study,
        count_params,
        create_model,
        dessilbi_study,
        feature_maps,
        filters,
        fit,
        gradcam,
        hessian_eigs,
        hessian_trace,
        landscape,
        list_models,
        load,
        load_data,
        loaders,
        probes,
        prune,
        recover,
        sweep,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
