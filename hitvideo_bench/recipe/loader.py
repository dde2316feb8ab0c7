"""Load recipe YAML safely, follow ``extends``, apply ``--set`` overrides, and remember where each key came from.

Every mapping key is located (file and line) so that an error about ``variants.a.tokenizer.config.x``
can point at the line that set it. YAML is read with ``yaml.SafeLoader`` only: no tags that run code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..components import deep_merge
from ..errors import BadInput, Problem


@dataclass
class Located:
    """A raw recipe mapping plus ``dotted path -> (file, line)`` for every key in it."""

    data: dict[str, Any]
    lines: dict[str, tuple[str, int]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def locate(self, path: str) -> tuple[str | None, int | None]:
        """File and line of the longest located prefix of ``path``."""
        parts = path.split(".")
        for n in range(len(parts), 0, -1):
            hit = self.lines.get(".".join(parts[:n]))
            if hit:
                return hit
        return (str(self.files[-1]) if self.files else None, None)


def _node_lines(node: yaml.Node, file: str, prefix: str, out: dict[str, tuple[str, int]],
                duplicates: list[Problem]) -> None:
    """Locate every key under ``node``; a key given twice in one mapping goes to ``duplicates`` (YAML itself
    would keep the last silently, so a setting would vanish without a word)."""
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in first:
                    duplicates.append(Problem(f"duplicate key {key.value!r} (first given on line "
                                              f"{first[key.tag, key.value]}); YAML would keep only the last: "
                                              "remove one", file=file, line=line, field=path))
                first.setdefault((key.tag, key.value), line)
            out[path] = (file, line)
            _node_lines(value, file, path, out, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, file, f"{prefix}.{i}", out, duplicates)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, tuple[str, int]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"recipe file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise BadInput(Problem(f"not a text file: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is not "
                               "valid UTF-8 (a recipe is a YAML text file)", file=str(path))) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BadInput(Problem(f"cannot read recipe: {reason}", file=str(path))) from None
    if "\x00" in text:
        raise BadInput(Problem("not a text file: it contains NUL bytes (a recipe is a YAML text file)",
                               file=str(path)))
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise BadInput(Problem(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=str(path), line=line)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadInput(Problem("a recipe must be a mapping of fields", file=str(path), line=1))
    lines: dict[str, tuple[str, int]] = {}
    duplicates: list[Problem] = []
    if node is not None:
        _node_lines(node, str(path), "", lines, duplicates)
    if duplicates:
        raise BadInput(duplicates)
    return data, lines


def load_located(path: str | Path, _stack: tuple[Path, ...] = ()) -> Located:
    """Read ``path`` and everything it ``extends`` (relative paths; cycles are errors)."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise BadInput(Problem(f"extends cycle: {chain}", file=str(_stack[-1]), field="extends"))
    data, lines = _read_yaml(path)
    parents = data.pop("extends", None)
    if parents is None:
        return Located(data, lines, [path])
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise BadInput(Problem("must be a path or a list of paths", file=str(path),
                               line=lines.get("extends", (None, None))[1], field="extends"))
    merged = Located({}, {}, [])
    for parent in parents:
        parent_path = (path.parent / parent)
        if not parent_path.exists():
            raise BadInput(Problem(f"extended recipe not found: {parent_path}", file=str(path),
                                   line=lines.get("extends", (None, None))[1], field="extends"))
        base = load_located(parent_path, (*_stack, path))
        merged = Located(deep_merge(merged.data, base.data), {**merged.lines, **base.lines},
                         merged.files + base.files)
    lines.pop("extends", None)
    return Located(deep_merge(merged.data, data), {**merged.lines, **lines}, merged.files + [path])


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one ``key.path=value`` override; the value is read as YAML (so 3 is an int, [1,2] a list)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise BadInput(Problem(f"malformed override {item!r}: expected key.path=value", field="--set"))
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise BadInput(Problem(f"value of {key!r} is not valid YAML: {exc}", field="--set")) from None
    return key, value


def apply_sets(located: Located, items: Iterable[str]) -> None:
    """Apply ``--set`` overrides in place; intermediate mappings are created as needed."""
    for item in items:
        key, value = parse_set(item)
        parts = key.split(".")
        node = located.data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise BadInput(Problem(f"cannot set {key!r}: {'.'.join(parts[:i + 1])} is not a mapping",
                                       field="--set"))
            node = nxt
        node[parts[-1]] = value
        located.lines[key] = ("--set", 0)
