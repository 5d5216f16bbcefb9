"""Reading a data file: YAML with the line of every key path, bounded before anything is built.

`Doc(file, display)` parses one file with libyaml, refuses what is too large, too deep, cyclic or
multiplied by aliases (each with one message and its line, before a value is constructed), notes
every key's line and each duplicate key (a merge `<<:` is not one: keys beside it override, as
YAML says), then builds the data. Problems go to `doc.problems`; nothing raises.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import Problem
from .config import fmt_path as _fmt_path

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Bounds of a data file: a 50,000-mailbox province is about 6 MB and 8 levels deep. Past these, a
# file is refused with one message, before any of it is built (an 8 KB file of nested aliases
# would otherwise expand to billions of nodes).
MAX_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 24
MAX_NODES = 4_000_000  # nodes once every alias is expanded
MERGE_TAG = "tag:yaml.org,2002:merge"
# Where an alias could be (`*name` after a space, a bracket, a comma or a colon): a file with none
# is a tree, whose size and depth the key walk bounds on its way; only one with aliases needs the
# graph check below (a 50,000-mailbox file has none: 2 s saved).
_MAYBE_ALIAS = re.compile(r"(^|[\s\[{,:])\*[^\s*]", re.M)


class Doc:
    """A YAML document and the line of every key path in it."""

    def __init__(self, file: Path, display: str):
        self.file = file
        self.display = display
        self.lines: dict[tuple, int] = {}
        self.problems: list[Problem] = []
        self.data: Any = None
        try:
            if file.is_dir():
                self.problems.append(Problem(display, None, "", "is a directory, not a data file"))
                return
            size = file.stat().st_size
            if size > MAX_BYTES:
                self.problems.append(Problem(display, None, "", f"is {size:,} bytes; a data file is at most "
                                             f"{MAX_BYTES:,} bytes"))
                return
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.problems.append(Problem(display, None, "", "file not found"))
            return
        except UnicodeDecodeError as e:
            self.problems.append(Problem(display, None, "", f"not UTF-8 text ({e.reason})"))
            return
        except OSError as e:
            self.problems.append(Problem(display, None, "", f"cannot be read: {e.strerror}"))
            return
        # One parse (libyaml's C parser where PyYAML has it): the node tree gives every key's line,
        # and the data is constructed from the same nodes, once the tree is known to be bounded.
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                problem = _bounds_problem(node) if _MAYBE_ALIAS.search(text) else None
                problem = problem or self._walk(node)
                if problem:
                    line, msg = problem
                    self.problems.append(Problem(display, line, "", msg))
                    return
            self.data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else None
            msg = " ".join(x for x in (e.context, e.problem) if x)
            self.problems.append(Problem(display, line, "", f"malformed YAML: {msg}"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.problems.append(Problem(display, mark.line + 1 if mark else None, "", f"malformed YAML: {first}"))
        except (RecursionError, MemoryError):
            self.problems.append(Problem(display, None, "", "too deeply nested or too large to read"))

    def _walk(self, root):
        """Every key path's line, and duplicate keys. A merge (`<<: *base`) brings in the base's
        keys; keys written beside it override them, as YAML says (not a duplicate). Returns (line,
        message) when the tree is deeper or larger than a data file may be, else None."""
        stack = [(root, (), False)]
        seen_nodes = 0
        while stack:
            node, path, merged = stack.pop()
            line = node.start_mark.line + 1
            seen_nodes += 1
            if len(path) >= MAX_DEPTH:
                return line, f"nested more than {MAX_DEPTH} levels deep; a data file is at most {MAX_DEPTH} levels deep"
            if seen_nodes > MAX_NODES:
                return line, f"holds more than {MAX_NODES:,} values; a data file is at most that large"
            if merged:
                self.lines.setdefault(path, line)
            else:
                self.lines[path] = line
            if isinstance(node, yaml.MappingNode):
                seen: dict[str, int] = {}
                later = []
                for k, v in node.value:
                    if k.tag == MERGE_TAG:
                        bases = v.value if isinstance(v, yaml.SequenceNode) else [v]
                        later += [(b, path, True) for b in bases]
                        continue
                    key = k.value
                    kline = k.start_mark.line + 1
                    if key in seen and not merged:
                        self.problems.append(Problem(
                            self.display, kline, _fmt_path(path + (key,)),
                            f"duplicate key (first at line {seen[key]}); YAML would silently keep the last"))
                    seen[key] = kline
                    stack.append((v, path + (key,), merged))
                # Merged keys only where the mapping itself does not set them: walked last (setdefault).
                stack[:0] = later
            elif isinstance(node, yaml.SequenceNode):
                stack += [(v, path + (i,), merged) for i, v in enumerate(node.value)]
        return None

    def line(self, path: tuple) -> Optional[int]:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def has(self, path: tuple) -> bool:
        return path in self.lines


def _bounds_problem(root) -> Optional[tuple[int, str]]:
    """(line, message) when the node graph is cyclic, deeper than MAX_DEPTH or larger than
    MAX_NODES once its aliases are expanded; None when it is bounded. Iterative: no recursion."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = [c for kv in node.value for c in kv] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            line = node.start_mark.line + 1
            if depth[key] > MAX_DEPTH:
                return line, f"nested more than {MAX_DEPTH} levels deep; a data file is at most {MAX_DEPTH} levels deep"
            if size[key] > MAX_NODES:
                return line, (f"expands to more than {MAX_NODES:,} values once its aliases (*name) are expanded; "
                              "a data file may reuse a block with an alias, not multiply it")
            continue
        if key in size:
            continue
        if key in on_path:
            return node.start_mark.line + 1, "an alias refers to a block that contains it (a recursive alias)"
        on_path.add(key)
        stack.append((node, True))
        for c in children:
            if id(c) in on_path:
                return c.start_mark.line + 1, "an alias refers to a block that contains it (a recursive alias)"
            if id(c) not in size:
                stack.append((c, False))
    return None
