"""Package names that load their module on first use (PEP 562), so importing a package stays light."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, homes: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: name ``n`` is ``package.<homes[n]>.n``, imported when first asked for."""

    def __getattr__(name: str):
        if name in homes:
            return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*namespace, *homes])

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
