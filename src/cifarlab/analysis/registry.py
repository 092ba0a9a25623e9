"""The analyses `cifarlab inspect` runs, by name (in the manner of timm's model registry).

An analysis registers itself with its options (a dataclass whose fields carry their default and
help), the function that runs it and what its result and figures say:

    @dataclass
    class MeanWeightOptions:
        scale: float = option(1.0, "multiply the means by this")

    @register("mean_weight", MeanWeightOptions, captions={"mean_weight": "The mean weight of each layer."},
              describe=lambda res, classes: f"{len(res['layers'])} layers")
    def mean_weight(s, o, out):  # s: inspect.Session (model, data), o: MeanWeightOptions, out: its folder
        ...  # figures and arrays into out
        return {"layers": [...]}  # JSON-able: inspect() writes it as out/result.json

Everything else is made from the registry: inspect()'s analyses and options, the flags of `cifarlab
inspect` (one per option name; an option several analyses share is one flag), the analyses pj2
runs and the captions the report gives the figures. The analyses cifarlab ships are thin modules
in analysis/builtin/ (the work is done in filters.py, landscape.py, ...); they are imported on the
first look-up and import torch only when they run, so the command line starts fast.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def option(default: Any = None, help: str = "", *, default_text: str | None = None, **argparse_kw: Any) -> Any:
    """A field of an options dataclass: its default and help, and for the command line how --help words
    a None default (default_text) and argparse details (metavar, action="append", nargs/const).

    An option several analyses share is documented (help) by one of them, usually the first; its
    flag is listed with that analysis and --help gives each analysis' default.
    """
    return field(default=default, metadata={"help": help, "default_text": default_text, "argparse": argparse_kw})


@dataclass
class Common:
    """Options of every analysis: where the checkpoint is loaded and its data (inspect.Session), and
    the two an analysis declares itself when it uses them (batch_size, seed)."""

    data: str | None = option(None, "data source (default: the one the run was trained on)")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    batch_size: int = option(500, "images per forward pass")
    seed: int | None = option(
        None, "random directions / vectors (default 0); given, also --n images drawn at random from --split"
    )


@dataclass(frozen=True)
class Analysis:
    name: str
    options: type  # a dataclass of option() fields
    run: Callable[..., dict]  # run(session, options, out_dir) -> result dict (JSON-able)
    describe: Callable[[dict, list], str]  # describe(result, classes) -> the line the command prints
    captions: tuple[tuple[str, str], ...] = ()  # (regex on a figure's file stem, caption with its named groups)
    group: str = ""  # the --help group of the flags it documents (default: its name)
    doc: str = ""  # a description under that group's title
    in_all: bool = False  # `inspect RUN all` runs it
    coarse: Mapping[str, Any] = field(default_factory=dict)  # options `all` gives it (into NAME-coarse/)
    needs: tuple[str, ...] = ()  # what it needs beyond a checkpoint and its data (a second checkpoint, ...)
    check: Callable[[Any, bool], None] | None = None  # check(options, in_all): bad options before anything loads
    note: Callable[[dict], str | None] | None = None  # note(result): a line for stderr, or None

    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))

    def make_options(self, given: Mapping[str, Any], in_all: bool = False) -> Any:
        """Its options from the given ones (the others are not its own); in `all` its coarse ones unless given."""
        values = {**(self.coarse if in_all else {}), **given}
        return self.options(**{k: values[k] for k in self.option_names() if k in values})

    def folder(self, in_all: bool = False) -> str:
        return f"{self.name}-coarse" if in_all and self.coarse else self.name


@dataclass
class Declared:
    """An option name as the command line sees it: its value type and every field that declares it."""

    name: str
    type: type  # bool, int, float or str
    fields: list[tuple[Analysis | None, dataclasses.Field]]  # (None for Common, field)

    def documented_by(self) -> tuple[Analysis | None, dataclasses.Field]:
        return next(((a, f) for a, f in self.fields if f.metadata.get("help")), self.fields[0])


_REGISTRY: dict[str, Analysis] = {}
_loading = False


def _load_builtins() -> None:
    global _loading
    if not _loading:
        _loading = True  # before the import: the modules' own register() calls come back here
        from . import builtin  # noqa: F401


def register(
    name: str,
    options: type,
    *,
    describe: Callable[[dict, list], str] | None = None,
    captions: Mapping[str, str] | None = None,
    **extra: Any,
) -> Callable:
    """Decorator: register run(session, options, out_dir) as analysis `name`; extra: Analysis' other fields."""

    def add(run: Callable[..., dict]) -> Callable[..., dict]:
        _load_builtins()
        if name in _REGISTRY or name == "all":
            raise ValueError(f"analysis {name!r} is already registered")
        if not dataclasses.is_dataclass(options):
            raise TypeError(f"the options of analysis {name!r} must be a dataclass, got {options!r}")
        a = Analysis(
            name, options, run, describe or (lambda res, classes: ""), tuple((captions or {}).items()), **extra
        )
        _declarations([*_REGISTRY.values(), a])  # an option shared with another analysis must be the same kind
        _REGISTRY[name] = a
        return run

    return add


def unregister(name: str) -> None:
    """Forget analysis `name` (a test's own)."""
    _REGISTRY.pop(name, None)


def analyses() -> list[Analysis]:
    """Every registered analysis, the built-in ones first, in the order they were registered."""
    _load_builtins()
    return list(_REGISTRY.values())


def names() -> tuple[str, ...]:
    return tuple(a.name for a in analyses())


def get(name: str) -> Analysis | None:
    _load_builtins()
    return _REGISTRY.get(name)


def in_all() -> list[Analysis]:
    """What `inspect RUN all` runs, in order."""
    return [a for a in analyses() if a.in_all]


def declared() -> dict[str, Declared]:
    """Every option name of Common and the analyses, in the order first declared."""
    return _declarations(analyses())


def _declarations(items: list[Analysis]) -> dict[str, Declared]:
    out: dict[str, Declared] = {}
    for a, cls in [(None, Common)] + [(a, a.options) for a in items]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            d = out.setdefault(f.name, Declared(f.name, _value_type(hints[f.name]), []))
            if d.fields and (_value_type(hints[f.name]), _kind(f)) != (d.type, _kind(d.fields[0][1])):
                who = a.name if a else "Common"
                raise TypeError(f"option {f.name!r} of {who} is not of the kind other analyses declare it")
            d.fields.append((a, f))
    return out


def _kind(f: dataclasses.Field) -> dict:
    """What one flag needs all its fields to agree on besides the type: action, nargs, const."""
    return {k: v for k, v in f.metadata.get("argparse", {}).items() if k != "metavar"}


def _value_type(hint: Any) -> type:
    """int for `int | None`, str for `str | list[str] | None`: the type of one value on the command line."""
    args = [t for t in typing.get_args(hint) if t is not type(None)] if typing.get_origin(hint) else [hint]
    t = args[0] if args else str
    return typing.get_origin(t) or t
