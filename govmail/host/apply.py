#!/usr/bin/python3
"""Install the configuration files a deploy sent, service by service: staged -> validated -> swapped.

Run by the deploy (govmail/engine.py) on the host, from the bundle it uploaded in one transfer:

    python3 BUNDLE/apply.py BUNDLE [--root DIR]

BUNDLE/plan.json lists the services in order, each with its changed files (BUNDLE/files/<sha256>)
and its validator, and the SHA-1 every other declared file must have. Before anything is checked or
written, every file of the bundle must be there with the checksum the plan gives it, and every other
declared file must still be what the deploy read: a bundle cut short, mixed with another deploy's,
or planned from a host that changed since (another deploy, a hand edit) installs nothing (exit 1). For each service: its new files are laid over a scratch copy of its configuration
directory and checked with the service's own tool (`postconf`, `doveconf`, `rspamadm configtest`,
`fail2ban-client -t`, `logrotate -d`). Only when the check passes is each file written next to the
live one (`<dest>.govmail-new`, with its owner and mode), the service's pending markers set, and
the file renamed over the live one. A check that fails stops here with the tool's words: that
service's live files are untouched, and no later service is changed (exit 1). Markers of services
already swapped stay, so the next deploy still reloads them.

`--root`: prefix every host path (unit tests run the program on a scratch tree).
Python standard library only.
"""

import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile


def _ids(user, group):
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        uid = int(user) if str(user).isdigit() else -1
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        gid = int(group) if str(group).isdigit() else -1
    return uid, gid


def _under(path, directory):
    directory = directory.rstrip("/") + "/"
    return path.startswith(directory)


def validate(service, bundle, root=""):
    """None when the service's new files pass its validator, else the validator's output."""
    v = service.get("validator")
    if not v:
        return None
    scratch = tempfile.mkdtemp(prefix="govmail-validate-")
    try:
        copy = os.path.join(scratch, "conf")
        live = root + v["copy"]
        if os.path.isdir(live):
            shutil.copytree(live, copy, symlinks=True)
        else:
            os.makedirs(copy)
        for f in service["files"]:
            if _under(f["dest"], v["copy"]):
                target = os.path.join(copy, os.path.relpath(f["dest"], v["copy"]))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(os.path.join(bundle, "files", f["blob"]), target)
        command = v["command"].replace("{dir}", copy)
        r = subprocess.run(["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            return r.stdout.strip() or f"exit status {r.returncode}"
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def install(f, bundle, pending, root=""):
    dest = root + f["dest"]
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    new = dest + ".govmail-new"
    shutil.copyfile(os.path.join(bundle, "files", f["blob"]), new)
    uid, gid = _ids(f["user"], f["group"])
    os.chown(new, uid, gid)
    os.chmod(new, f["mode"])
    for marker in f.get("markers", []):
        os.makedirs(pending, exist_ok=True)
        open(os.path.join(pending, marker), "a").close()
    os.replace(new, dest)


def _digest(path, algorithm):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def problems(plan, bundle, root=""):
    """Why this bundle must not be applied: files missing or not as planned, the host changed."""
    out = []
    for service in plan["services"]:
        for f in service["files"]:
            blob = os.path.join(bundle, "files", f["blob"])
            try:
                if _digest(blob, "sha256") != f["blob"]:
                    out.append(f"{f['dest']}: the transferred copy is not the planned file (checksum differs)")
            except OSError:
                out.append(f"{f['dest']}: the transferred copy is missing (transfer cut short?)")
    for dest, sha1 in sorted(plan.get("expected", {}).items()):
        try:
            have = _digest(root + dest, "sha1")
        except OSError:
            have = None
        if have != sha1:
            out.append(f"{dest}: changed on the host since this deploy read it (another deploy, or a hand edit)")
    return out


def apply(bundle, root=""):
    try:
        with open(os.path.join(bundle, "plan.json")) as fh:
            plan = json.load(fh)
    except (OSError, ValueError) as e:
        print(f"govmail: the deploy's bundle is incomplete ({e}); nothing installed: run the deploy again",
              file=sys.stderr)
        return 1
    found = problems(plan, bundle, root)
    if found:
        for line in found:
            print(f"govmail: {line}", file=sys.stderr)
        print("govmail: nothing installed; run the deploy again (it reads the host afresh)", file=sys.stderr)
        return 1
    pending = root + plan["pending"]
    changed = 0
    for service in plan["services"]:
        problem = validate(service, bundle, root)
        if problem is not None:
            for f in service["files"]:
                print(f"govmail: {f['dest']} NOT installed, the new version does not validate "
                      f"(live file and service unchanged):", file=sys.stderr)
            print(f"govmail: {service['name']}'s check said:\n{problem}", file=sys.stderr)
            return 1
        for f in service["files"]:
            install(f, bundle, pending, root)
            changed += 1
        print(f"govmail: {service['name']}: {len(service['files'])} file(s) installed"
              + (" (validated)" if service.get("validator") else ""))
    write_manifest(plan, root)
    return 0


def write_manifest(plan, root=""):
    """Every file this deploy declared, with the SHA-1 it now has: the ones it left as they were
    (`expected`) and the ones it installed (but not those the host consumes). `govmail verify`
    reads it: a live file that differs was edited since."""
    m = plan.get("manifest")
    if not m:
        return
    files = dict(plan.get("expected", {}))
    for service in plan["services"]:
        for f in service["files"]:
            if f.get("kept", True):
                files[f["dest"]] = _digest(root + f["dest"], "sha1")
    path = root + m["path"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".govmail-new"
    with open(tmp, "w") as fh:
        json.dump({"version": m["version"], "files": dict(sorted(files.items())),
                   "directories": m.get("directories", [])}, fh, indent=1)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    root = ""
    if "--root" in argv:
        i = argv.index("--root")
        root = argv[i + 1].rstrip("/")
        argv = argv[:i] + argv[i + 2:]
    return apply(argv[0], root)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
