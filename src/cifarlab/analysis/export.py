"""Export a trained model to ONNX, TorchScript or a bundle, and check the export computes what PyTorch does.

The file is written under a temporary name, run on random inputs of another batch size than the
one it was traced with, compared with the PyTorch model, and only then renamed into place: a file
at the output path is always a complete, checked export.

ONNX: the torch.export-based exporter (`dynamo`, needs onnxscript) is the default where it is
installed; the older TorchScript-based one (`legacy`, needs onnx) is deprecated in PyTorch but
still works. The check runs the file with onnxruntime if installed, else onnx's reference
evaluator, else it says the check was skipped.

Bundle: one safetensors file (NAME.safetensors) with what `cifarlab eval` and `cifarlab predict`
need and nothing a resumed run needs: the weights load_model picks (EMA where kept) as tensors, and
as JSON in the header's metadata the resolved config, classes, normalization, input shape, model name
and options, the run's metrics and environment. safetensors is the format the Hugging Face and timm
ecosystem shares weights in: reading it runs no code (a pickle can). Old NAME.bundle.pt files
(torch.save, version 1) still load, through torch.load(weights_only=True).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError

FORMATS = ("onnx", "torchscript", "bundle")
EXPORTERS = ("auto", "dynamo", "legacy")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "bundle": ".safetensors"}
# what a bundle copies from the checkpoint as is (the weights and metrics are chosen apart)
BUNDLE_KEYS = ("config", "classes", "mean", "std", "image_shape", "model_name", "model_options")


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_out(checkpoint: str | Path, fmt: str) -> Path:
    """Beside the checkpoint file: best.pt -> best.onnx / best.torchscript.pt."""
    p = Path(checkpoint)
    return p.with_name(p.stem + SUFFIX[fmt])


def onnx_exporter(exporter: str = "auto") -> str:
    """Which ONNX exporter to use: dynamo needs onnxscript (and onnx), legacy needs onnx."""
    if exporter not in EXPORTERS:
        raise UserError(f"unknown ONNX exporter {exporter!r}; use {', '.join(EXPORTERS)}")
    if exporter in ("auto", "dynamo") and _have("onnxscript") and _have("onnx"):
        return "dynamo"
    if exporter == "dynamo":
        raise UserError("the dynamo ONNX exporter needs onnxscript: pip install 'cifarlab[export]'")
    if _have("onnx"):
        return "legacy"
    raise UserError("ONNX export needs the onnx package (and onnxscript): pip install 'cifarlab[export]'")


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path, exporter: str) -> None:
    """Export with a dynamic batch dimension (input 'images' N x C x H x W, output 'logits')."""
    names = dict(input_names=["images"], output_names=["logits"])
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):  # the exporters narrate every step
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            # external_data=False: one self-contained file (every model here is far below protobuf's 2 GB)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
                **names,
            )
        else:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                **names,
            )


def to_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """torch.jit.trace (the models' forward has no data-dependent control flow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is in maintenance mode and says so
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))


def onnx_runner(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """(fn running the file on a batch, name of the runtime); (None, reason) if none is installed."""
    if _have("onnxruntime"):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return (lambda x: sess.run(None, {name: x})[0]), "onnxruntime"
    if _have("onnx"):
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(str(path))
        return (lambda x: ref.run(None, {"images": x})[0]), "onnx reference evaluator"
    return None, "neither onnxruntime nor onnx is installed"


def torchscript_runner(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    # only ever the file export_model has just written itself: a TorchScript file runs code, so
    # cifarlab never loads one a user hands it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy()

    return run, "torch.jit.load"


def bundle_runner(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    from ..train.checkpoint import load_model

    loaded, _ = load_model(path, "cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).float().numpy()

    return run, "cifarlab load_model"


RUNNERS = {"onnx": onnx_runner, "torchscript": torchscript_runner, "bundle": bundle_runner}


def check_export(
    model: nn.Module,
    path: Path,
    fmt: str,
    shape: tuple[int, int, int],
    batches: tuple[int, ...] = (3, 1),
    seed: int = 0,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> dict:
    """Run the exported file and the model on the same random N x C x H x W inputs (N in batches).

    Returns {"runtime", "max_abs_diff", "checked"}; raises UserError if the outputs differ by more
    than atol + rtol * |reference|.
    """
    run, runtime = RUNNERS[fmt](path)
    if run is None:
        return {"runtime": runtime, "max_abs_diff": None, "checked": False}
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in batches:
        x = torch.randn(n, shape[2], shape[0], shape[1], generator=g)
        with torch.no_grad():
            ref = model(x).float().numpy()
        out = np.asarray(run(x.numpy()), dtype=np.float32)
        if out.shape != ref.shape:
            raise UserError(
                f"the exported model gives outputs of shape {out.shape} for a batch of {n}, PyTorch gives {ref.shape}"
            )
        diff = np.abs(out - ref)
        worst = max(worst, float(diff.max()))
        if not np.all(diff <= atol + rtol * np.abs(ref)):
            raise UserError(
                f"the exported {fmt} model differs from PyTorch: max abs diff {float(diff.max()):.3g} "
                f"(batch of {n}); nothing was written"
            )
    return {"runtime": runtime, "max_abs_diff": worst, "checked": True}


def out_path(out: str | Path, fmt: str, default_name: str) -> Path:
    """The file to write; as cp does, an existing folder receives default_name + the format's suffix."""
    out = Path(out)
    if out.is_dir():
        out = out / f"{default_name}{SUFFIX[fmt]}"
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def temp_beside(out: Path, fmt: str) -> Path:
    """An empty temporary file in out's folder (so the final rename is atomic), with the format's suffix."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=SUFFIX[fmt])
    os.close(fd)
    return Path(tmp)


def export_model(
    model: nn.Module,
    shape: tuple[int, int, int],
    out: str | Path,
    fmt: str,
    exporter: str = "auto",
    default_name: str = "model",
) -> dict:
    """Export model (taking H x W x C = shape images) to `out` as fmt, checked before it is renamed
    into place; an existing folder `out` receives default_name + the format's suffix (model.onnx).
    Returns {"path", "format", "exporter", "runtime", "max_abs_diff", "checked"}."""
    if fmt not in ("onnx", "torchscript"):  # a bundle needs the checkpoint: export_bundle
        raise UserError(f"unknown export format {fmt!r}; use onnx or torchscript")
    out = out_path(out, fmt, default_name)
    model = model.cpu().eval()
    example = torch.randn(2, shape[2], shape[0], shape[1], generator=torch.Generator().manual_seed(1))
    used = onnx_exporter(exporter) if fmt == "onnx" else "torch.jit.trace"
    tmp = temp_beside(out, fmt)
    try:
        try:
            to_onnx(model, example, tmp, used) if fmt == "onnx" else to_torchscript(model, example, tmp)
        except (UserError, OSError):  # OSError: a full or read-only disk is the environment's, not the exporter's
            raise
        except RuntimeError as e:
            if any(w in str(e) for w in ("No space left", "Permission denied", "file write failed")):
                raise
            first = str(e).splitlines()[0][:200] if str(e) else ""
            raise UserError(f"{fmt} export ({used}) failed: {type(e).__name__}: {first}") from None
        except Exception as e:  # an op the exporter cannot translate: say which, in one line
            first = str(e).splitlines()[0][:200] if str(e) else ""
            raise UserError(f"{fmt} export ({used}) failed: {type(e).__name__}: {first}") from None
        check = check_export(model, tmp, fmt, shape)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the export is an ordinary file
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "format": fmt, "exporter": used, **check}


# ---------------------------------------------------------------- bundle


def run_metrics(checkpoint: Path, ckpt: dict) -> tuple[dict, dict]:
    """(metrics, environment): the run's summary.json beside the checkpoint, else what the checkpoint holds."""
    from ..run import environment, read_summary

    if "metrics" in ckpt:  # a bundle exported again: it carries its run's facts
        return ckpt["metrics"], ckpt.get("environment") or {}
    summary = read_summary(checkpoint.parent / "summary.json")
    if summary is not None:
        metrics = {k: v for k, v in summary.items() if k != "env"}
        return metrics, summary.get("env") or environment("cpu")
    # no run folder (a copied checkpoint): the training facts the checkpoint keeps
    metrics = {k: ckpt[k] for k in ("epoch", "best_acc", "train_seconds") if k in ckpt}
    return metrics, environment("cpu")


def make_bundle(checkpoint: Path, ckpt: dict) -> dict:
    """The bundle of a checkpoint: the weights load_model uses, no optimizer or other training state."""
    from ..train.checkpoint import BUNDLE_FORMAT, BUNDLE_VERSION, state_of

    missing = [k for k in ("model_name", "mean", "std", "image_shape") if not ckpt.get(k)]
    if missing:  # checkpoints older than these keys: the bundle could not be used on its own
        raise UserError(f"{checkpoint} lacks {', '.join(missing)}; retrain with this version to bundle it")
    metrics, env = run_metrics(checkpoint, ckpt)
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        # safetensors wants contiguous tensors that share no memory: a clone of each
        "model": {k: v.detach().cpu().contiguous().clone() for k, v in state_of(ckpt).items()},
        **{k: ckpt.get(k) for k in BUNDLE_KEYS},
        "metrics": metrics,
        "environment": env,
        "exported_from": str(checkpoint),
    }


def write_bundle(bundle: dict, path: Path) -> None:
    """Weights as safetensors tensors; everything else as one JSON string in the header's metadata
    (safetensors metadata maps strings to strings)."""
    from safetensors.torch import save_file

    from ..train.checkpoint import BUNDLE_META_KEY

    meta = {k: v for k, v in bundle.items() if k != "model"}
    save_file(bundle["model"], str(path), metadata={BUNDLE_META_KEY: json.dumps(meta)})


def export_bundle(checkpoint: str | Path, out: str | Path, default_name: str = "model") -> dict:
    """Write the bundle of a checkpoint to `out`, checked (reloaded, same outputs) before it is renamed
    into place. Returns {"path", "format", "exporter", "runtime", "max_abs_diff", "checked"}."""
    from ..train.checkpoint import checkpoint_path, load_model

    checkpoint = checkpoint_path(checkpoint)
    model, ckpt = load_model(checkpoint, "cpu")
    bundle = make_bundle(checkpoint, ckpt)
    out = out_path(out, "bundle", default_name)
    tmp = temp_beside(out, "bundle")
    try:
        write_bundle(bundle, tmp)
        check = check_export(model, tmp, "bundle", tuple(ckpt["image_shape"]))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the export is an ordinary file
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "format": "bundle", "exporter": "safetensors", **check}
