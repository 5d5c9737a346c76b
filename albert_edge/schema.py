"""Typed, frozen dataclass configs built from YAML dicts, with errors that name the YAML path.

A config class is a frozen dataclass. `build(cls, data, path)` checks keys and types, then
calls the optional `check()` method, which raises `FieldError` for impossible values.
`to_dict` gives back plain JSON (the round trip TextBrewer-style configs promise).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A bad config value: where it is (YAML path, and file:line once known), what is wrong,
    and how to fix it. Its text is one line, so a shell user sees the whole error."""

    def __init__(self, path: str, message: str, hint: str = "", file: str = "", line: int | None = None) -> None:
        self.path = path
        self.message = message
        self.hint = hint
        self.file = file
        self.line = line
        super().__init__(path, message)

    def __str__(self) -> str:
        where = ""
        if self.file and self.file != self.path:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        text = f"{where}{self.path}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


# What a name that becomes a file or directory name may look like: no separators, no `..`,
# no leading dot (hidden files, `.`), nothing a shell or a filesystem treats specially.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def safe_name(value: object, what: str = "name") -> str:
    """`value` if it can be used as one path component inside a directory we own; else a
    one-line reason (ValueError). Ids and names end up in artifact and run paths."""
    if not isinstance(value, str):
        raise ValueError(f"{what} {short_repr(value)} is not a string")
    if not SAFE_NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} {short_repr(value)} is not a safe name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, no '..', at most 128 characters"
        )
    return value


class FieldError(ValueError):
    """Raised by a config's `check()`; the builder turns it into a ConfigError with a path."""

    def __init__(self, field: str, message: str, hint: str = "") -> None:
        self.field = field
        self.message = message
        self.hint = hint
        super().__init__(f"{field}: {message}")


def require(cond: bool, field: str, message: str, hint: str = "") -> None:
    if not cond:
        raise FieldError(field, message, hint)


def short_repr(value: Any) -> str:
    """A value for a one-line message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _convert(option, value, path)
            except ConfigError as err:
                errors.append(err)
        # a nested dataclass error is more useful than "wrong type"
        for err in errors:
            if err.path != path:
                raise err
        raise ConfigError(path, f"expected {_type_name(tp)}, got {short_repr(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(path, f"expected null, got {short_repr(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(map(repr, allowed))}"
        raise ConfigError(path, f"{short_repr(value)} is not allowed", hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {short_repr(value)}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {short_repr(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected true or false, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected an integer, got {short_repr(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 5e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(path, f"expected a number, got {short_repr(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"expected a string, got {short_repr(value)}")
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def build(cls: type, data: Any, path: str) -> Any:
    """Build the frozen dataclass `cls` from a YAML mapping; raise ConfigError on bad input."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {short_repr(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(fields)}"
            raise ConfigError(f"{path}.{key}", "unknown key", hint)
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{path}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}.{name}", "required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except FieldError as err:
            raise ConfigError(f"{path}.{err.field}", err.message, err.hint) from None
    return obj


def to_dict(obj: Any) -> Any:
    """JSON-ready form of a config (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj
