"""A small name → builder registry shared by models, learners and data sources.

Every entry has typed options: a pydantic class the builder declares (a family's
hyperparameters, with types, ranges and one-line meanings, as nanoGPT's GPTConfig)
or, when it declares none, one derived from the builder's signature. A variant of a
family is the same builder with a few changed defaults (as timm's
``_create_resnet('resnet18', ...)``). Options are validated in one place,
:meth:`Registry.check`, so ``model.units=abc`` is a one-line error naming the key,
what it must be and an example, raised before anything runs.

Entries come from the built-in modules, listed explicitly, and from installed
packages through an entry-point group (``echoes.models``, ``echoes.learners``,
``echoes.data``): a plugin's module registers its builders when imported. Loading is
all or nothing: a module that fails to import is named with its error on every
lookup, never silently left out.
"""

from __future__ import annotations

import importlib
import inspect
import re
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from .errors import EchoesError, did_you_mean, unknown


class Options(BaseModel):
    """Base class of a family's typed options: ``name: type = Field(default, ge=..., description=...)``."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


@dataclass(frozen=True)
class Entry:
    """One registered name: its builder, typed options, the variant's defaults and fixed arguments."""

    name: str
    builder: Callable[..., Any]
    options: type[BaseModel]
    defaults: Mapping[str, Any] = field(default_factory=dict)  # changed defaults of option fields
    fixed: Mapping[str, Any] = field(default_factory=dict)  # builder arguments the variant sets for good
    doc: str = ""

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""

    def default(self, key: str) -> Any:
        f = self.options.model_fields[key]
        return self.defaults.get(key, None if f.is_required() else f.get_default(call_default_factory=True))


@dataclass(frozen=True)
class OptionInfo:
    """What ``echoes models NAME`` prints for one option."""

    name: str
    type: str
    default: Any
    required: bool
    meaning: str


class Registry:
    """Maps names to builders; ``kind`` names them in errors, ``section`` is the config key prefix.

    ``context`` are the builder arguments echoes supplies itself (e.g. ``input_size``), never options.
    """

    def __init__(self, kind: str, section: str, modules: Iterable[str], *, group: str,
                 context: tuple[str, ...] = ()) -> None:
        self.kind, self.section, self.group = kind, section, group
        self.modules = tuple(modules)
        self.context = context
        self._items: dict[str, Entry] = {}
        self._loaded = False
        self._error: EchoesError | None = None

    # --- registering ---------------------------------------------------------------------

    def register(self, name: str | None = None, *, options: type[BaseModel] | None = None,
                 doc: str | None = None, **variant: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register a builder under ``name`` (default: its own name).

        ``options``: the family's :class:`Options` class (default: derived from the signature).
        ``variant``: keywords that are option fields change their defaults; other keywords are
        fixed arguments of the builder. ``doc``: the description (default: the builder's docstring).
        """

        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            key = name or builder.__name__
            opts = options or signature_options(builder, self.context, key)
            defaults = {k: v for k, v in variant.items() if k in opts.model_fields}
            fixed = {k: v for k, v in variant.items() if k not in opts.model_fields}
            if options is None and accepts_var_keyword(builder):
                raise TypeError(f"{self.kind} '{key}': a builder taking **kwargs must declare options=...")
            entry = Entry(key, builder, opts, defaults, fixed, doc or inspect.getdoc(builder) or "")
            opts.model_validate(defaults)  # a variant's own defaults must be valid
            old = self._items.get(key)
            if old is not None and (old.builder, old.fixed, old.defaults) != (builder, fixed, defaults):
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = entry
            return builder

        return decorator

    # --- loading -------------------------------------------------------------------------

    def _load(self) -> None:
        """Import the built-in modules and the installed plugins once; a failure is raised every time."""
        if self._error is not None:
            raise self._error
        if self._loaded:
            return
        try:
            for module in self.modules:
                _import(module)
            for ep in entry_points(group=self.group):
                load_entry_point(ep)
        except EchoesError as e:
            self._error = e
            raise
        self._loaded = True

    # --- looking up ----------------------------------------------------------------------

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def entry(self, name: str) -> Entry:
        self._load()
        if name not in self._items:
            raise unknown(self.kind, name, self._items)
        return self._items[name]

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered as ``name``."""
        return self.entry(name).builder

    def summary(self, name: str) -> str:
        """First line of the entry's description."""
        return self.entry(name).summary

    def describe(self, name: str) -> list[OptionInfo]:
        """Every option of ``name``: type, default (the variant's), and one-line meaning."""
        e = self.entry(name)
        return [OptionInfo(k, type_name(f.annotation), e.default(k), f.is_required() and k not in e.defaults,
                           describe_field(f)) for k, f in e.options.model_fields.items()]

    def check(self, name: str, options: Mapping[str, Any]) -> BaseModel:
        """The validated options (with the variant's defaults), or a one-line error naming the key and the fix."""
        e = self.entry(name)
        what = f"{self.kind} '{name}'"
        for key in options:
            if key not in e.options.model_fields:
                raise EchoesError(f"{what} has no option '{key}' — {did_you_mean(key, e.options.model_fields)}")
        try:
            return e.options.model_validate({**e.defaults, **options})
        except ValidationError as err:
            raise self._option_error(e, err) from None

    def _option_error(self, e: Entry, err: ValidationError) -> EchoesError:
        first = err.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        f = e.options.model_fields.get(key)
        if f is None:  # a check across options (a model validator): its own message
            return EchoesError(f"{self.kind} '{e.name}': {first['msg'].removeprefix('Value error, ')}")
        expected = " ".join(p for p in (type_name(f.annotation), range_text(f)) if p)
        example, got = e.default(key), first.get("input")
        choices = get_args(f.annotation) if get_origin(f.annotation) is Literal else ()
        if choices and isinstance(got, str):
            fix = did_you_mean(got, [str(c) for c in choices])
        elif example is not None:
            fix = f"e.g. {self.section}.{key}={_yaml(example)}"
        else:
            fix = "leave it out for the default"
        shown = "an empty value" if got is None else repr(got)
        return EchoesError(f"{self.section}.{key} must be {expected}, got {shown} "
                           f"({self.kind} '{e.name}') — {fix}")

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Validate the options, then call the builder with them, the context and the fixed arguments."""
        e = self.entry(name)
        context = {k: kwargs.pop(k) for k in self.context if k in kwargs}
        hp = self.check(name, kwargs)
        return e.builder(**context, **e.fixed, **dict(hp))


# --- plugins -------------------------------------------------------------------------------


def _import(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as e:
        raise EchoesError(f"cannot load {module} ({_where(e)}): {type(e).__name__}: {e} — fix that module "
                          "(nothing of this kind is available until it loads)") from e


def _where(e: BaseException) -> str:
    """file:line where the error was raised (a syntax error: where the bad line is)."""
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename}:{e.lineno}"
    frames = traceback.extract_tb(e.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def load_entry_point(ep: EntryPoint) -> None:
    """Import a plugin named by an entry point (its module registers its builders on import)."""
    try:
        ep.load()
    except Exception as e:
        dist = f" of {ep.dist.name}" if getattr(ep, "dist", None) is not None else ""
        raise EchoesError(f"cannot load plugin '{ep.name} = {ep.value}'{dist} ({_where(e)}, entry point group "
                          f"{ep.group}): {type(e).__name__}: {e} — fix or uninstall that package") from e


# --- typed options ---------------------------------------------------------------------------


def accepts_var_keyword(fn: Callable[..., Any]) -> bool:
    target = fn.__init__ if inspect.isclass(fn) else fn
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())


def signature_options(fn: Callable[..., Any], context: tuple[str, ...], name: str) -> type[BaseModel]:
    """An :class:`Options` class from the builder's keyword parameters and their annotations."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # an annotation that cannot be resolved: check the name only
        hints = {}
    meanings = docstring_meanings(inspect.getdoc(fn) or "")
    fields: dict[str, Any] = {}
    for key, p in inspect.signature(target).parameters.items():
        if key == "self" or key in context or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        default = ... if p.default is p.empty else p.default
        fields[key] = (hints.get(key, Any), Field(default, description=meanings.get(key)))
    return create_model(f"{name}_options", __base__=Options, **fields)


def accepted_kwargs(fn: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """Keyword parameters of fn (or its __init__); None when it takes **kwargs."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = inspect.signature(target).parameters
    if accepts_var_keyword(fn):
        return None
    return {k: p for k, p in params.items() if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Names only, for callables outside the registries (Optuna samplers...)."""
    accepted = accepted_kwargs(fn)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            raise EchoesError(f"{what} has no option '{key}' — {did_you_mean(key, accepted)}")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_PLURALS = {int: "integers", float: "numbers", bool: "true/false values", str: "strings"}


def type_name(annotation: Any) -> str:
    """'an integer', 'a number or null', 'one of tanh, relu'... for error messages and listings."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        inner = {_PLURALS.get(a, "values") for a in args if a is not Ellipsis}
        return f"a list of {'/'.join(sorted(inner)) or 'values'}"
    if annotation is Any:
        return "any value"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def range_text(f: FieldInfo) -> str:
    """'>= 1', 'in (0, 1]'... from the field's constraints."""
    lo = hi = None
    for m in f.metadata:
        if isinstance(m, annotated_types.Gt):
            lo = f"({m.gt}"
        elif isinstance(m, annotated_types.Ge):
            lo = f"[{m.ge}"
        elif isinstance(m, annotated_types.Lt):
            hi = f"{m.lt})"
        elif isinstance(m, annotated_types.Le):
            hi = f"{m.le}]"
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return (">= " if lo[0] == "[" else "> ") + lo[1:]
    if hi:
        return ("<= " if hi[-1] == "]" else "< ") + hi[:-1]
    return ""


def describe_field(f: FieldInfo) -> str:
    rng = range_text(f)
    return " ".join(p for p in (f.description or "", f"({rng})" if rng else "") if p)


def docstring_meanings(doc: str) -> dict[str, str]:
    """``name``: meaning — the first clause after each option named in a docstring."""
    text = " ".join(doc.split()).replace("``", "`")
    out: dict[str, str] = {}
    for m in re.finditer(r"`(\w+)`\s*[:—]\s*(.+?)(?=[.;]\s|[.;]?$)", text):
        out.setdefault(m.group(1), m.group(2).replace("`", "")[:100])
    return out


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
