"""What a notice says, for the notifiers (`notify_mail`, `notify_webhook`).

ds01d runs the admin's notify command with the decision in its environment: DS01_USER,
DS01_CONTAINER, DS01_CONTAINER_NAME, DS01_ACTION, DS01_REASON, DS01_DEADLINE.  The
notifiers build their text here, in one place, from those fields alone, so a mail and
a chat message say the same thing.  ds01d escapes the fields already; they pass through
`printable` again because a notifier can also be run by hand.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Mapping

from ds01d.rules.safe_text import printable

SUBJECT_MAX = 140


@dataclass(frozen=True)
class Notice:
    """One decision of ds01d about a container, as its notify command receives it."""

    host: str
    user: str = ""
    container: str = ""
    name: str = ""
    action: str = ""
    reason: str = ""
    deadline: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str], host: str) -> Notice:
        def field(key: str) -> str:
            return printable(env.get(key, ""))
        return cls(printable(host), field("DS01_USER"), field("DS01_CONTAINER"), field("DS01_CONTAINER_NAME"),
                   field("DS01_ACTION"), field("DS01_REASON"), field("DS01_DEADLINE"))

    def headline(self) -> str:
        """One line: the host and what ds01d does or will do (the reason starts with the container)."""
        said = self.reason or f"{self.action} {self.name or self.container[:12]}".strip()
        return f"ds01d on {self.host}: {said}"

    def subject(self) -> str:
        line = self.headline()
        return line if len(line) <= SUBJECT_MAX else line[:SUBJECT_MAX - 3] + "..."

    def body(self) -> str:
        """A short plain-text message: the headline, the facts, where to look."""
        facts = [("User", self.user or "(no owner found)"),
                 ("Container", f"{self.name} ({self.container[:12]})" if self.container else self.name),
                 ("Action", self.action), ("Deadline", self.deadline)]
        lines = [self.headline(), ""]
        lines += [f"{label + ':':<11}{value}" for label, value in facts if value]
        lines += ["", f"`ds01-gpu-status --mine` on {self.host} shows your containers and their deadlines."]
        return "\n".join(lines) + "\n"


def complain(prog: str, message: str) -> int:
    """A notifier's failure: one sentence on stderr (the notify unit's journal), exit status 1."""
    print(f"{prog}: {message}", file=sys.stderr)
    return 1
