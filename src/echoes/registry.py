"""A small name → builder registry shared by models, learners and data sources.

Builders are validated against their signature so a misspelt keyword gets a
one-line error that suggests the closest accepted name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

from .errors import EchoesError, did_you_mean, unknown


class Registry:
    """Maps names to builders (functions or classes); `kind` names them in errors."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package  # modules in it are imported on first lookup
        self._items: dict[str, Callable[..., Any]] = {}
        self._loaded = False

    def register(self, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            key = name or builder.__name__
            if key in self._items and self._items[key] is not builder:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = builder
            return builder

        return decorator

    def _load(self) -> None:
        # Import every module of the package once, so that adding a family is one
        # file and one decorator.
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        if name not in self._items:
            raise unknown(self.kind, name, self._items)
        return self._items[name]

    def summary(self, name: str) -> str:
        """First line of the builder's docstring."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.splitlines()[0] if doc else ""

    def build(self, name: str, /, **kwargs: Any) -> Any:
        builder = self.get(name)
        check_kwargs(builder, kwargs, f"{self.kind} '{name}'")
        return builder(**kwargs)


def accepted_kwargs(fn: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """Keyword parameters of fn (or its __init__); None when it takes **kwargs."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {
        k: p
        for k, p in params.items()
        if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    accepted = accepted_kwargs(fn)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            raise EchoesError(f"{what} has no option '{key}' — {did_you_mean(key, accepted)}")
