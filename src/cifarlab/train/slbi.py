"""DessiLBI (Fu et al. 2020) as the authors' slbi_opt.py defines it, and SLBI-Adam.

Every tracked weight W (conv kernels and FC weights by default) carries two shadows, both zero at
the start: Z (the dual variable) and Gamma = kappa * shrink(Z) (the sparse estimate). One SLBI step
with d = momentum buffer of (grad + weight_decay * W):
    W     <- W - lr*kappa*(d + (W - Gamma)/mu)
    Z     <- Z + lr/mu * (W_old - Gamma_old)
    Gamma <- kappa * shrink(Z)      FC: sign(z)*max(|z| - lambda, 0); conv: per output filter
                                    max(0, 1 - lambda/||Z_g||) * Z_g
Untracked parameters (biases, BN) take W <- W - lr*kappa*d. Weight decay never touches 1-D
parameters or names containing "bn" (as in the official code).

Extensions beyond the official code (defaults reproduce it): a threshold per weight type
(lambda_conv, lambda_fc; official 1 for both) and a neuron-group lasso for FC weights (fc_group:
one group per output row, shrunk like a conv filter).

State per tracked weight (names as in the official checkpoints): z_buffer, gamma_buffer,
epoch_record (first epoch Gamma became non-zero: per filter for conv, per weight for FC; 2000 if
never), and after end_epoch() prune_order, w_star and the solution path (ours, not official):
gamma_path holds one row of the norm of Gamma per conv filter / FC output row every path_every steps
and at each epoch end, path_steps the step of each row and epoch_steps the step count at each epoch
end (so rows map to fractional epochs). path_every 0 (the default) records every step and keeps about
PATH_POINTS rows per epoch: a one-epoch run still draws a path, a long one stays small in last.pt.
Parameter names live in the param groups ("param_names", torch's own field), so
state_dict()/load_state_dict() round-trip them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim.adam import adam

from ..config import OptimConfig
from ..errors import UserError
from .tensor_lr import GroupSteps, TensorLR, foreach_add_lr, zero_adam_state, zero_momentum

NEVER = 2000.0  # epoch_record of a weight whose Gamma was never non-zero (official value)
PATH_POINTS = 20  # solution-path rows kept per epoch when path_every is 0 (auto)
VARIANTS = ("coupled", "adam_then_slbi")


def _decays(name: str, p: Tensor) -> bool:
    return p.ndim > 1 and "bn" not in name


def is_grouped(p: Tensor, fc_group: bool = False) -> bool:
    """Conv kernels (3-D and up) are shrunk per output filter; FC weights too when fc_group is on."""
    return p.ndim >= 3 or (fc_group and p.ndim == 2)


def _row_norms(t: Tensor) -> Tensor:
    # Norm over everything but dim 0; no reshape, so channels_last kernels are not copied.
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)))


def _per_row(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


class _LBI(GroupSteps, TensorLR, torch.optim.Optimizer):
    """What SLBI and SLBI-Adam share: tracked weights, Z/Gamma updates, prune order, named state."""

    def __init__(
        self, named_params: Iterable[tuple[str, nn.Parameter]], defaults: dict, layers: list[str] | None
    ) -> None:
        named = list(named_params)
        if not named or not all(isinstance(t, tuple) and len(t) == 2 and isinstance(t[0], str) for t in named):
            raise UserError("SLBI needs a non-empty list of (name, parameter) pairs, e.g. model.named_parameters()")
        every = defaults["path_every"]
        if not isinstance(every, int) or isinstance(every, bool) or every < 0:
            raise UserError(
                f"SLBI path_every must be 0 (about {PATH_POINTS} points per epoch) or a step count, got {every!r}"
            )
        if not (defaults["lr"] >= 0 and defaults["kappa"] > 0 and defaults["mu"] > 0):
            raise UserError(
                f"SLBI needs lr >= 0, kappa > 0 and mu > 0 (got lr={defaults['lr']}, "
                f"kappa={defaults['kappa']}, mu={defaults['mu']})"
            )
        super().__init__(named, defaults)
        by_name = dict(named)
        if layers is None:
            layers = [n for n, p in named if p.ndim in (2, 4)]
        else:
            layers = [layers] if isinstance(layers, str) else list(layers)
            unknown = [n for n in layers if n not in by_name]
            if unknown:
                raise UserError(
                    f"SLBI layers not in the model: {', '.join(unknown)}; "
                    f"weights that can be tracked: {', '.join(n for n, p in named if p.ndim >= 2)}"
                )
            flat = [n for n in layers if by_name[n].ndim < 2]
            if flat:
                raise UserError(
                    f"SLBI tracks conv kernels and FC weights only; 1-D parameters given: {', '.join(flat)}"
                )
        for n in layers:
            p = by_name[n]
            st = self.state[p]
            st["z_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["gamma_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            # Prune order is per filter for conv kernels, per weight for FC (official toolbox).
            shape = p.shape[:1] if p.ndim >= 3 else p.shape
            st["epoch_record"] = torch.full(shape, NEVER, dtype=p.dtype, device=p.device)

    # ------------------------------------------------------------------ names and state

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        return [(n, p) for g in self.param_groups for n, p in zip(g["param_names"], g["params"])]

    def tracked_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if "z_buffer" in self.state[p]]

    def load_state_dict(self, state_dict: dict) -> None:
        ours = [g.get("param_names") for g in self.param_groups]
        theirs = [g.get("param_names") for g in state_dict.get("param_groups", [])]
        if all(t is not None for t in theirs) and theirs != ours:
            raise UserError(
                "SLBI optimizer state belongs to other parameters (names differ); "
                "is this a checkpoint of another model?"
            )
        super().load_state_dict(state_dict)
        for g in self.param_groups:  # states saved by older versions may lack newer hyperparameters
            for k, v in self.defaults.items():
                g.setdefault(k, v)

    # ------------------------------------------------------------------ the shared update

    def group_step(self, group: dict) -> None:
        names, params, grads = self._with_grad(group)
        if params:
            self._step(group, params, self._weight_decay(group, names, params, grads))

    def _with_grad(self, group: dict) -> tuple[list[str], list[Tensor], list[Tensor]]:
        names, params = [], []
        for n, p in zip(group["param_names"], group["params"]):
            if p.grad is not None:
                names.append(n)
                params.append(p)
        if any(p.grad.is_sparse for p in params):
            raise UserError("SLBI does not support sparse gradients")
        return names, params, [p.grad for p in params]

    def _weight_decay(self, group: dict, names: list[str], params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        """grad + weight_decay * W on the parameters that decay; the .grad tensors stay untouched."""
        wd = group["weight_decay"]
        idx = [i for i, (n, p) in enumerate(zip(names, params)) if _decays(n, p)]
        if wd == 0 or not idx:
            return grads
        out = list(grads)
        decayed = torch._foreach_add([grads[i] for i in idx], [params[i] for i in idx], alpha=wd)
        for i, t in zip(idx, decayed):
            out[i] = t
        return out

    def _split(self, params: list[Tensor]) -> tuple[list[int], list[int]]:
        tracked = [i for i, p in enumerate(params) if "z_buffer" in self.state[p]]
        untracked = [i for i, p in enumerate(params) if "z_buffer" not in self.state[p]]
        return tracked, untracked

    def _z_gamma(self, group: dict, params: list[Tensor], residual: list[Tensor]) -> None:
        """Z += lr/mu * (W_old - Gamma_old); Gamma = kappa * shrink(Z)."""
        states = [self.state[p] for p in params]
        zs = [s["z_buffer"] for s in states]
        foreach_add_lr(zs, residual, -group["lr"] / group["mu"])
        kappa, fc_group = group["kappa"], group["fc_group"]
        flat = [i for i, p in enumerate(params) if not is_grouped(p, fc_group)]
        if flat:
            # sign(z)*max(|z|-lam, 0) == z - clamp(z, -lam, lam), bit for bit, in three passes.
            lam = group["lambda_fc"]
            z = [zs[i] for i in flat]
            clamped = torch._foreach_clamp_min(z, -lam)
            torch._foreach_clamp_max_(clamped, lam)
            gammas = torch._foreach_sub(z, clamped)
            if kappa != 1:
                torch._foreach_mul_(gammas, kappa)
            for i, g in zip(flat, gammas):
                states[i]["gamma_buffer"].copy_(g)  # in place: a captured step reads this very tensor
        for i, p in enumerate(params):
            if is_grouped(p, fc_group):
                lam = group["lambda_conv"] if p.ndim >= 3 else group["lambda_fc"]
                # 1 - lam/0 = -inf -> clamped to 0: an all-zero group stays zero, as in the official code.
                scale = (1.0 - lam / _row_norms(zs[i])).clamp_min_(0.0)
                if kappa != 1:
                    scale.mul_(kappa)
                torch.mul(zs[i], _per_row(scale, p), out=states[i]["gamma_buffer"])

    def after_step(self) -> None:
        """The solution path, on the host after each step: count the steps of every tracked weight
        that stepped, and keep its rows on the path steps."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and "z_buffer" in self.state[p]:
                    self._path_point(self.state[p], group["path_every"])

    @staticmethod
    def _path_point(st: dict, every: int) -> None:
        """Count the step; on a path step keep ||Gamma|| per filter / row until end_epoch() stores it."""
        st["path_step"] = st.get("path_step", 0) + 1
        if every == 0 or st["path_step"] % every == 0:
            st.setdefault("path_rows", []).append(_row_norms(st["gamma_buffer"]))
            st.setdefault("path_row_steps", []).append(st["path_step"])

    @staticmethod
    def _store_path(st: dict, every: int) -> None:
        """Move the epoch's path rows into gamma_path (tensors only, so checkpoints stay plain), with
        the epoch-end point; auto mode (every 0) keeps about PATH_POINTS of the epoch's rows."""
        rows, steps = st.pop("path_rows", []), st.pop("path_row_steps", [])
        if every == 0 and rows:
            k = max(1, len(rows) // PATH_POINTS)
            keep = list(range(k - 1, len(rows), k))
            rows, steps = [rows[i] for i in keep], [steps[i] for i in keep]
        now = st.get("path_step", 0)
        if not steps or steps[-1] != now:  # the epoch end is always a point, as the per-epoch path had
            rows.append(_row_norms(st["gamma_buffer"]))
            steps.append(now)
        new = torch.stack(rows)
        at = torch.tensor(steps, dtype=new.dtype, device=new.device)
        end = torch.tensor([now], dtype=new.dtype, device=new.device)
        if "gamma_path" in st:  # a path from before steps were recorded: its steps are unknown (nan)
            old = st["gamma_path"]
            st.setdefault("path_steps", torch.full((len(old),), float("nan"), dtype=new.dtype, device=new.device))
            st.setdefault("epoch_steps", st["path_steps"][:0])
            new, at = torch.cat([old, new]), torch.cat([st["path_steps"], at])
            end = torch.cat([st["epoch_steps"], end])
        st["gamma_path"], st["path_steps"], st["epoch_steps"] = new, at, end

    def _lbi_step(self, group: dict, params: list[Tensor], dirs: list[Tensor], lr_kappa: float | Tensor) -> None:
        """Plain SLBI move along dirs: tracked W -= lr*kappa*(d + (W - Gamma)/mu) then Z, Gamma;
        untracked W -= lr*kappa*d."""
        tracked, untracked = self._split(params)
        if untracked:
            foreach_add_lr([params[i] for i in untracked], [dirs[i] for i in untracked], lr_kappa)
        if tracked:
            w = [params[i] for i in tracked]
            residual = torch._foreach_sub(w, [self.state[p]["gamma_buffer"] for p in w])
            foreach_add_lr(w, [dirs[i] for i in tracked], lr_kappa)
            foreach_add_lr(w, residual, lr_kappa / group["mu"])
            self._z_gamma(group, w, residual)

    # ------------------------------------------------------------------ per epoch

    @torch.no_grad()
    def end_epoch(self, epoch: int) -> None:
        """Record which weights Gamma has selected (official update_prune_order).

        epoch_record = first epoch Gamma was non-zero (never increases); prune_order = filter norm
        (conv) or |W| (FC) minus that epoch; w_star = W where Gamma is non-zero, else 0.
        gamma_path gains the epoch's rows: ||Gamma_g|| per conv filter or FC output row (the solution path).
        """
        for g in self.param_groups:
            for p in g["params"]:
                st = self.state[p]
                if "z_buffer" not in st:
                    continue
                selected = st["gamma_buffer"] != 0
                st["w_star"] = p * selected
                per_filter = p.ndim >= 3
                if per_filter:
                    selected = selected.flatten(1).any(1)
                record = torch.where(selected, st["epoch_record"].clamp_max(float(epoch)), st["epoch_record"])
                st["epoch_record"] = record
                st["prune_order"] = (_row_norms(p) if per_filter else p.abs()) - record
                # Kept in the state so it travels with every checkpoint (and survives --resume).
                self._store_path(st, g["path_every"])


class SLBI(_LBI):
    """DessiLBI with momentum (official slbi_opt.SLBI.step, vectorised with torch._foreach ops).

    named_params: (name, parameter) pairs, e.g. list(model.named_parameters()).
    layers: names of the weights to track (default: every 4-D conv kernel and 2-D FC weight).
    """

    def __init__(
        self,
        named_params: Iterable[tuple[str, nn.Parameter]],
        lr: float,
        *,
        kappa: float = 1.0,
        mu: float = 100.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        layers: list[str] | None = None,
        lambda_conv: float = 1.0,
        lambda_fc: float = 1.0,
        fc_group: bool = False,
        path_every: int = 0,
    ) -> None:
        if not 0 <= momentum < 1:
            raise UserError(f"SLBI momentum must be in [0, 1) (got {momentum})")
        defaults = dict(
            lr=lr,
            kappa=kappa,
            mu=mu,
            momentum=momentum,
            weight_decay=weight_decay,
            lambda_conv=lambda_conv,
            lambda_fc=lambda_fc,
            fc_group=fc_group,
            path_every=path_every,
        )
        super().__init__(named_params, defaults, layers)

    def init_state(self) -> None:
        zero_momentum(self)

    def _step(self, group: dict, params: list[Tensor], dirs: list[Tensor]) -> None:
        m = group["momentum"]
        if m != 0:
            # The official code adds weight decay to the buffer after the momentum update; with
            # no dampening that is exactly buf = m*buf + (g + wd*W), torch.optim.SGD's order.
            states = [self.state[p] for p in params]
            old = [i for i, s in enumerate(states) if "momentum_buffer" in s]
            if old:
                bufs = [states[i]["momentum_buffer"] for i in old]
                torch._foreach_mul_(bufs, m)
                torch._foreach_add_(bufs, [dirs[i] for i in old])
            for i, s in enumerate(states):
                if "momentum_buffer" not in s:
                    s["momentum_buffer"] = dirs[i].clone(memory_format=torch.preserve_format)
            dirs = [s["momentum_buffer"] for s in states]
        self._lbi_step(group, params, dirs, group["lr"] * group["kappa"])


class SLBIAdam(_LBI):
    """SLBI-Adam: the coupled gradient d = g + (W - Gamma)/mu (g for untracked parameters) drives
    one bias-corrected Adam step of size lr*kappa; Z and Gamma update as in SLBI.

    variant="adam_then_slbi" is the legacy student-code variant instead: an Adam step on g, then a
    full SLBI step (no momentum) from the Adam-updated weights, untracked parameters included.
    """

    def __init__(
        self,
        named_params: Iterable[tuple[str, nn.Parameter]],
        lr: float,
        *,
        kappa: float = 1.0,
        mu: float = 100.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        layers: list[str] | None = None,
        lambda_conv: float = 1.0,
        lambda_fc: float = 1.0,
        fc_group: bool = False,
        variant: str = "coupled",
        path_every: int = 0,
    ) -> None:
        if variant not in VARIANTS:
            raise UserError(f"unknown SLBI-Adam variant '{variant}'; choose from: {', '.join(VARIANTS)}")
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise UserError(f"SLBI-Adam betas must be two numbers in [0, 1) (got {list(betas)})")
        defaults = dict(
            lr=lr,
            kappa=kappa,
            mu=mu,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            lambda_conv=lambda_conv,
            lambda_fc=lambda_fc,
            fc_group=fc_group,
            variant=variant,
            path_every=path_every,
            capturable=False,
        )
        super().__init__(named_params, defaults, layers)

    def _adam(self, group: dict, params: list[Tensor], dirs: list[Tensor], lr_kappa: float | Tensor) -> None:
        """One bias-corrected Adam step of size lr_kappa along dirs: torch's own (torch.optim.adam.adam)."""
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        for s, p in zip(states, params):
            if "exp_avg" not in s:
                s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if not torch.is_tensor(s.get("step")):  # a tensor, as torch's Adam keeps it (older checkpoints: an int)
                s["step"] = torch.tensor(float(s.get("step", 0)))
        adam(
            params,
            dirs,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=lr_kappa,
            weight_decay=0.0,  # already in dirs (_weight_decay), on the parameters that decay
            eps=group["eps"],
            maximize=False,
            capturable=group["capturable"],  # True in a captured step on CUDA (tensor_lr.lrs_from)
        )

    def init_state(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                zero_adam_state(self.state[p], group, p)

    def _step(self, group: dict, params: list[Tensor], dirs: list[Tensor]) -> None:
        lr_kappa = group["lr"] * group["kappa"]
        if group["variant"] == "adam_then_slbi":
            self._adam(group, params, dirs, lr_kappa)
            self._lbi_step(group, params, dirs, lr_kappa)
            return
        tracked, _ = self._split(params)
        w = [params[i] for i in tracked]
        residual = torch._foreach_sub(w, [self.state[p]["gamma_buffer"] for p in w]) if w else []
        if w:
            coupled = torch._foreach_add([dirs[i] for i in tracked], residual, alpha=1.0 / group["mu"])
            dirs = list(dirs)
            for i, d in zip(tracked, coupled):
                dirs[i] = d
        self._adam(group, params, dirs, lr_kappa)
        if w:
            self._z_gamma(group, w, residual)


# ---------------------------------------------------------------------- builders for the engine

SLBI_ARGS = ("kappa", "mu", "layers", "lambda_conv", "lambda_fc", "fc_group", "path_every")
SLBI_ADAM_ARGS = SLBI_ARGS + ("variant",)


def _args(cfg: OptimConfig, allowed: tuple[str, ...]) -> dict:
    unknown = [k for k in cfg.args if k not in allowed]
    if unknown:
        raise UserError(f"unknown optim.args for '{cfg.name}': {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return dict(cfg.args)


def _named(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def build_slbi(model: nn.Module, cfg: OptimConfig) -> SLBI:
    """SLBI from the config: lr, momentum, weight_decay and optim.args (kappa, mu, layers, ...).

    wd_skip_1d needs no setting: SLBI never decays 1-D parameters or names containing "bn".
    """
    return SLBI(_named(model), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **_args(cfg, SLBI_ARGS))


def build_slbi_adam(model: nn.Module, cfg: OptimConfig) -> SLBIAdam:
    """SLBI-Adam from the config: lr, betas, eps, weight_decay and optim.args (kappa, mu, layers, variant, ...)."""
    return SLBIAdam(
        _named(model),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        **_args(cfg, SLBI_ADAM_ARGS),
    )
