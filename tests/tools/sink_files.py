"""What the local receivers (webhook_sink.py, smtp_sink.py) share: how they keep what they got."""

from __future__ import annotations

import json
from pathlib import Path


def keep(out: Path, number: int, what: dict) -> None:
    """OUT/<number>.json, whole or not at all: the test polls for it."""
    part = out / f"{number}.part"
    part.write_text(json.dumps(what))
    part.rename(out / f"{number}.json")
