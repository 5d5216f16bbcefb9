"""What the bench scripts share (they print figures; nothing here asserts)."""

from __future__ import annotations

import subprocess
import sys
import time


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    """Run `cmd`; (seconds, result). A failure ends the bench with the command's output."""
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.monotonic() - t, r
