"""Generate the data-file reference (docs/data-file.md) from govmail.schema.

The schema is the single source: each key's type, default and description come from its Field.
A unit test fails when docs/data-file.md is out of date (`govmail schema > docs/data-file.md`).
"""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from . import schema


def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(a) for a in inner) + (" or null" if len(inner) < len(args) else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"mapping ({ann.__name__})"
    return getattr(ann, "__name__", str(ann))


def _model(ann):
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in typing.get_args(ann):
        m = _model(a)
        if m:
            return m
    return None


def _rows(model, prefix, out):
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        if f.is_required():
            default = "required"
        else:
            d = f.default if f.default is not PydanticUndefined else f.default_factory()
            default = "`null`" if d is None else f"`{d!r}`" if not isinstance(d, BaseModel) else "(see below)"
        desc = (f.description or "").replace("\n", " ")
        out.append(f"| `{path}` | {_type_name(f.annotation)} | {default} | {desc} |")
        sub = _model(f.annotation)
        if sub:
            is_list = typing.get_origin(f.annotation) is list
            _rows(sub, f"{path}[]." if is_list else f"{path}.", out)


def data_file_reference() -> str:
    out = [
        "# Data-file reference",
        "",
        "Generated from `govmail/data/schema.py` by `govmail schema`; do not edit by hand.",
        "A province is `group_data/<province>.yml`, merged over `group_data/defaults.yml` (national",
        "defaults). `govmail validate` checks it; every error names file, line, key path, value and",
        "what is allowed. Sizes are MiB (1,048,576 bytes).",
        "",
        "Cross-field rules checked beyond the types: every quota (province default and per-mailbox",
        "overrides) within `policy.quota.min_mb`..`max_mb`; addresses unique in the province and in",
        "its domain; list members exist; people's `agency` exists; `province` equals the file name;",
        "exactly one host with role `mail`; TLS certificate and key given together and readable.",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    _rows(schema.Province, "", out)
    return "\n".join(out) + "\n"
