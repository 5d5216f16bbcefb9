"""The data file's commands: `validate`, `address`, `import`, `hash-password`, `schema`."""

from __future__ import annotations

import getpass
import sys

from ..data import DataError, available_provinces, load_province
from .args import err, province, province_key


def register(sub) -> None:
    p = sub.add_parser("validate", help="check province data files; touches no host")
    p.add_argument("provinces", nargs="*", type=province_key)
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("address", help="the address a person gets by the province's naming rule")
    p.add_argument("province", type=province_key)
    p.add_argument("name", help="full Vietnamese name, e.g. 'Nguyễn Văn Hậu'")
    p.add_argument("--agency", help="agency or district id")
    p.add_argument("--department", help="department id (district departments are part of the address)")
    p.set_defaults(fn=cmd_address)

    p = sub.add_parser("import", help="CSV of (full name, agency, role[, department]) -> directory entries")
    p.add_argument("province", type=province_key)
    p.add_argument("csv")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("hash-password", help="print the {BLF-CRYPT} hash of a prompted password")
    p.set_defaults(fn=cmd_hash_password)

    p = sub.add_parser("schema", help="print the data-file reference")
    p.set_defaults(fn=cmd_schema)


def cmd_validate(args) -> int:
    provinces = args.provinces or available_provinces()
    bad = 0
    for p in provinces:
        try:
            cfg = load_province(p, cache=False)  # asked to validate: validates, whatever was kept
        except DataError as e:
            bad += 1
            print(f"✗ {p}: {e}")
            continue
        for w in cfg.warnings:
            print(f"⚠ {w}")
        att = cfg.policy.attachment.max_mb
        print(
            f"✓ {p}: {cfg.domain}, {len(cfg.accounts)} mailboxes, {len(cfg.aliases)} lists, "
            f"quota {cfg.policy.quota.default_mb} MiB [{cfg.cite('quota')}], "
            f"attachments {str(att) + ' MiB' if att else 'not limited'} -> message limit "
            f"{cfg.message_size_limit:,} bytes [{cfg.cite('attachment')}]"
        )
    return 1 if bad else 0


def cmd_address(args) -> int:
    from ..data.naming import NameClash, address_for, all_units, local_units, unit_of

    cfg = province(args.province)
    if cfg is None:
        return 2
    m = cfg.model
    units = set(all_units(m))
    if args.agency and args.agency not in units:
        err(f"agency {args.agency!r} is not in the directory of {cfg.key}; known: {', '.join(sorted(units))}")
        return 2
    unit = unit_of(args.agency, args.department, local_units(m), cfg.policy.naming.unit_order)
    taken = {a.address for a in cfg.accounts} | set(cfg.aliases)
    try:
        print(address_for(args.name, unit, cfg.domain, cfg.policy.naming, taken))
    except NameClash as e:
        err(str(e))
        return 1
    return 0


def cmd_import(args) -> int:
    from ..data.csvimport import CsvError, read_people
    from ..data.naming import import_people, yaml_entry

    cfg = province(args.province)
    if cfg is None:
        return 2
    try:
        rows, refused, cleaned = read_people(args.csv)
    except CsvError as e:
        err(str(e))
        return 2
    entries, problems = import_people(cfg, [r for _, r in rows], lines=[n for n, _ in rows], source=args.csv)
    print(f"# {len(entries)} people for directory.people of group_data/{cfg.key}.yml "
          f"(addresses by {cfg.policy.naming.article}); review, then paste under `people:`")
    for e in entries:
        print(yaml_entry(e))
    for w in cleaned:
        err(f"warning: {w}")
    for p in refused + problems:
        err(p)
    n = len(refused) + len(problems)
    print(f"govmail: {len(entries)} addresses assigned, {n} rows need a decision", file=sys.stderr)
    return 1 if n else 0


def cmd_hash_password(args) -> int:
    from ..data.passwords import hash_password

    pw = getpass.getpass("Password: ")
    if pw != getpass.getpass("Again: "):
        err("the two entries differ")
        return 1
    print(hash_password(pw))
    return 0


def cmd_schema(args) -> int:
    from ..data.docs import data_file_reference

    print(data_file_reference(), end="")
    return 0
