"""Other users' names, kept from non-admins where `daemon.show_other_users` is false.

ds01d's sentences name people ("GPU 1:0 is held for bob until 14:00", "it is bob's"): right
for the journal and for admins, wrong for a user of a lab that chose privacy.  Rather
than two versions of every sentence, text that leaves for a non-admin (socket answers,
the owner's terminal and notifications) passes through `redact` with every name ds01d
knows of except the reader's own, and with the names of containers not theirs.  A name is replaced only where it stands alone (not
inside a longer name or word of name characters), so "bob" in "bobby" stays; a word that
happens to be a user's name elsewhere in a sentence is hidden too, which costs clarity,
never privacy.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

HIDDEN = "another user"
HIDDEN_CONTAINER = "(hidden)"
_NAME_CHARS = r"A-Za-z0-9._@-"
_INNER_CHARS = r"A-Za-z0-9_@-"
#: The fields of socket answers that carry sentences; everything else (states, times, ids,
#: names already hidden by the status document) is data, and left exactly as it is.
TEXT_FIELDS = frozenset({"error", "reason", "why", "unknown_reason", "message"})


class Redactor:
    """Replaces users' names (all but the reader's) with "another user", and the names of
    containers that are not the reader's with "(hidden)"."""

    def __init__(self, users: Iterable[str], reader: str | None,
                 containers: Mapping[str, str | None] | None = None):
        hidden = {n: HIDDEN for n in users if n and n != reader}
        hidden.update({name: HIDDEN_CONTAINER for name, owner in (containers or {}).items()
                       if name and owner != reader and name != reader})
        self._use(hidden)

    def _use(self, hidden: dict[str, str]) -> None:
        self.hidden = hidden
        words = sorted(hidden, key=len, reverse=True)
        # A name ends where no name character follows, or only a full stop that ends the sentence.
        self.pattern = re.compile(rf"(?<![{_NAME_CHARS}])(?:{'|'.join(map(re.escape, words))})"
                                  rf"(?![{_INNER_CHARS}]|\.[{_NAME_CHARS}])") if words else None

    def sparing(self, said: Iterable[str]) -> "Redactor":
        """The same, but leaving what the reader wrote themselves: hiding their own words in the
        answer ("no container '(hidden)'") would tell them the name exists."""
        keep = set(said)
        spared = Redactor((), None)
        spared._use({k: v for k, v in self.hidden.items() if k not in keep})
        return spared

    def text(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.hidden[m.group(0)], text) if self.pattern else text

    def tree(self, value: Any, key: str | None = None) -> Any:
        """The sentences of a JSON document (the values of TEXT_FIELDS, at any depth) redacted."""
        if isinstance(value, str):
            return self.text(value) if key in TEXT_FIELDS else value
        if isinstance(value, list):
            return [self.tree(v, key) for v in value]
        if isinstance(value, dict):
            return {k: self.tree(v, k) for k, v in value.items()}
        return value


NOBODY_HIDDEN = Redactor((), None)
