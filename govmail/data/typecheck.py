"""The schema check of a province's merged data: every problem at once, and what stands in.

`validate_all` reports each problem pydantic finds with its message (`unknown key ...; allowed
here: ...`, the value and what is allowed), then sets the bad value aside - an optional key is
dropped, a required one takes defaults.yml's value, a list item is left out - and validates
again, so that the cross-field checks of govmail/data/directory.py still run on everything else.
"""

from __future__ import annotations

import copy
import typing
from typing import Any, Optional

from pydantic import ValidationError

from . import schema


def _message(err: dict) -> str:
    loc, value, msg = tuple(err["loc"]), err.get("input"), err["msg"]
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"unknown key {loc[-1]!r}" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    if err["type"] == "missing":
        return "required key is missing"
    msg = msg.removeprefix("Value error, ")
    if err["type"] in ("int_type", "float_type", "bool_type", "string_type", "list_type", "dict_type",
                       "model_type"):
        msg += f" (YAML read {_yaml_type(value)})"
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{shown}: {msg}"


def _yaml_type(value) -> str:
    if isinstance(value, bool):
        return "a boolean: yes/no/true/false/on/off are booleans in YAML; quote them for text"
    if value is None:
        return "null"
    import datetime

    if isinstance(value, (datetime.date, datetime.datetime)):
        return 'a date: quote it to keep it as text, e.g. "2012-08-17"'

    return {int: "an integer", float: "a number", str: "text", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__)


def validate_all(merged: dict, add, original, remap: dict, fallback: Any, reported: set, set_aside: set) -> Any:
    """The typed model of `merged`, after reporting every schema problem through `add`. So that the
    cross-field checks still run (and report) after a type error elsewhere, a bad optional key is
    dropped (its default applies), a bad required key takes the national default's value
    (`fallback`: defaults.yml) where it has one, and an item of a list whose required key is bad
    or missing is left out (the others are checked); `remap` keeps each list's original indices so
    that later messages name the original item. None when nothing can stand in for a bad key.
    `reported` collects the (original) paths of the problems found, `set_aside` every text inside
    a value set aside (addresses, ids), so that a later check does not report them missing."""
    for _ in range(8):
        try:
            return schema.Province.model_validate(merged)
        except ValidationError as e:
            cuts: list[tuple] = []
            stuck = False
            for err in e.errors():
                loc = tuple(err["loc"])
                orig = original(loc)
                if orig not in reported:
                    add(loc, _message(err))
                    reported.add(orig)
                cut = _cut_point(loc, err["type"])
                if cut is not None:
                    cuts.append(cut)
                else:
                    set_aside.update(_texts(_get(merged, loc)))
                    if not _replace(merged, loc, fallback):
                        stuck = True
            if stuck:
                return None
            for cut in sorted(set(cuts), reverse=True):
                parent = merged
                for part in cut[:-1]:
                    parent = parent[part]
                set_aside.update(_texts(_get(parent, cut[-1:])))
                if isinstance(parent, list):
                    key = original(cut[:-1])
                    remap.setdefault(key, list(range(len(parent))))
                    del remap[key][cut[-1]]
                    del parent[cut[-1]]
                elif isinstance(parent, dict):
                    parent.pop(cut[-1], None)
    return None


def _get(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _texts(value: Any) -> set:
    """Every string inside a value (iteratively: the value passed the bounds of govmail/data/yamldoc.py)."""
    out, stack = set(), [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.add(v)
        elif isinstance(v, dict):
            stack += list(v.values())
        elif isinstance(v, list):
            stack += v
    return out


def _replace(data: Any, loc: tuple, fallback: Any) -> bool:
    """Put the national default's value at `loc` (a key path without list indices); False when
    defaults.yml has none there or it is the value that failed."""
    if not loc or any(isinstance(x, int) for x in loc) or not isinstance(fallback, dict):
        return False
    src, dst = fallback, data
    for part in loc[:-1]:
        if not isinstance(src, dict) or part not in src or not isinstance(dst, dict) or part not in dst:
            return False
        src, dst = src[part], dst[part]
    if not isinstance(src, dict) or loc[-1] not in src or not isinstance(dst, dict) or dst.get(loc[-1]) == src[loc[-1]]:
        return False
    dst[loc[-1]] = copy.deepcopy(src[loc[-1]])
    return True


def _cut_point(loc: tuple, kind: str) -> Optional[tuple]:
    """What to leave out so that a problem at `loc` does not stop the rest: the key itself when it
    is unknown or optional, else the innermost list item holding it; None when neither exists."""
    if kind == "extra_forbidden" or (kind != "missing" and _optional(loc)):
        return loc
    for i in range(len(loc) - 1, -1, -1):
        if isinstance(loc[i], int):
            return loc[: i + 1]
    return None


def _optional(loc: tuple) -> bool:
    """Whether the field at `loc` has a default (leaving it out is valid)."""
    model: Any = schema.Province
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in getattr(model, "model_fields", {}):
            return False
        field = model.model_fields[part]
        model = _model_of(field.annotation)
    return field is not None and not field.is_required() and not isinstance(loc[-1], int)


def _allowed_keys(loc: tuple) -> list[str]:
    """Names of the fields allowed at a location of the schema."""
    model: Any = schema.Province
    for part in loc:
        if isinstance(part, int):
            continue
        f = model.model_fields.get(part)
        if f is None:
            return []
        ann = f.annotation
        model = _model_of(ann)
        if model is None:
            return []
    return list(model.model_fields)


def _model_of(ann) -> Any:
    if isinstance(ann, type) and issubclass(ann, schema.BaseModel):
        return ann
    for a in typing.get_args(ann):
        m = _model_of(a)
        if m is not None:
            return m
    return None


