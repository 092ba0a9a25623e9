"""Read a folder tree of runs, sweeps and studies into Sections the templates render.

What a folder is, is decided by the files in it (the same files the engine, sweep runner and
studies write; nothing else is assumed):
- run:    config.yaml with metrics.jsonl, summary.json or last.pt (the engine's run folder)
- sweep:  sweep.yaml or */run.json (run folders made by the sweep runner)
- study:  results.md / results.csv / summary.json (the BN and DessiLBI studies, pj2's tables)
- folder: anything else; it matters only through its figures and the reportable folders inside.
A plain folder inside a run or study (an analysis output) adds its figures to that section.
"""

from __future__ import annotations

import csv
import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import flatten
from ..run import read_jsonl
from ..tables import SCORECARD, fmt_cost, fmt_value, header
from .captions import caption_for

MARKER = ".cifarlab-report"  # in the folder of PNGs a Markdown report writes: never scanned
SKIP_DIRS = {"tb", "__pycache__", "checkpoints"}
SKIP_JSON = {"summary.json", "run.json", "captions.json", "data.json"}  # data.json: which copy a run read
MAX_SWEEP_CURVES = 24  # larger sweeps show their runs' curves only through the sweep's curves.png
STUDY_LABELS = {"bn": "Batch-normalization study", "dessilbi": "DessiLBI study", "pj2": "Project 2 study"}
# settings every run shows even when they are the defaults; the rest only when they differ
ALWAYS = (
    "model.name",
    "data.source",
    "data.batch_size",
    "optim.name",
    "optim.lr",
    "schedule.name",
    "train.epochs",
    "seed",
)
NOISE = (
    "name",
    "out",
    "data.cache_dir",
    "data.device",
    "data.eval_batch_size",
    "train.progress",
    "train.log_tensorboard",
    "train.save_checkpoints",
)


@dataclass
class Figure:
    name: str  # unique within the report: used for the Markdown copy and the anchor
    caption: str
    path: Path | None = None  # a PNG on disk, or None for one drawn by the report
    png: bytes | None = None
    width: int = 0
    height: int = 0

    def data(self) -> bytes:
        if self.png is None:
            self.png = self.path.read_bytes()
        return self.png


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    open: bool = True  # shown open, or folded into a <details>


@dataclass
class Group:
    """The figures (and small JSON results) of one folder of a section."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass
class Section:
    kind: str  # run | sweep | study | folder
    path: Path
    rel: str  # path relative to the report's root ('.' for the root)
    title: str
    label: str  # human kind: "Run", "Sweep", "Batch-normalization study", ...
    subtitle: str = ""
    status: str = ""
    stats: list[tuple[str, str]] = field(default_factory=list)  # headline numbers (cards)
    settings: list[tuple[str, str]] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    config_name: str = ""
    config_text: str = ""
    markdown: list[tuple[str, str]] = field(default_factory=list)  # (file name, Markdown text)
    tables: list[Table] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)
    compact: bool = False  # a run inside a sweep: folded, left out of the contents
    anchor: str = ""
    overview: dict[str, Any] = field(default_factory=dict)  # one row of the overview table

    def own_content(self) -> bool:
        return bool(self.kind != "folder" or self.groups or self.tables or self.markdown)

    def has_content(self) -> bool:
        return self.own_content() or any(c.has_content() for c in self.children)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


# ---------------------------------------------------------------- small readers


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header (0, 0 if it is not a PNG)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return 0, 0
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    return struct.unpack(">II", head[16:24])


def natural_key(name: str) -> list:
    """'run10' after 'run2'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def fmt_seconds(s: Any) -> str:
    if not isinstance(s, (int, float)) or not math.isfinite(s):
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def fmt_acc(v: Any) -> str:
    """An accuracy as a percentage; values above 1 are taken as percentages already (as in tables)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "-"
    return f"{v if abs(v) > 1.0 else 100 * v:.2f}%"


# ---------------------------------------------------------------- what a folder is


# The keys by which a summary.json is cifarlab's: the engine's (a run) and the studies' ("study").
RUN_SUMMARY_KEYS = ("train_seconds", "final_train_loss", "diverged")


def cifarlab_summary(d: Path) -> dict | None:
    """d/summary.json when cifarlab wrote it (a run's or a study's); anything else there is no run."""
    summary = read_json(d / "summary.json") if (d / "summary.json").is_file() else None
    if isinstance(summary, dict) and ("study" in summary or any(k in summary for k in RUN_SUMMARY_KEYS)):
        return summary
    return None


def kind_of(d: Path) -> str:
    if (d / "sweep.yaml").is_file() or any(d.glob("*/run.json")):
        return "sweep"
    summary = cifarlab_summary(d)
    if summary is not None and "study" in summary:
        return "study"
    if (d / "metrics.jsonl").is_file() or summary is not None:
        return "run"
    if (d / "config.yaml").is_file() and any((d / f).is_file() for f in ("last.pt", "best.pt")):
        return "run"
    if any((d / f).is_file() for f in ("results.md", "results.csv")):
        return "study"
    return "folder"


def subfolders(d: Path) -> list[Path]:
    out = [
        c
        for c in d.iterdir()
        if c.is_dir() and not c.name.startswith(".") and c.name not in SKIP_DIRS and not (c / MARKER).exists()
    ]
    return sorted(out, key=lambda p: natural_key(p.name))


def scan(root: Path) -> Section:
    """The whole tree under root as one Section (its children nested)."""
    sec = _scan(root, root, seen=set())
    _assign_anchors(sec)
    return sec


def _scan(d: Path, root: Path, curves: bool = True, seen: set | None = None) -> Section:
    seen = set() if seen is None else seen
    seen.add(d.resolve())  # a symlinked folder is reported once, and a link cycle ends here
    kind = kind_of(d)
    rel = d.relative_to(root).as_posix()
    sec = Section(
        kind=kind,
        path=d,
        rel=rel,
        title=d.resolve().name if rel == "." else d.name,
        label={"run": "Run", "sweep": "Sweep", "study": "Study", "folder": "Folder"}[kind],
    )
    if kind == "run":
        _fill_run(sec, curves)
    else:
        {"sweep": _fill_sweep, "study": _fill_study, "folder": _fill_folder}[kind](sec)
    own = Group(title="Figures")
    _add_files(own, d)
    if own.figures or own.tables:
        sec.groups.insert(0, own)
    # a big sweep shows its runs' curves only through its own curves.png (the best configurations)
    child_curves = kind != "sweep" or len(list(d.glob("*/run.json"))) <= MAX_SWEEP_CURVES
    for c in subfolders(d):
        if c.resolve() in seen:
            continue
        child = _scan(c, root, child_curves, seen)
        if child.kind == "folder" and not child.children and not child.markdown:
            # an analysis output folder (or a figures/ folder): its figures belong to this section
            for g in child.groups:
                g.title = f"{c.name}/" if g.title == "Figures" else f"{c.name}/{g.title}"
                sec.groups.append(g)
        elif child.has_content():
            child.compact = kind == "sweep" and child.kind == "run"
            sec.children.append(child)
    return sec


def _add_files(group: Group, d: Path) -> None:
    """The PNGs of folder d, and its small JSON results as tables."""
    for p in sorted(d.glob("*.png"), key=lambda p: natural_key(p.name)):
        w, h = png_size(p)
        if w and h:
            group.figures.append(Figure(name=p.name, caption=caption_for(p), path=p, width=w, height=h))
    for p in sorted(d.glob("*.json"), key=lambda p: natural_key(p.name)):
        if p.name in SKIP_JSON:
            continue
        t = json_table(p)
        if t is not None:
            group.tables.append(t)


def json_table(path: Path) -> Table | None:
    """A JSON object of scalars and short lists (e.g. hessian.json) as a two-column table."""
    data = read_json(path)
    if not isinstance(data, dict):
        return None
    rows = []
    for k, v in flatten(data).items():
        if isinstance(v, (list, tuple)) and (len(v) > 12 or any(isinstance(x, (list, dict)) for x in v)):
            continue  # arrays belong in a figure, not in a table cell
        rows.append([str(k), fmt_value(v)])
    return Table(title=path.name, columns=["key", "value"], rows=rows) if rows else None


# ---------------------------------------------------------------- runs


def key_settings(cfg: dict) -> list[tuple[str, str]]:
    """The settings that define a run, one row per config section: the essentials and whatever
    differs from the defaults."""
    from ..config import Config, to_dict

    defaults = flatten(to_dict(Config()))
    rows: dict[str, list[str]] = {}
    for k, v in flatten(cfg).items():
        if k in NOISE:
            continue
        if k in ALWAYS or k not in defaults or defaults[k] != v:
            section, _, name = k.partition(".") if "." in k else ("run", "", k)
            rows.setdefault(section, []).append(f"{name} {fmt_value(v)}")
    order = ["run", "model", "data", "augment", "optim", "schedule", "train"]
    return [(s, ", ".join(rows[s])) for s in sorted(rows, key=lambda s: order.index(s) if s in order else 99)]


def env_rows(summary: dict) -> list[tuple[str, str]]:
    env = summary.get("env") or {}
    rows = [
        (k, str(env[k]))
        for k in ("device", "gpu", "torch", "torchvision", "python", "cifarlab", "host", "cpu_threads")
        if k in env
    ]
    if "processes" in summary:
        rows.append(("processes", str(summary["processes"])))
    return rows


def _fill_run(sec: Section, curves: bool = True) -> None:
    d = sec.path
    sec.label = "Run"
    sec.config_name, sec.config_text = "config.yaml", read_text(d / "config.yaml")
    cfg = _config_dict(sec.config_text)
    summary = cifarlab_summary(d) or {}
    history = _read_metrics(d / "metrics.jsonl")
    if cfg:
        sec.settings = key_settings(cfg)
    # a run with a validation split chose its best epoch on it; otherwise the test split is all there is
    split = "val" if any("val_acc" in h for h in history) or "best_val_acc" in summary else "test"
    sec.status = _run_status(summary, len(history), (cfg.get("train") or {}).get("epochs"))
    model = summary.get("model") or (cfg.get("model") or {}).get("name")
    dataset = summary.get("dataset") or (cfg.get("data") or {}).get("source")
    best, final, test = _run_accuracies(summary, history, split)
    sec.subtitle = _run_subtitle(model, dataset, len(history), best, split)
    train_s = summary.get("train_seconds", sum(h.get("seconds", 0) for h in history) if history else None)
    sec.stats = _run_stats(summary, split, (best, final, test), train_s)
    sec.env = _run_env(summary, summary.get("seed", cfg.get("seed")), history, train_s)
    if history and curves:
        sec.groups += _curves_group(history, split)
    sec.overview = {
        "kind": "run",
        "model": model or "-",
        "dataset": Path(str(dataset)).name if dataset else "-",
        "epochs": len(history) or "-",
        "best": best,
        "final": test if test is not None else final,
        "split": split,
        "seconds": train_s,
        "device": (summary.get("env") or {}).get("device", "-"),
        "status": sec.status,
    }


def _config_dict(text: str) -> dict:
    """The run's config.yaml as a dict; one that does not parse, or is no mapping, counts as empty."""
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _run_status(summary: dict, done: int, planned: Any) -> str:
    if summary:
        return "diverged" if summary.get("diverged") else "done"
    if done:
        return f"partial ({done}/{planned or '?'} epochs)"
    return "pending"


def _run_accuracies(summary: dict, history: list[dict], split: str) -> tuple[Any, Any, Any]:
    """(best, final) accuracy on the split, and the final test accuracy when the split is val; an
    interrupted run has no summary.json, so its numbers come from metrics.jsonl."""
    best = summary.get(f"best_{split}_acc")
    if best is None and history:
        accs = [h[f"{split}_acc"] for h in history if f"{split}_acc" in h]
        best = max(accs) if accs else None
    final = summary.get(f"final_{split}_acc")
    if final is None and history and f"{split}_acc" in history[-1]:
        final = history[-1][f"{split}_acc"]
    test = summary.get("final_test_acc") if split == "val" else None
    return best, final, test


def _run_subtitle(model: Any, dataset: Any, done: int, best: Any, split: str) -> str:
    parts = (
        model and f"{model}",
        dataset and f"on {Path(str(dataset)).name}",
        done and f"{done} epoch{'s' if done != 1 else ''}",
        best is not None and f"best {split} accuracy {fmt_acc(best)}",
    )
    return ", ".join(p for p in parts if p)


def _run_stats(summary: dict, split: str, accs: tuple[Any, Any, Any], train_s: Any) -> list[tuple[str, str]]:
    # the final accuracy leads; the best epoch is named by the split it was chosen on
    best, final, test = accs
    stats = [(f"final {split} acc", fmt_acc(final))]
    if test is not None:
        stats.append(("final test acc", fmt_acc(test)))
    stats.append((f"best {split} acc (chosen on {split})", fmt_acc(best)))
    return stats + scorecard(summary, train_s)


def _run_env(summary: dict, seed: Any, history: list[dict], train_s: Any) -> list[tuple[str, str]]:
    env = env_rows(summary)
    if seed is not None:
        env.insert(0, ("seed", str(seed)))
    if train_s is not None:
        env.append(("training time", fmt_seconds(train_s)))
    per_epoch = [h["seconds"] for h in history if isinstance(h.get("seconds"), (int, float))]
    if per_epoch:
        env.append(("time per epoch", fmt_seconds(sum(per_epoch) / len(per_epoch))))
    return env


def _curves_group(history: list[dict], split: str) -> list[Group]:
    """The training curves drawn from metrics.jsonl as a group of one figure (none when nothing to draw)."""
    from .curves import training_curves

    png = training_curves(history, split)
    if png is None:
        return []
    w, h = _png_bytes_size(png)
    fig = Figure(
        name="training_curves.png",
        png=png,
        width=w,
        height=h,
        caption=f"Training curves drawn from metrics.jsonl: loss and accuracy per epoch on the training "
        f"data and the {split} split" + (", and the learning rate" if _lr_varies(history) else "") + ".",
    )
    return [Group(title="Training curves", figures=[fig])]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def scorecard(summary: dict, train_s: Any = None) -> list[tuple[str, str]]:
    """What the run cost, as summary.json records it: parameters, FLOPs per image (multiply-adds),
    training time, images/s and peak memory; a number it lacks is left out."""
    from ..tables import giga

    s = summary
    rows = [
        ("parameters", f"{s['params']:,}" if _number(s.get("params")) else None),
        ("FLOPs / image", f"{giga(s['macs_per_image'])} multiply-adds" if _number(s.get("macs_per_image")) else None),
        ("training time", fmt_seconds(train_s) if _number(train_s) else None),
        ("images / s", f"{s['images_per_s']:,.0f}" if _number(s.get("images_per_s")) else None),
        ("peak memory", f"{s['peak_memory_mb']:,.0f} MB" if _number(s.get("peak_memory_mb")) else None),
    ]
    return [(k, v) for k, v in rows if v is not None]


def _read_metrics(path: Path) -> list[dict]:
    try:
        return [r for r in read_jsonl(path) if isinstance(r, dict) and "epoch" in r]
    except (OSError, json.JSONDecodeError):
        return []


def _lr_varies(history: list[dict]) -> bool:
    lrs = {h.get("lr") for h in history if h.get("lr") is not None}
    return len(lrs) > 1


def _png_bytes_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24]) if png[:8] == b"\x89PNG\r\n\x1a\n" else (0, 0)


# ---------------------------------------------------------------- sweeps and studies


def csv_table(path: Path, title: str | None = None, open_: bool = True) -> Table | None:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    if len(rows) < 2:
        return None
    head = rows[0]
    cols = [f"{c} (%)" if _is_acc(c) else header(c) if c in SCORECARD else c for c in head]
    body = [[_fmt_cell(head[i] if i < len(head) else "", v) for i, v in enumerate(r)] for r in rows[1:]]
    return Table(title=title or path.name, columns=cols, rows=body, open=open_)


def _is_acc(col: str) -> bool:
    return col.endswith("acc") or col.endswith("accuracy")


def _fmt_cell(col: str, v: str) -> str:
    try:
        x = float(v)
    except ValueError:
        return v
    if v.strip().lower() in ("true", "false", "nan", "inf", "-inf") or not math.isfinite(x):
        return v
    if _is_acc(col) and abs(x) <= 1.0:
        return f"{100 * x:.2f}"
    if col in SCORECARD:
        return fmt_cost(col, x)
    if x == int(x) and "." not in v and "e" not in v.lower():
        # thousands separated, as everywhere in the report (176,402); a seed is a name, not a count
        return f"{int(x):,}" if abs(x) >= 10000 and "seed" not in col else v
    return f"{x:.4g}"


def shift_headings(md: str, by: int = 2) -> str:
    """Demote Markdown headings so a file's '# Title' sits under the section's own heading."""
    return re.sub(r"^(#{1,6})(?=\s)", lambda m: "#" * min(6, len(m.group(1)) + by), md, flags=re.M)


def _add_tables(sec: Section, open_csv: bool) -> None:
    d = sec.path
    for name in ("results.md", "README.md"):
        text = read_text(d / name)
        if text.strip():
            sec.markdown.append((name, text))
    for p in sorted(d.glob("*.csv"), key=lambda p: (p.name != "results.csv", natural_key(p.name))):
        t = csv_table(
            p, "per-run results (results.csv)" if p.name == "results.csv" and sec.kind == "sweep" else None, open_csv
        )
        if t is not None:
            sec.tables.append(t)


def _fill_sweep(sec: Section) -> None:
    d = sec.path
    sec.label = "Sweep"
    if (d / "sweep.yaml").is_file():
        sec.config_name, sec.config_text = "sweep.yaml", read_text(d / "sweep.yaml")
    if not (d / "results.md").is_file():
        md = _sweep_markdown(d)
        if md:
            sec.markdown.append(("results (from the run folders)", md))
    n_runs = len(list(d.glob("*/run.json")))
    _add_tables(sec, open_csv=n_runs <= 12)
    spec = {}
    try:
        spec = yaml.safe_load(sec.config_text) or {} if sec.config_text else {}
    except yaml.YAMLError:
        pass
    best = _best_line("\n".join(t for _, t in sec.markdown))
    sec.subtitle = f"{n_runs} runs" + (f"; {best}" if best else "")
    if isinstance(spec, dict) and spec.get("name"):
        sec.subtitle = f"{spec['name']}: " + sec.subtitle
    sec.overview = {"kind": "sweep", "runs": n_runs, "best_line": best, "final": sweep_final(d)}


def sweep_final(d: Path) -> str:
    """The best configuration's final test accuracy over its seeds, e.g. '93.10 ± 0.20 (n=3)'; '-' if none."""
    try:
        from ..sweeps.results import best_config, collect, summarize
        from ..tables import fmt_stat

        rows, axes, metrics = collect(d, ["final_test_acc"])
        best = best_config(summarize(rows, axes, metrics), "final_test_acc")
    except Exception:  # a half-written sweep: the overview still lists it
        return "-"
    return f"{fmt_stat('final_test_acc', best['final_test_acc'])}% (n={best['n']})" if best else "-"


def _sweep_markdown(d: Path) -> str:
    """results.md as the sweep module would write it, built in memory (the folder is not touched)."""
    try:
        from ..sweeps.results import collect, markdown, read_sweep, summarize

        rows, axes, metrics = collect(d)
        sweep = read_sweep(d)
        return markdown(sweep.name if sweep else d.name, rows, summarize(rows, axes, metrics), axes, metrics)
    except Exception:  # a half-written sweep: its runs still show below
        return ""


def _best_line(md: str) -> str:
    m = re.search(r"^Best by (.+)$", md, flags=re.M)
    return "best by " + m.group(1).replace("**", "").rstrip(".") if m else ""


def _fill_study(sec: Section) -> None:
    d = sec.path
    summary = read_json(d / "summary.json")
    summary = summary if isinstance(summary, dict) else {}
    study = summary.get("study")
    sec.label = STUDY_LABELS.get(str(study), f"{study} study" if study else "Results")
    _add_tables(sec, open_csv=True)
    if (d / "results.md").is_file() and any(t.title == "results.csv" for t in sec.tables):
        for t in sec.tables:  # results.md already shows the table: keep the raw csv folded
            t.open = False
    cfg = summary.get("config")
    if (d / "config.yaml").is_file():
        sec.config_name, sec.config_text = "config.yaml", read_text(d / "config.yaml")
    elif isinstance(cfg, dict):
        sec.config_name, sec.config_text = "config (from summary.json)", yaml.safe_dump(cfg, sort_keys=False)
    sec.settings = study_settings(summary)
    sec.env = env_rows(summary)
    if "seconds" in summary:
        sec.env.append(("time", fmt_seconds(summary["seconds"])))
    scalars = [
        (k, v)
        for k, v in summary.items()
        if k not in ("study", "config", "env", "seconds", "runs", "figures")
        and isinstance(v, (int, float, str))
        and not isinstance(v, bool)
    ]
    sec.stats = [(k.replace("_", " "), fmt_acc(v) if _is_acc(k) else fmt_value(v)) for k, v in scalars[:8]]
    runs = [r for r in summary.get("runs", []) if isinstance(r, dict)] if isinstance(summary.get("runs"), list) else []
    finals = model_finals(runs)
    parts = [
        summary.get("dataset") and f"on {summary['dataset']}",
        finals and f"models {', '.join(finals)}",
        runs and f"{len(runs)} runs",
        "seconds" in summary and f"took {fmt_seconds(summary['seconds'])}",
    ]
    sec.subtitle = ", ".join(p for p in parts if p)
    for m, acc in finals.items():  # the headline of a study of several models: each one's own final accuracy
        sec.stats.append((f"{m}: final test acc", fmt_acc(acc)))
    sec.overview = {
        "kind": "study",
        "models": finals,  # one overview row per model, each with its own accuracy
        "dataset": summary.get("dataset", "-"),
        "seconds": summary.get("seconds"),
        "device": (summary.get("env") or {}).get("device", "-"),
        "runs": len(runs),
    }


def run_model(r: dict) -> str | None:
    """A study run's model; a run recorded before studies named it (DessiLBI's LeNet part) by its part."""
    m = r.get("model") or {"lenet": "LeNet"}.get(str(r.get("part")))
    return str(m) if m else None


def model_finals(runs: list[dict]) -> dict[str, float | None]:
    """Per model (in order of appearance), the highest final test accuracy of its runs (None: none recorded)."""
    out: dict[str, float | None] = {}
    for r in runs:
        m, acc = run_model(r), r.get("final_test_acc")
        if m is not None:
            out[m] = max(out.get(m) or -math.inf, acc) if _number(acc) else out.get(m)
    return out


STUDY_SKIP = ("name", "progress", "cache_dir")


def study_settings(summary: dict) -> list[tuple[str, str]]:
    """The key settings the study recorded in its summary.json ("settings": its essentials and what
    differs from its defaults); a folder written before studies recorded them shows its whole config."""
    settings = summary.get("settings")
    if not isinstance(settings, dict):
        cfg = summary.get("config")
        settings = {k: v for k, v in cfg.items() if k not in STUDY_SKIP} if isinstance(cfg, dict) else {}
    return [(str(k), fmt_value(v)) for k, v in settings.items()]


def _fill_folder(sec: Section) -> None:
    sec.label = "Folder"


# ---------------------------------------------------------------- anchors


def _assign_anchors(root: Section) -> None:
    used: set[str] = set()
    for sec in root.walk():
        base = "s-" + (re.sub(r"[^a-z0-9]+", "-", sec.rel.lower()).strip("-") or "root")
        a, k = base, 2
        while a in used:
            a, k = f"{base}-{k}", k + 1
        used.add(a)
        sec.anchor = a
        for g in sec.groups:  # file names of the Markdown copies: where each figure came from
            where = [a[2:]] + (
                [] if g.title in ("Figures", "Training curves") else [re.sub(r"[^A-Za-z0-9]+", "-", g.title).strip("-")]
            )
            for f in g.figures:
                f.name = "--".join(where + [f.name])
