"""The walk over a profile's YAML tree: values converted, `${...}` substituted, every problem
collected with its key path (`upstreams.billing.breaker.fail_max`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable


from .model import Keys, SUBSTITUTION_RE, VARIABLE_RE
from .values import InvalidValue, Substituted, closest, describe


MISSING = object()


class Reader:
    """Walks the YAML tree, converting values and collecting problems with their key paths."""

    def __init__(self, folder: Path, fetch: bool = True):
        self.folder = folder
        self.problems: list[tuple[str, str]] = []
        self.files_read: set[Path] = set()
        self.fetch = fetch  # False: documents named by URL are noted in `to_fetch`, not fetched
        self.to_fetch: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def section(self, node: Any, path: str, keys: Keys) -> dict | None:
        if not isinstance(node, dict):
            self.problem(path, f"must be a mapping, got {describe(node)}")
            return None
        for key in node:
            if key not in keys.allowed:
                hint = closest(str(key), keys.allowed)
                self.problem(join(path, key), "unknown key" + (f" (did you mean '{hint}'?)" if hint else ""))
        for key in sorted(keys.required - node.keys()):
            self.problem(join(path, key), "is required")
        return node

    def value(self, node: dict, path: str, key: str, convert: Callable[[Any], Any], default: Any = None) -> Any:
        raw = node.get(key, MISSING)
        if raw is MISSING:
            return default
        try:
            return convert(self.substitute(raw))
        except InvalidValue as e:
            self.problem(join(path, key), str(e))
            return default

    def substitute(self, raw: Any) -> Any:
        """`${NAME}`, `${NAME:-default}` and `${file:PATH}` in a string or a list of strings."""
        if isinstance(raw, list):
            return [self.substitute(item) for item in raw]
        if not isinstance(raw, str) or "${" not in raw:
            return raw
        return Substituted(SUBSTITUTION_RE.sub(self._replace, raw))

    def _replace(self, m: re.Match) -> str:
        expr = m.group(1)
        if expr.startswith("file:"):
            file = self.path(expr.removeprefix("file:"))
            self.files_read.add(file)
            try:
                return file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as e:
                raise InvalidValue(f"cannot read {file}: {e.strerror}") from None
            except UnicodeDecodeError:
                raise InvalidValue(f"cannot read {file}: not UTF-8 text") from None
        name, sep, default = expr.partition(":-")
        if not VARIABLE_RE.fullmatch(name):
            raise InvalidValue(f"bad substitution '${{{expr}}}': use ${{NAME}}, ${{NAME:-default}} or ${{file:PATH}}")
        # As in the shell, the default also applies when the variable is set but empty.
        if os.environ.get(name):
            return os.environ[name]
        if sep:
            return default
        if name in os.environ:
            raise InvalidValue(f"environment variable {name} is empty")
        raise InvalidValue(f"environment variable {name} is not set")

    def path(self, raw: str) -> Path:
        """Relative paths are relative to the profile's folder."""
        return (self.folder / os.path.expanduser(raw)).resolve()


def join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)
