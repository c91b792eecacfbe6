"""Which container a Docker API request touches, and whose containers a caller may see:
the gateway's rules about other users' containers, pure.

dockerd routes on (method, path): `GET /containers/json` lists, `POST /containers/create`
creates and `POST /containers/prune` removes every stopped container, but `DELETE
/containers/json` removes a container *named* json.  So a request is classified the way
the engine routes it, from the path the gateway has already decoded and stripped of its
version prefix (`gateway.api_paths`).  Everything that names a container (its path, the
`container` of `/commit`, an exec id, a network connect's `Container`, a create's
`VolumesFrom` and `container:` namespace modes) is a reference to check against the
caller; a caller that is neither root nor an admin may only reference their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlencode

#: Namespace modes in a create body that join another container's namespace ("container:NAME").
JOINING_MODES = ("NetworkMode", "PidMode", "IpcMode")
#: What dockerd 20.10 routes after `/containers/{name}`.  Its name pattern is `.*`, so a path
#: with more segments names a container whose name has a `/`: a legacy link's name
#: (`/parent/alias`), which reaches the linked container.  Such paths are not routed here.
CONTAINER_SUFFIXES = frozenset({
    "", "/export", "/changes", "/json", "/top", "/logs", "/stats", "/attach/ws", "/archive", "/kill", "/pause",
    "/unpause", "/restart", "/start", "/stop", "/wait", "/resize", "/attach", "/copy", "/exec", "/rename",
    "/update"})
#: Path roots whose changes only admins make: swarm (its tasks are containers dockerd makes
#: itself, past the gateway), plugins (they run as root), and pruning volumes (everyone's).
ADMIN_ONLY_ROOTS = ("swarm", "services", "nodes", "secrets", "configs", "tasks", "plugins")


@dataclass(frozen=True)
class Create:
    """`POST /containers/create`."""


@dataclass(frozen=True)
class ListContainers:
    """`GET /containers/json` (docker ps)."""


@dataclass(frozen=True)
class Prune:
    """`POST /containers/prune`: every stopped container, whoever's."""


@dataclass(frozen=True)
class OnContainer:
    """A request on one container, named by `ref` (a name, an id or an id prefix)."""

    ref: str
    rest: str            # what follows the reference in the path, e.g. "/exec" ("" for DELETE)


@dataclass(frozen=True)
class OnExec:
    """A request on an exec instance (start, resize, inspect): its container decides."""

    exec_id: str


@dataclass(frozen=True)
class Commit:
    """`POST /commit?container=REF`: an image of a container's files."""

    ref: str


@dataclass(frozen=True)
class NetworkConnect:
    """`POST /networks/{id}/connect` or `/disconnect`: the body's `Container` joins or leaves."""

    network: str = ""


@dataclass(frozen=True)
class OnNetwork:
    """`DELETE /networks/{id}`: only one's own network."""

    network: str


@dataclass(frozen=True)
class NetworkCreate:
    """`POST /networks/create`: a macvlan network, or a host bridge by name, is the host's network."""


@dataclass(frozen=True)
class VolumeCreate:
    """`POST /volumes/create`: a local volume can bind a host path (`o=bind,device=...`)."""


@dataclass(frozen=True)
class OnVolume:
    """`DELETE /volumes/{name}`: only one's own (or an unlabelled, shared) volume."""

    name: str


@dataclass(frozen=True)
class Unrouted:
    """A path the gateway will not forward for a non-admin: `why` is the one sentence."""

    why: str


@dataclass(frozen=True)
class Build:
    """`POST /build`: its RUN steps run in containers, placed by the `cgroupparent` parameter."""


@dataclass(frozen=True)
class Elsewhere:
    """Anything else: no container of anyone's is named in the path."""


Route = Create | ListContainers | Prune | OnContainer | OnExec | Commit | NetworkConnect | NetworkCreate | OnNetwork | \
    Build | VolumeCreate | OnVolume | Unrouted | Elsewhere


def route(method: str, path: str, query: str) -> Route:
    """What a request does to containers, read as dockerd routes it."""
    parts = path.split("/")[1:]
    if len(parts) >= 2 and parts[0] == "containers" and parts[1]:
        if len(parts) == 2:
            special = {("GET", "json"): ListContainers(), ("POST", "create"): Create(),
                       ("POST", "prune"): Prune()}.get((method, parts[1]))
            if special is not None:
                return special
        rest = "/" + "/".join(parts[2:]) if len(parts) > 2 else ""
        if rest not in CONTAINER_SUFFIXES:
            return Unrouted("a container is named by one path segment; names with '/' (legacy links) "
                            "are not reachable through the gateway")
        return OnContainer(parts[1], rest)
    if len(parts) >= 3 and parts[0] == "exec" and parts[1]:
        return OnExec(parts[1])
    if parts == ["commit"]:
        ref = first_value(query, "container")
        return Commit(ref) if ref else Elsewhere()
    if len(parts) >= 3 and parts[0] == "networks" and parts[-1] in ("connect", "disconnect") and method == "POST":
        return NetworkConnect("/".join(parts[1:-1]))      # dockerd's network id pattern is `.*` too
    if parts == ["networks", "create"] and method == "POST":
        return NetworkCreate()
    if len(parts) >= 2 and parts[0] == "networks" and parts[1] and method == "DELETE":
        return OnNetwork("/".join(parts[1:]))
    if parts == ["build"] and method == "POST":
        return Build()
    if parts == ["volumes", "create"] and method == "POST":
        return VolumeCreate()
    if len(parts) >= 2 and parts[0] == "volumes" and parts[1] and method == "DELETE":
        return OnVolume("/".join(parts[1:]))
    if method != "GET" and method != "HEAD" and (parts[0] in ADMIN_ONLY_ROOTS or parts == ["volumes", "prune"]):
        what = "pruning volumes removes other users' volumes" if parts[0] == "volumes" else \
            f"{parts[0]} change the whole engine"
        return Unrouted(f"{what}; ask an admin")
    return Elsewhere()


def api_before(version: str | None, major: int, minor: int) -> bool:
    """Whether a request's API version (`1.23`; None: the engine's current) is older than major.minor."""
    if version is None:
        return False
    got = tuple(int(part) for part in version.split("."))
    return got < (major, minor)


def first_value(query: str, name: str) -> str | None:
    """A query parameter as Go's `r.Form.Get` reads it: the first value, `+` as a space."""
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == name:
            return value
    return None


def with_value(query: str, name: str, value: str, add: bool = False) -> str:
    """The query with every value of `name` replaced by `value` (so none other can be read);
    `add`: and with `name=value` added where the query had none."""
    pairs = [(k, value if k == name else v) for k, v in parse_qsl(query, keep_blank_values=True)]
    if add and not any(k == name for k, _ in pairs):
        pairs.append((name, value))
    return urlencode(pairs)


def joined_containers(body: Mapping[str, Any]) -> list[str]:
    """Containers a canonical create body reaches into: `VolumesFrom` (their volumes, `:ro`
    or `:rw` after the name), `Links` (`name:alias`; the linked one's environment is copied
    in) and `container:NAME` network, PID and IPC namespaces."""
    host = body.get("HostConfig") or {}
    refs = []
    for entry in host.get("VolumesFrom") or []:
        if isinstance(entry, str) and entry:
            refs.append(entry.split(":", 1)[0])
    for entry in host.get("Links") or []:        # legacy links copy the other's environment in
        if isinstance(entry, str) and entry:
            refs.append(entry.split(":", 1)[0].lstrip("/"))
    for mode in JOINING_MODES:
        value = host.get(mode)
        if isinstance(value, str) and value.startswith("container:"):
            refs.append(value.split(":", 1)[1])
    return refs


def joined_by_id(body: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    """The create body with each container it joins named by the full id it was checked as
    (`:ro`, `:alias` kept), so that a rename meanwhile cannot point it at another container."""
    host = dict(body.get("HostConfig") or {})

    def by_id(entry: Any, strip: bool = False) -> Any:
        if not isinstance(entry, str) or not entry:
            return entry
        name, sep, tail = entry.partition(":")
        key = name.lstrip("/") if strip else name
        return ids.get(key, name) + sep + tail
    if host.get("VolumesFrom"):
        host["VolumesFrom"] = [by_id(e) for e in host["VolumesFrom"]]
    if host.get("Links"):
        host["Links"] = [by_id(e, strip=True) for e in host["Links"]]
    for mode in JOINING_MODES:
        value = host.get(mode)
        if isinstance(value, str) and value.startswith("container:"):
            host[mode] = "container:" + ids.get(value.split(":", 1)[1], value.split(":", 1)[1])
    return {**body, "HostConfig": host}


def plain_volume_names(body: Mapping[str, Any]) -> list[str]:
    """Named volumes of `-v name:/x` form: dockerd makes them, with no options, when missing."""
    host = body.get("HostConfig") or {}
    return [b.split(":", 1)[0] for b in host.get("Binds") or [] if isinstance(b, str) and b and not b.startswith("/")]


#: Network modes that name no user network.
BUILTIN_NETWORKS = ("", "default", "bridge", "host", "none")


def named_networks(body: Mapping[str, Any]) -> list[str]:
    """The user networks a canonical create body joins: `NetworkMode` (`--network NAME`) and the
    keys of `NetworkingConfig.EndpointsConfig` (Go matches that field's name in any case)."""
    host = body.get("HostConfig") or {}
    mode = str(host.get("NetworkMode") or "")
    names = [] if mode.lower() in BUILTIN_NETWORKS or mode.startswith("container:") else [mode]
    networking = body.get("NetworkingConfig")
    if isinstance(networking, Mapping):
        for key, value in networking.items():
            if str(key).lower() == "endpointsconfig" and isinstance(value, Mapping):
                names += [str(k) for k in value if str(k).lower() not in BUILTIN_NETWORKS]
    return names


def creatable_volume_names(body: Mapping[str, Any]) -> list[str]:
    """Named volumes the gateway may make, labelled as the caller's, before the create: `-v
    name:/x`, and `--mount type=volume,src=name` without driver options (with them, dockerd
    must make it, with those options)."""
    names = plain_volume_names(body)
    for m in _volume_mounts(body):
        options = m.get("VolumeOptions") if isinstance(m.get("VolumeOptions"), Mapping) else {}
        config = options.get("DriverConfig") if isinstance(options.get("DriverConfig"), Mapping) else {}
        if not config.get("Name") and not config.get("Options"):
            names.append(str(m["Source"]))
    return names


def named_volumes(body: Mapping[str, Any]) -> list[str]:
    """The named volumes a canonical create body mounts (`-v name:/x`, `--mount type=volume`)."""
    return plain_volume_names(body) + [str(m["Source"]) for m in _volume_mounts(body)]


def _volume_mounts(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The body's `--mount type=volume` entries that name their volume."""
    host = body.get("HostConfig") or {}
    return [m for m in host.get("Mounts") or []
            if isinstance(m, Mapping) and str(m.get("Type") or "") == "volume" and m.get("Source")]


def listed_owner(entry: Mapping[str, Any], admitted: Callable[[Mapping[str, str]], str | None],
                 inferred: Callable[[Mapping[str, Any]], str | None]) -> str | None:
    """The owner of one `docker ps` entry: the gateway's mark, else what the labels, names
    and mounts of the listing say (the owner rules over the inspect-shaped fields it has)."""
    labels = entry.get("Labels") if isinstance(entry.get("Labels"), dict) else {}
    owner = admitted(labels)
    if owner is not None:
        return owner
    names = entry.get("Names") if isinstance(entry.get("Names"), list) else []
    shaped = {"Config": {"Labels": labels}, "Name": names[0] if names and isinstance(names[0], str) else "",
              "Mounts": entry.get("Mounts") if isinstance(entry.get("Mounts"), list) else [],
              "HostConfig": {}}
    return inferred(shaped)


def own_entries(listing: Any, user: str, owner_of: Callable[[Mapping[str, Any]], str | None]) -> Any:
    """A `docker ps` answer with only `user`'s containers; anything that is not a list of
    objects is returned as it came (an error answer)."""
    if not isinstance(listing, list):
        return listing
    return [e for e in listing if isinstance(e, dict) and owner_of(e) == user]


def with_owner_filter(query: str, uid: int) -> str:
    """A prune's query narrowed to containers labelled as the caller's (`ds01.uid`): a prune
    then removes only what the gateway made for them.  ValueError for filters that are not
    JSON (dockerd refuses them too)."""
    raw = first_value(query, "filters")
    filters = json.loads(raw) if raw else {}
    if not isinstance(filters, dict):
        raise ValueError("filters must be a JSON object")
    labels = filters.get("label") or []
    own = f"ds01.uid={uid}"
    if isinstance(labels, dict):            # the older form: {"label": {"a=b": true}}
        labels = {**labels, own: True}
    elif isinstance(labels, list):
        labels = [*labels, own]
    else:
        raise ValueError("the label filter must be a list")
    return with_value(query, "filters", json.dumps({**filters, "label": labels}), add=True)


def compose_scoped(query: str) -> bool:
    """A listing filtered by a compose project label: compose asking for *its* project's
    containers, which another user's project of the same name (the same directory name)
    must not join."""
    filters = first_value(query, "filters") or ""
    return "com.docker.compose.project=" in filters
