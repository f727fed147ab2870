"""mkdocs hook: every public name of the API reference has a docstring, or the build warns (and the
``--strict`` build fails). mkdocstrings renders what is there; this is what makes "there" complete."""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

log = logging.getLogger("mkdocs.hooks.docstrings")

MODULES = ("resilient_etcd", "resilient_etcd.aio", "resilient_etcd.kube", "resilient_etcd.testing")


def undocumented(module_name: str) -> list[str]:
    """Public names of ``module_name`` (its ``__all__``), and their public methods and properties,
    without a docstring of their own."""
    module = importlib.import_module(module_name)
    missing = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(f"{module_name}.{name}")
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if (inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod))) \
                        and not (getattr(value, "__doc__", None) or "").strip():
                    missing.append(f"{module_name}.{name}.{attr}")
    return missing


def on_pre_build(config: Any, **kwargs: Any) -> None:
    for module_name in MODULES:
        for name in undocumented(module_name):
            log.warning("public name without a docstring: %s", name)
