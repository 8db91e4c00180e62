"""A PNG of a rendered report, taken with headless Chromium (Debian: `apt-get install chromium`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.report.build import write_public


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(html: str | os.PathLike, png: str | os.PathLike, width: int = 1280, height: int = 2000) -> Path:
    """Render ``html`` at ``width`` × ``height`` CSS pixels and save the view as ``png``."""
    binary = chromium()
    if binary is None:
        raise LmforgeError("chromium not found; install it (Debian/Ubuntu: apt-get install -y chromium)")
    png = Path(png)
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "shot.png"  # chromium picks the format from the suffix
        result = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={shot}",
             Path(html).resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0 or not shot.is_file():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise LmforgeError(f"chromium could not render {html} ({last}); check the file opens in a browser")
        write_public(png, shot.read_bytes())
    return png
