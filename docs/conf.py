"""Sphinx configuration for aiouring's reference (docs/).

Build:  sphinx-build -W --keep-going -n -b html docs docs/_build/html
(tests/test_docs.py runs exactly that).  The API pages are autodoc over the
importable package, so its native module must be built first
(``pip install -e .`` or ``sh scripts/setup.sh``).  No theme or inventory is
downloaded: the theme is Sphinx's own alabaster, and references to the
standard library are left as plain text (nitpick_ignore_regex below) rather
than fetched with intersphinx.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import aiouring  # noqa: E402

project = "aiouring"
author = "the aiouring authors"
copyright = "the aiouring authors"
release = aiouring.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"aiouring {release}"

default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"
maximum_signature_line_length = 88
python_use_unqualified_type_names = True

# The standard library and third-party names in signatures: shown, not linked
# (no network at build time, so no intersphinx).
nitpick_ignore_regex = [
    (r"py:.*", r"(_?asyncio|asyncio\..*|socket|collections\.abc|typing|typing_extensions|ipaddress|enum|os|array|types)\..*"),
    (r"py:.*", r"(Any|Callable|Awaitable|AsyncIterator|Coroutine|Generator|Sequence|NamedTuple|Literal|Union|Optional)"),
    (r"py:.*", r"(bytes|bytearray|memoryview|int|str|bool|float|list|dict|tuple|set|frozenset|object|type|None)"),
    (r"py:.*", r"(BaseException|Exception|OSError)"),
    (r"py:.*", r"(ssl|pathlib|weakref|dataclasses)\..*"),
    # type variables of the generic factories, and private helpers that
    # appear in signatures (open_tun's awaitable-or-context-manager)
    (r"py:class", r"aiouring\.[\w.]*\.P"),
    (r"py:class", r"aiouring(\.\w+)*\._\w+"),
]

# Public names whose home module is private or a submodule: a reference to
# aiouring.<module>.<Name> resolves to the documented aiouring.<Name> (or
# aiouring.testing.<Name>) when it is the same object.
_PUBLIC_HOMES = ("aiouring", "aiouring.testing", "aiouring.offload")


def _public_target(target: str) -> str | None:
    module_name, _, name = target.rpartition(".")
    if not module_name.startswith("aiouring"):
        return None
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None
    for home in _PUBLIC_HOMES:
        module = importlib.import_module(home)
        if name in getattr(module, "__all__", ()) and getattr(module, name, None) is obj and home != module_name:
            return f"{home}.{name}"
    return None


def _missing_reference(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = _public_target(node["reftarget"])
    if target is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, node, contnode)


def setup(app: Any) -> None:
    app.connect("missing-reference", _missing_reference)
