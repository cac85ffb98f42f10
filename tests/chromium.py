"""The headless Chromium the labeling page's browser tests drive (`make test` runs this before pytest).

Found in this order: `REFINERY_CHROMIUM` (a path), then `chromium` / `chromium-browser` on the PATH. When none is
there and this runs as root with apt-get (a fresh Debian/Ubuntu machine, a CI container), it installs Debian's
`chromium` package; otherwise it says what to do and exits 1. Never `playwright install`: that downloads a browser
build from a CDN, and the tests use the system's.

    python tests/chromium.py       # exit 0: the path is printed and recorded in <venv>/chromium for the tests
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

NAMES = ("chromium", "chromium-browser")
RECORD = Path(sys.prefix) / "chromium"      # where the tests look when REFINERY_CHROMIUM is not set
ASK = ("the labeling page's browser tests need Chromium. Install it (Debian/Ubuntu: sudo apt-get install -y "
       "chromium), or point REFINERY_CHROMIUM at a Chromium binary, or run REFINERY_SKIP_BROWSER=1 make test to "
       "skip those 2 tests")


def executable(path: str | os.PathLike | None) -> bool:
    return bool(path) and Path(path).is_file() and os.access(path, os.X_OK)


def on_path(env) -> str | None:
    return next((p for p in (shutil.which(n, path=env.get("PATH")) for n in NAMES) if p), None)


def _asked(env) -> str | None:
    """REFINERY_CHROMIUM when it is an executable; else, unless it names another, one on the PATH."""
    wanted = env.get("REFINERY_CHROMIUM")
    return wanted if executable(wanted) else None if wanted else on_path(env)


def find(env=os.environ, record: Path = RECORD) -> str | None:
    """The Chromium to use, without installing anything: REFINERY_CHROMIUM when it is an executable, else the one
    `ensure` recorded, else one on the PATH (unless REFINERY_CHROMIUM names another)."""
    wanted = env.get("REFINERY_CHROMIUM")
    recorded = record.read_text().strip() if record.is_file() else None
    if not executable(wanted) and executable(recorded):
        return recorded
    return _asked(env)


def ensure(env=os.environ, root: bool | None = None, record: Path = RECORD, say=print) -> int:
    """0 with a usable Chromium recorded (installed with apt-get when root and missing), else 1 and what to do."""
    if env.get("REFINERY_SKIP_BROWSER") == "1":
        say("chromium: REFINERY_SKIP_BROWSER=1, the browser tests will be skipped")
        return 0
    wanted = env.get("REFINERY_CHROMIUM")
    if wanted and not executable(wanted):
        say(f"chromium: REFINERY_CHROMIUM={wanted} is not an executable file")
    found = _asked(env)
    if found is None:
        root = os.geteuid() == 0 if root is None else root
        apt = shutil.which("apt-get", path=env.get("PATH"))
        if not (root and apt):
            say(f"chromium: not found; {ASK}" + ("" if root else " (installing it needs root)"))
            return 1
        say("chromium: not found; installing Debian's chromium package (apt-get install -y chromium) ...")
        quiet = {"env": {**env, "DEBIAN_FRONTEND": "noninteractive"}, "stdout": subprocess.DEVNULL}
        if subprocess.run([apt, "update", "-qq"], **quiet).returncode != 0 or \
                subprocess.run([apt, "install", "-y", "-qq", "chromium"], **quiet).returncode != 0:
            say(f"chromium: apt-get could not install it; {ASK}")
            return 1
        found = on_path(env)
        if found is None:
            say(f"chromium: apt-get installed the package but no chromium is on the PATH; {ASK}")
            return 1
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(found + "\n")
    say(f"chromium: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(ensure())
