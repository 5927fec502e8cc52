"""Dataclass-of-arguments -> ``argparse`` (CleanRL style, without extra dependencies).

A command's arguments are one dataclass whose fields carry a docstring each (a string literal on the line
after the field, as CleanRL writes them); :func:`parse_args` builds an ``argparse`` parser from it, so the
``--help`` text is the docstrings and the parsed value is the dataclass, passed down whole.

Field types understood: ``int`` (accepts ``2e6``), ``float``, ``str``, ``bool`` (``--flag`` /
``--no-flag``), ``Literal[...]`` (choices), ``tuple[str, ...]`` / ``tuple[int, ...]`` (space-separated
values) and ``X | None`` of those (the word ``none`` gives ``None``). Field names map to options with dashes:
``total_timesteps`` -> ``--total-timesteps``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import shlex
import textwrap
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin

__all__ = ["command_line", "field_docs", "parse_args"]

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literals that follow each annotated field in ``cls``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def _int(text: str) -> int:
    v = float(text)
    if v != int(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    return int(v)


def _scalar(tp: Any) -> tuple[Any, list[Any] | None]:
    """``(converter, choices)`` of a scalar annotation."""
    if get_origin(tp) is Literal:
        choices = list(get_args(tp))
        return type(choices[0]), choices
    if tp is int:
        return _int, None
    if tp in (float, str):
        return tp, None
    raise TypeError(f"unsupported argument type {tp!r}")


def _optional(conv: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def parse_args(
    cls: type[T], argv: Sequence[str] | None, description: str | None = None, prog: str | None = None
) -> T:
    """Parse ``argv`` into an instance of the dataclass ``cls`` (defaults from the dataclass)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or (inspect.getdoc(cls) or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = hints[f.name]
        opt = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        kw: dict[str, Any] = {"default": default, "help": docs.get(f.name, " "), "dest": f.name}
        optional = False
        if isinstance(tp, types.UnionType) or get_origin(tp) is typing.Union:
            args = [a for a in get_args(tp) if a is not type(None)]
            optional, tp = len(args) < len(get_args(tp)), args[0]
        if tp is bool:
            parser.add_argument(opt, action=argparse.BooleanOptionalAction, **kw)
            continue
        if get_origin(tp) is tuple:
            conv, choices = _scalar(get_args(tp)[0])
            parser.add_argument(opt, nargs="*", type=conv, choices=choices, **kw)
            continue
        conv, choices = _scalar(tp)
        parser.add_argument(opt, type=_optional(conv) if optional else conv, choices=choices, **kw)
    ns = parser.parse_args(list(argv) if argv is not None else None)
    values = vars(ns)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def command_line(prog: str, argv: Sequence[str]) -> str:
    """The shell command that reproduces a run: ``prog`` followed by the quoted ``argv``."""
    return " ".join([prog, *(shlex.quote(a) for a in argv)])
