#!/usr/bin/python3
"""Writes debian/changelog and debian/copyright for an unpacked nvidia-ml-py source tree.

Usage: debian-files.py SOURCE_DIR VERSION

The copyright file carries NVIDIA's license notice exactly as the source's pynvml.py
states it, so the package always ships the terms of the code inside it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import sys
from pathlib import Path

REVISION = "0ds01d1"


def license_notice(pynvml: str) -> tuple[str, list[str]]:
    """(copyright holder line, license paragraphs' lines) from pynvml.py's `#####` header."""
    match = re.match(r"#{5}\n(.*?)\n#{5}\n", pynvml, re.S)
    if not match:
        raise SystemExit("pynvml.py has no ##### license header: check the new release by hand")
    lines = [re.sub(r"^# ?", "", line) for line in match.group(1).splitlines()]
    holder = lines[0].strip()
    found = re.match(r"Copyright \(c\) ([\d-]+), (.*?)\.\s+All rights reserved\.$", holder)
    if not found or "Redistribution and use" not in match.group(1):
        raise SystemExit(f"unexpected license header ({holder!r}): check the new release by hand")
    return f"{found.group(1)} {found.group(2)}", lines[1:]


def copyright_file(holder: str, notice: list[str]) -> str:
    body = [f" {line.rstrip()}" if line.strip() else " ." for line in notice]
    while body and body[0] == " .":
        body.pop(0)
    return "\n".join([
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
        "Upstream-Name: nvidia-ml-py",
        "",
        "Files: *",
        f"Copyright: {holder}",
        "License: BSD-3-Clause",
        *body,
        "",
        "Files: debian/*",
        "Copyright: 2026 ds01d developers",
        *ds01d_license(),
        "",
    ])


def ds01d_license() -> list[str]:
    """The `License: MIT` paragraph of ds01d's own debian/copyright: the packaging is ds01d's."""
    text = (Path(__file__).resolve().parents[2] / "debian" / "copyright").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("License: MIT")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def changelog(version: str) -> str:
    date = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    return (f"nvidia-ml-py ({version}-{REVISION}) unstable; urgency=medium\n\n"
            f"  * nvidia-ml-py {version} packaged for ds01d.\n\n"
            f" -- ds01d developers <ds01d@packages.invalid>  {date}\n")


def main(source: str, version: str) -> None:
    root = Path(source)
    holder, notice = license_notice((root / "pynvml.py").read_text(encoding="utf-8"))
    (root / "debian" / "copyright").write_text(copyright_file(holder, notice))
    (root / "debian" / "changelog").write_text(changelog(version))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
