"""ds01d's metrics on disk, for node_exporter's textfile collector.

The exposition text comes from prometheus_client (escaping, HELP and TYPE lines, `_total`
suffixes done by the library, not by hand).  The file is replaced atomically: written
beside the target under a name the collector ignores (it reads only `*.prom`), given its
mode, then renamed over the old one, so a scrape never reads half a file.
"""

from __future__ import annotations

import grp
import os
from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ds01d.rules.metric_catalogue import Family

#: The group Debian's node exporter runs as: it may read a file hidden from other users.
READER_GROUP = "prometheus"


class _Families:
    """A prometheus_client collector over families computed elsewhere."""

    def __init__(self, families: Iterable[Family]):
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            spec = family.spec
            if spec.kind == "counter":
                metric: Metric = CounterMetricFamily(spec.name.removesuffix("_total"), spec.help, labels=spec.labels)
            else:
                metric = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, value in family.samples:
                metric.add_metric([labels.get(name, "") for name in spec.labels], value)
            yield metric


def exposition(families: Iterable[Family]) -> bytes:
    """The Prometheus text format of these families."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))  # type: ignore[arg-type]
    return generate_latest(registry)


def write_atomically(path: str, data: bytes, private: bool) -> None:
    """Replace `path` with `data`: mode 0644, or (`private`: other users' names are hidden
    from users) 0640 for the node exporter's group where it exists, else 0600."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)              # one a crash left (unlink never follows a symlink)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if private:
                gid = _reader_gid()
                if gid is not None:
                    os.fchown(f.fileno(), -1, gid)
                os.fchmod(f.fileno(), 0o640 if gid is not None else 0o600)
            else:
                os.fchmod(f.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _reader_gid() -> int | None:
    try:
        return grp.getgrnam(READER_GROUP).gr_gid
    except KeyError:
        return None
