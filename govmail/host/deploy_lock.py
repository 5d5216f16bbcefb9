#!/usr/bin/python3
"""One deploy at a time on a host: a lease that names the running deploy, and a guard for its steps.

The engine (govmail/engine.py) sends this program with each step that changes the host (it needs
nothing installed: `python3 - COMMAND ... <<EOF` with this text), so it works on a bare host too:

    acquire RUN WHO WAIT [DEST READ WANT ...]
                                      take the host for deploy RUN (WHO: user@controller), waiting at
                                      most WAIT seconds for another deploy that is still alive; then
                                      clean what a deploy that died left: other runs' staging
                                      directories and half-swapped `<DEST>.govmail-new` files. Each
                                      declared file must still have the SHA-1 this deploy READ, or
                                      the one it WANTs ("-": no file); otherwise another deploy (or a
                                      hand) changed the host since it was read and this one, planned
                                      from an older state, gives the host back and stops
    guard RUN COMMAND ...             run COMMAND for deploy RUN, only while RUN holds the host
    release RUN                       give the host back, remove RUN's staging directory

The lease (/run/govmail-deploy.json) says who deploys, from which address, since when, and which SSH
session carries the deploy. A deploy is alive while that session is (the controller's SSH
connection: when the controller dies or is stopped, its session ends) and it has run a step within
IDLE seconds. While a step runs it holds an flock on /run/govmail-deploy.lock, so a deploy that
takes over a dead one's lease first waits for the step the dead one left running to end. A step,
once started, runs to its end even when the controller goes away (hang-up and broken pipes are
ignored): a file transfer is validated and swapped whole, an apt run is not cut.

Both files are in /run: a reboot ends every deploy. Standard library only.
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

LOCK = "/run/govmail-deploy.lock"
LEASE = "/run/govmail-deploy.json"
STAGE = "/var/lib/govmail-stage"
IDLE = 30 * 60  # a deploy that ran no step for this long while its session lingers is taken as gone
EX_TEMPFAIL = 75


def say(msg):
    try:
        print(f"govmail: {msg}", file=sys.stderr, flush=True)
    except OSError:
        pass


def _stat(pid):
    """(comm, ppid, start time) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            raw = f.read()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2:].split()
    return comm, int(rest[1]), rest[19]


def session():
    """The SSH session this program runs in: the nearest sshd ancestor, as {pid, start}; None when
    the deploy does not come over SSH."""
    pid = os.getppid()
    while pid > 1:
        st = _stat(pid)
        if st is None:
            return None
        if st[0] in ("sshd", "sshd-session"):
            return {"pid": pid, "start": st[2]}
        pid = st[1]
    return None


def session_alive(s):
    if not s:
        return None  # unknown: judged by its last step only
    st = _stat(s["pid"])
    return st is not None and st[2] == s["start"]


def alive(lease, now=None):
    now = now or time.time()
    if now - lease.get("seen", 0) > IDLE:
        return False
    return session_alive(lease.get("session")) is not False


def read_lease():
    try:
        with open(LEASE, encoding="utf-8") as f:
            lease = json.load(f)
        return lease if isinstance(lease, dict) and lease.get("run") else None
    except (OSError, ValueError):
        return None


def write_lease(lease):
    tmp = LEASE + ".new"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(lease, f)
    os.replace(tmp, LEASE)


def describe(lease):
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(lease.get("since", 0)))
    age = int(time.time() - lease.get("since", 0))
    return (f"deploy {lease['run']} by {lease.get('who', '?')} from {lease.get('from', '?')}, "
            f"since {since} ({age // 60} min {age % 60} s)")


def flock(deadline):
    """The step lock, polled until `deadline`; None when still held then."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.5)


def clean_after(run, dests):
    """What deploys that died left: their staging directories and files written but not swapped."""
    try:
        names = os.listdir(STAGE)
    except OSError:
        names = []
    for name in names:
        if name != run:
            path = os.path.join(STAGE, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
    for dest in dests:
        try:
            os.unlink(dest + ".govmail-new")
            say(f"removed {dest}.govmail-new, left by a deploy that did not finish")
        except OSError:
            pass


def sha1(path):
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.sha1(f.read()).hexdigest()
    except OSError:
        return "-"


def acquire(run, who, wait, files):
    dests = [d for d, _read, _want in files]
    deadline = time.monotonic() + wait
    waited = False
    while True:
        fd = flock(deadline)
        lease = read_lease()
        if fd is None:
            say(f"{os.uname().nodename} is busy with a step of "
                f"{describe(lease) if lease else 'another deploy'}; waited {wait} s: "
                "run this deploy again when it has ended")
            return EX_TEMPFAIL
        if lease and lease["run"] != run and alive(lease):
            os.close(fd)
            if time.monotonic() >= deadline:
                say(f"{os.uname().nodename} is being deployed: {describe(lease)}; waited {wait} s: "
                    "run this deploy again when it has ended")
                return EX_TEMPFAIL
            if not waited:
                say(f"waiting (at most {wait} s) for {describe(lease)}")
                waited = True
            time.sleep(2)
            continue
        try:
            if lease and lease["run"] != run:
                say(f"taking over from {describe(lease)}: it stopped before it ended; cleaning what it left")
            os.makedirs(STAGE, mode=0o700, exist_ok=True)
            clean_after(run, dests)
            now = time.time()
            origin = (os.environ.get("SSH_CONNECTION") or "").split()
            moved = [d for d, read, want in files if sha1(d) not in (read, want)]
            if moved:
                if lease and lease["run"] != run:
                    os.unlink(LEASE)
                for d in moved:
                    say(f"{d}: changed on the host since this deploy read it (another deploy, or a hand edit)")
                say("nothing done: this deploy was planned from an older state of the host; run it again")
                return 1
            write_lease({"run": run, "who": who, "from": origin[0] if origin else "this host",
                         "since": now, "seen": now, "session": session()})
        finally:
            os.close(fd)
        return 0


def _pump(src, dst):
    broken = False
    for chunk in iter(lambda: src.read1(65536), b""):
        if broken:
            continue  # keep draining: the step must not block on a reader that left
        try:
            dst.write(chunk)
            dst.flush()
        except OSError:
            broken = True


def guard(run, argv):
    # A step runs to its end: the controller going away (hang-up, closed pipes) does not cut it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    fd = flock(time.monotonic() + IDLE)
    if fd is None:
        say("the host's deploy lock stayed busy; nothing done")
        return EX_TEMPFAIL
    try:
        lease = read_lease()
        if not lease or lease["run"] != run:
            say(f"this deploy ({run}) no longer holds the host"
                + (f"; {describe(lease)} took it over" if lease else "")
                + ": nothing more is done; run the deploy again")
            return EX_TEMPFAIL
        lease["seen"] = time.time()
        write_lease(lease)
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pumps = [threading.Thread(target=_pump, args=(child.stdout, sys.stdout.buffer)),
                 threading.Thread(target=_pump, args=(child.stderr, sys.stderr.buffer))]
        for t in pumps:
            t.start()
        rc = child.wait()
        for t in pumps:
            t.join()
        lease = read_lease()
        if lease and lease["run"] == run:
            lease["seen"] = time.time()
            write_lease(lease)
        return rc
    finally:
        os.close(fd)


def release(run):
    fd = flock(time.monotonic() + IDLE)
    try:
        lease = read_lease()
        if lease and lease["run"] == run:
            os.unlink(LEASE)
        shutil.rmtree(os.path.join(STAGE, run), ignore_errors=True)
    finally:
        if fd is not None:
            os.close(fd)
    return 0


def valid_run(run):
    return bool(run) and len(run) <= 64 and all(c.isalnum() or c in "-_." for c in run) and run[0] != "."


def main(argv):
    if len(argv) >= 2 and not valid_run(argv[1]):
        say(f"not a deploy run id: {argv[1]!r}")
        return 2
    if len(argv) >= 4 and argv[0] == "acquire" and argv[3].isdigit() and len(argv[4:]) % 3 == 0:
        rest = argv[4:]
        return acquire(argv[1], argv[2], int(argv[3]), [tuple(rest[i:i + 3]) for i in range(0, len(rest), 3)])
    if len(argv) >= 3 and argv[0] == "guard":
        return guard(argv[1], argv[2:])
    if len(argv) == 2 and argv[0] == "release":
        return release(argv[1])
    say("usage: deploy_lock acquire RUN WHO WAIT [DEST READ WANT ...] | guard RUN COMMAND ... | release RUN")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
