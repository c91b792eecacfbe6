"""ds01d's policy at the door: what the gateway does with each caller's request.

Root and members of `daemon.admin_group` pass untouched.  For everyone else:
- a create is read as the engine reads it (`engine_json`), admitted by ds01d (the
  caller's slice made with its limits, max_containers), given devices by ds01d's
  allocator (waiting in its queue, like `ds01d allocate`), and rewritten (`create_rewrite`)
  to run in the caller's slice, labelled with the caller as owner, on exactly those devices;
- a request on a container (by name, id, exec id, `/commit`, a network connect, a create
  that joins another container's volumes or namespaces) goes through only when the
  container is the caller's; it is then sent on by the container's full id, so no rename
  or new container between the check and the engine can change what it reaches;
- `docker ps` shows other users' containers only where `daemon.show_other_users` says so
  (a compose project's listing shows only the caller's own, whatever it says).

Decisions about containers are taken here, from the engine and ds01d's admission key,
so they keep working while ds01d restarts; only creates need ds01d and wait for it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote

from ds01d.gateway.daemon_client import DaemonClient, DaemonDown
from ds01d.gateway.policy_settings import Settings
from ds01d.gateway.policy_api import Forward, Peer, Refuse, RequestHead, Verdict
from ds01d.gateway.unix_http import Unreachable, call
from ds01d.host.unix_groups import is_admin, is_system_user
from ds01d.rules import door
from ds01d.rules.create_rewrite import Admission, NotAllowed, allowed_devices, gpus_wanted, requested_gpus, rewrite
from ds01d.rules.host_access import Denied, check_binds_at_start, has_host_binds, judge_create, judge_exec, \
    judge_network, judge_update, judge_volume, restart_with_volume_binds, restarts, volume_binds
from ds01d.rules.engine_json import EXEC_CONFIG, NETWORK_CONNECT, NETWORK_CREATE, UPDATE_CONFIG, VOLUME_CREATE, \
    UnreadableBody, canonical, canonical_fields, encode
from ds01d.rules.owners import container_kind, resolve_owner
from ds01d.gateway.replies import engine_down

#: What a refused create is counted under, from ds01d's answer (its metrics' `reason`).
ADMIT_REFUSALS = {409: "max_containers", 403: "account", 503: "slice_unavailable"}
ALLOCATE_REFUSALS = {409: "gpu_refused", 408: "gpu_wait_timeout", 429: "gpu_queue_full", 403: "gpu_refused"}
RESTARTING = ("ds01d is restarting or not running, so new containers cannot be admitted just now; "
              "try again in a minute, and tell an admin if it lasts")


class EngineSaid(Exception):
    """The engine refused a lookup the gateway made (an ambiguous id prefix): passed on as it said."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Caller:
    user: str
    uid: int
    admin: bool


class Ds01Policy:
    """The `Policy` of ds01-gateway.service (see the module's docstring)."""

    def __init__(self, config_path: str, engine_path: str):
        self.settings = Settings(config_path)
        self.settings.refresh()
        self.engine_path = engine_path

    @property
    def daemon(self) -> DaemonClient:
        return DaemonClient(self.settings.daemon.socket_path)

    def wants_body(self, peer: Peer, head: RequestHead) -> bool:
        route = door.route(head.method, head.path, head.query)
        return isinstance(route, (door.Create, door.NetworkConnect, door.NetworkCreate, door.VolumeCreate)) or \
            (isinstance(route, door.OnContainer) and head.method == "POST" and route.rest in ("/exec", "/update"))

    async def judge(self, peer: Peer, head: RequestHead, body: bytes | None) -> Verdict:
        self.settings.refresh()
        name, admin = is_admin(peer.uid, self.settings.daemon.admin_group)
        if admin:
            return Forward()
        caller = Caller(name, peer.uid, False)
        if ";" in head.query:   # Go before 1.17 split queries at ';' too: never let two readers disagree
            return Refuse(400, "a ';' in the query is ambiguous; separate parameters with '&'")
        if _form_body(head):
            return Refuse(400, "form bodies are not accepted through the gateway (dockerd would read parameters "
                               "from them before the query's); send parameters in the query")
        route = door.route(head.method, head.path, head.query)
        verdict = await self._judged(caller, head, route, body or b"")
        if isinstance(route, door.Create) and isinstance(verdict, Refuse):
            self.daemon.count_refusal(refusal_reason(verdict))
        return verdict

    async def _judged(self, caller: Caller, head: RequestHead, route: door.Route, body: bytes) -> Verdict:
        try:
            return await self._judge(caller, head, route, body)
        except Unreachable as exc:
            return Refuse(503, engine_down(str(exc)), "docker_unreachable")
        except EngineSaid as exc:
            return Refuse(exc.status, exc.message, "engine_refused")
        except Denied as exc:
            return Refuse(403, str(exc), exc.rule)
        except UnreadableBody as exc:
            return Refuse(400, f"the gateway cannot read this request: {exc}", "unreadable")

    async def _judge(self, caller: Caller, head: RequestHead, route: door.Route, body: bytes) -> Verdict:
        if isinstance(route, door.Create):
            return await self.create(caller, body)
        if isinstance(route, door.OnContainer):
            return await self.on_container(caller, head, route, body)
        if isinstance(route, door.VolumeCreate):
            return self.volume_create(caller, body)
        if isinstance(route, door.OnVolume):
            return await self.own_volume(caller, route.name, removing=True) or Forward()
        if isinstance(route, door.OnExec):
            return await self.on_exec(caller, route.exec_id)
        if isinstance(route, door.Commit):
            found = await self.own(caller, route.ref)
            if isinstance(found, Refuse):
                return found
            return Forward(target=_target(head, head.path, door.with_value(head.query, "container", found)))
        if isinstance(route, door.Prune):
            try:
                return Forward(target=_target(head, head.path, door.with_owner_filter(head.query, caller.uid)))
            except ValueError as exc:
                return Refuse(400, f"invalid filters: {exc}")
        if isinstance(route, door.Unrouted):
            return Refuse(403, route.why)
        if isinstance(route, door.ListContainers):
            return self.listing(caller, head)
        if isinstance(route, door.Build):
            return await self.build(caller, head)
        if isinstance(route, door.NetworkConnect):
            return await self.own_network(caller, route.network) or await self.network_connect(caller, body)
        if isinstance(route, door.NetworkCreate):
            return self.network_create(caller, body)
        if isinstance(route, door.OnNetwork):
            return await self.own_network(caller, route.network, removing=True) or Forward()
        return Forward()

    # ---- containers that exist ---------------------------------------------------------

    async def inspect(self, what: str, ref: str) -> Any | None:
        """The engine's inspect of a container or exec, or None where it has none by that name;
        the engine's own refusal (an ambiguous id prefix) is raised as EngineSaid."""
        if not ref:
            return None   # `container:` with no name: dockerd's router would redirect `/containers//json`
        answer = await call(self.engine_path, "GET", f"/{what}/{quote(ref, safe='')}/json", timeout=30)
        if answer.status == 404:
            return None
        if 400 <= answer.status < 500 and isinstance(answer.doc, dict) and isinstance(answer.doc.get("message"), str):
            raise EngineSaid(answer.status, answer.doc["message"])
        if answer.status != 200 or not isinstance(answer.doc, dict):
            raise Unreachable(f"inspecting {ref[:64]!r} answered {answer.status}")
        return answer.doc

    def owner(self, inspect: Mapping[str, Any]) -> str | None:
        labels = (inspect.get("Config") or {}).get("Labels") or {}
        return self.settings.admitted(labels) or resolve_owner(inspect, system_user=is_system_user).owner

    async def own(self, caller: Caller, ref: str) -> str | Refuse:
        """The full id of the caller's container `ref`, or the refusal (see `owned`)."""
        inspect = await self.owned(caller, ref)
        return inspect if isinstance(inspect, Refuse) else str(inspect["Id"])

    async def owned(self, caller: Caller, ref: str, readable: bool = False) -> Mapping[str, Any] | Refuse:
        """The engine's inspect of the caller's container `ref`, or the refusal (404 like dockerd's
        where other users' containers are not to be seen, else 403 that says whose it is).
        `readable`: another user's container passes where other users are shown (stats)."""
        inspect = await self.inspect("containers", ref)
        if inspect is None:
            return Refuse(404, f"No such container: {ref}")
        owner = self.owner(inspect)
        if owner == caller.user:
            return inspect
        if not self.settings.daemon.show_other_users:
            return Refuse(404, f"No such container: {ref}")
        if readable:
            return inspect
        name = (inspect.get("Name") or "").lstrip("/") or ref
        whose = f"it is {owner}'s" if owner else "ds01d knows no owner of it"
        return Refuse(403, f"{name} is not your container ({whose}); only its owner and admins may use it")

    async def on_container(self, caller: Caller, head: RequestHead, route: door.OnContainer, body: bytes) -> Verdict:
        if route.rest == "/start" and door.api_before(head.api_version, 1, 24) and _has_body(head):
            return Refuse(400, "host settings at start (API versions before 1.24) do not pass the gateway; "
                               "give them when creating the container")
        readable = head.method == "GET" and route.rest == "/stats"   # numbers only: what docker stats shows
        inspect = await self.owned(caller, route.ref, readable)
        if isinstance(inspect, Refuse):
            return inspect
        verdict = Forward(target=_target(head, f"/containers/{inspect['Id']}{route.rest}", head.query))
        if route.rest in ("/archive", "/copy"):    # docker cp mounts the container's binds again too
            await self.binds_again(caller, inspect)
        if head.method != "POST":
            return verdict
        if route.rest in ("/start", "/restart"):   # dockerd resolves bind sources again at every start
            await self.binds_again(caller, inspect)
        elif route.rest in ("/exec", "/update"):   # forwarded as read: what was judged is what runs
            fields = canonical_fields(body, EXEC_CONFIG if route.rest == "/exec" else UPDATE_CONFIG)
            if route.rest == "/exec":
                judge_exec(fields, self.settings.access(caller.user, caller.uid))
            else:
                judge_update(fields, bool(fields.get("RestartPolicy")) and await self.mounts_binds(inspect))
            return dataclasses.replace(verdict, body=encode(fields))
        return verdict

    async def binds_again(self, caller: Caller, inspect: Mapping[str, Any]) -> None:
        """The container's binds, and the folders its local volumes bind, where they lead now
        (a directory swapped for a symlink since the create must not get through)."""
        access = self.settings.access(caller.user, caller.uid)
        host = inspect.get("HostConfig") or {}
        mounts = inspect.get("Mounts") or []
        check_binds_at_start(host.get("Binds") or [], mounts, access, real_path)
        for doc in await self.volume_docs(_volume_names(inspect)):
            judge_volume({"Driver": doc.get("Driver"), "DriverOpts": doc.get("Options") or {}}, access, real_path)

    async def mounts_binds(self, inspect: Mapping[str, Any]) -> bool:
        """Whether a container mounts host folders, however they came (its own binds, a
        `--volumes-from` container's, local volumes that bind): its inspect's `Mounts` say all."""
        mounts = inspect.get("Mounts") or []
        if has_host_binds(inspect.get("HostConfig") or {}) or \
                any(isinstance(m, dict) and m.get("Type") == "bind" for m in mounts):
            return True
        return any(map(volume_binds, await self.volume_options(_volume_names(inspect))))

    async def volume_docs(self, names: Any) -> list[Mapping[str, Any]]:
        """The engine's inspect of each named volume that exists."""
        found = []
        for name in names:
            answer = await call(self.engine_path, "GET", f"/volumes/{quote(name, safe='')}", timeout=30)
            if answer.status == 200 and isinstance(answer.doc, dict):
                found.append(answer.doc)
        return found

    async def volume_options(self, names: Any) -> list[Mapping[str, Any]]:
        """The local driver options of the named volumes that exist (a bind's folder, or none)."""
        return [doc["Options"] for doc in await self.volume_docs(names) if isinstance(doc.get("Options"), dict)]

    def volume_create(self, caller: Caller, body: bytes) -> Verdict:
        """An allowed volume, labelled as the caller's (whatever `ds01.` labels it brought)."""
        fields = judge_volume(canonical_fields(body, VOLUME_CREATE), self.settings.access(caller.user, caller.uid),
                              real_path)
        return Forward(body=encode({**fields, "Labels": _owner_labels(fields.get("Labels"), caller)}))

    async def own_volume(self, caller: Caller, name: str, create: bool = False, removing: bool = False
                         ) -> Refuse | None:
        """None where the caller may use or remove the volume `name`: theirs, not there yet
        (`create`: made now, labelled as theirs), or unlabelled (see `unlabelled_volume`)."""
        answer = await call(self.engine_path, "GET", f"/volumes/{quote(name, safe='')}", timeout=30)
        if answer.status == 404 and create:
            # dockerd would make it unlabelled, for anyone to mount: made here as the caller's
            await call(self.engine_path, "POST", "/volumes/create", timeout=30,
                       body={"Name": name, "Labels": _owner_labels({}, caller)})
            return None
        if answer.status != 200 or not isinstance(answer.doc, dict):
            return None
        labels = answer.doc.get("Labels") if isinstance(answer.doc.get("Labels"), dict) else {}
        uid = labels.get("ds01.uid")
        if uid == str(caller.uid):
            return None
        if uid is None:
            return await self.unlabelled_volume(caller, name, removing)
        if not self.settings.daemon.show_other_users:
            return Refuse(404, f"get {name}: no such volume")
        return Refuse(403, f"the volume {name} is {labels.get('ds01.user') or 'another user'}'s; only its owner "
                           "and admins may use it")

    async def unlabelled_volume(self, caller: Caller, name: str, removing: bool) -> Refuse | None:
        """A volume without an owner's label (made before the gateway, by an admin, or by dockerd
        itself: anonymous ones) is shared for mounting, but not one another user's container
        mounts (their anonymous volume, their data), and only admins remove it."""
        if removing:
            return Refuse(403, f"the volume {name} has no owner; only admins may remove it")
        filters = json.dumps({"volume": [name]})
        answer = await call(self.engine_path, "GET", f"/containers/json?all=1&filters={quote(filters, safe='')}",
                            timeout=30)
        if answer.status != 200 or not isinstance(answer.doc, list):
            raise Unreachable(f"listing the users of volume {name[:64]!r} answered {answer.status}")
        others = {door.listed_owner(entry, self.settings.admitted,
                                    lambda e: resolve_owner(e, system_user=is_system_user).owner)
                  for entry in answer.doc if isinstance(entry, dict)} - {caller.user}
        if others:
            return Refuse(403 if self.settings.daemon.show_other_users else 404,
                          f"the volume {name} is used by another user's container" if
                          self.settings.daemon.show_other_users else f"get {name}: no such volume")
        return None

    def network_create(self, caller: Caller, body: bytes) -> Verdict:
        """An allowed network, labelled as the caller's (whatever `ds01.` labels it brought)."""
        fields = canonical_fields(body, NETWORK_CREATE)
        judge_network(fields, self.settings.access(caller.user, caller.uid))
        return Forward(body=encode({**fields, "Labels": _owner_labels(fields.get("Labels"), caller)}))

    async def own_network(self, caller: Caller, ref: str, removing: bool = False) -> Refuse | None:
        """None where the caller may join (or remove) the network `ref`: theirs, or one without an
        owner's label (Docker's own, an admin's, made before the gateway) to join; only admins
        remove those.  Another user's network is theirs: joining it reaches their services."""
        answer = await call(self.engine_path, "GET", f"/networks/{quote(ref, safe='')}", timeout=30)
        if answer.status in (400, 404):
            return None                       # not there (or ambiguous): dockerd says so itself
        if answer.status != 200 or not isinstance(answer.doc, dict):
            raise Unreachable(f"inspecting network {ref[:64]!r} answered {answer.status}")
        labels = answer.doc.get("Labels") if isinstance(answer.doc.get("Labels"), dict) else {}
        uid = labels.get("ds01.uid")
        if uid == str(caller.uid):
            return None
        if uid is None:
            return Refuse(403, f"the network {ref} has no owner; only admins may remove it", "not_owner") \
                if removing else None
        if not self.settings.daemon.show_other_users:
            return Refuse(404, f"network {ref} not found", "not_owner")
        return Refuse(403, f"the network {ref} is {labels.get('ds01.user') or 'another user'}'s; only its owner "
                           "and admins may use it", "not_owner")

    async def on_exec(self, caller: Caller, exec_id: str) -> Verdict:
        inspect = await self.inspect("exec", exec_id)
        if inspect is None or not isinstance(inspect.get("ContainerID"), str):
            return Refuse(404, f"No such exec instance: {exec_id}")
        found = await self.own(caller, inspect["ContainerID"])
        if isinstance(found, Refuse):
            return Refuse(found.status, found.message if found.status == 403 else f"No such exec instance: {exec_id}")
        return Forward()

    async def network_connect(self, caller: Caller, body: bytes) -> Verdict:
        """Connect or disconnect: only the caller's own container, sent on by its id."""
        try:
            fields = canonical_fields(body, NETWORK_CONNECT)
        except UnreadableBody as exc:
            return Refuse(400, f"the gateway cannot read this request: {exc}")
        if not isinstance(fields.get("Container"), str):
            return Forward(body=encode(fields))
        found = await self.own(caller, fields["Container"])
        if isinstance(found, Refuse):
            return found
        return Forward(body=encode({**fields, "Container": found}))

    def listing(self, caller: Caller, head: RequestHead) -> Verdict:
        if self.settings.daemon.show_other_users and not door.compose_scoped(head.query):
            return Forward()

        def inferred(shaped: Mapping[str, Any]) -> str | None:
            return resolve_owner(shaped, system_user=is_system_user).owner

        def owner_of(entry: Mapping[str, Any]) -> str | None:
            return door.listed_owner(entry, self.settings.admitted, inferred)

        def only_own(status: int, data: bytes) -> bytes:
            if status != 200:
                return data
            try:
                listing = json.loads(data)
            except ValueError:
                return b"[]\n"   # what cannot be read cannot be shown
            return (json.dumps(door.own_entries(listing, caller.user, owner_of)) + "\n").encode()

        return Forward(filter_response=only_own)

    # ---- creates -------------------------------------------------------------------------

    async def build(self, caller: Caller, head: RequestHead) -> Verdict:
        """A build's RUN containers go to the caller's slice too (the classic builder places
        them by `cgroupparent`; a build is no way around the slice's limits).  Its parameters
        are read from the query only (`judge` refuses form bodies, which could override them)."""
        network = door.first_value(head.query, "networkmode") or ""
        if network.startswith("container:"):
            return Refuse(403, "a build may not join a container's network (--network container:...)")
        if network.lower() == "host" and not self.settings.access(caller.user, caller.uid).allow_host_network:
            raise Denied("allow_host_network", "a build with --network host is not allowed here")
        admitted = await self.admit(caller, build=True)
        if isinstance(admitted, Refuse):
            return admitted
        if admitted.get("admin"):
            return Forward()
        return Forward(target=_target(head, head.path, door.with_value(head.query, "cgroupparent",
                                                                       admitted["slice"], add=True)))

    async def admit(self, caller: Caller, build: bool = False) -> Mapping[str, Any] | Refuse:
        """ds01d's admission of the caller (their slice made first), or the refusal to pass on."""
        try:
            answer = await self.daemon.ask("admit", {"uid": caller.uid, **({"build": True} if build else {})})
        except DaemonDown:
            return Refuse(503, RESTARTING, "ds01d_unavailable")
        if answer.status != 200 or not isinstance(answer.doc, dict):
            return Refuse(answer.status if answer.status >= 400 else 502, _error(answer.doc),
                          ADMIT_REFUSALS.get(answer.status, "admission"))
        return answer.doc

    async def create(self, caller: Caller, raw: bytes) -> Verdict:
        access = self.settings.access(caller.user, caller.uid)   # (reads the user database: once)
        try:
            body = canonical(raw)
            gpus = requested_gpus(body)
            allowed_devices(body["HostConfig"], access.allowed_devices)
        except UnreadableBody as exc:
            return Refuse(400, f"the gateway cannot read this container's configuration: {exc}", "unreadable")
        except NotAllowed as exc:
            return Refuse(403, str(exc), "allowed_devices")
        ids: dict[str, str] = {}
        joined: list[Mapping[str, Any]] = []      # a --volumes-from source's mounts are made again at every start
        for ref in door.joined_containers(body):
            found = await self.owned(caller, ref)
            if isinstance(found, Refuse):
                return found
            ids[ref] = str(found["Id"])
            joined.append(found)
        body = door.joined_by_id(body, ids)   # no rename while this create waits can change what it joins
        body = judge_create(body, access, real_path)
        for name in door.named_volumes(body):
            refused = await self.own_volume(caller, name, create=name in door.creatable_volume_names(body))
            if refused is not None:
                return refused
        for network in door.named_networks(body):
            refused = await self.own_network(caller, network)
            if refused is not None:
                return refused
        await self.restart_checked(body, joined)
        admitted = await self.admit(caller)
        if isinstance(admitted, Refuse):
            return admitted
        if admitted.get("admin"):
            return Forward()
        return await self.allocated_create(caller, body, admitted, gpus, access.allowed_devices, joined)

    async def restart_checked(self, body: Mapping[str, Any], joined: list[Mapping[str, Any]]) -> None:
        """Denied where a create with a restart policy mounts host folders by any way: its named
        volumes that bind, or a --volumes-from container that does (binds or such volumes)."""
        host = body.get("HostConfig") or {}
        if not restarts(host.get("RestartPolicy")):
            return
        binds = False
        for found in joined:
            binds = binds or await self.mounts_binds(found)
        restart_with_volume_binds(host, await self.volume_options(door.named_volumes(body)), binds)

    async def allocated_create(self, caller: Caller, body: dict[str, Any], admitted: Mapping[str, Any],
                               gpus: Any, devices: tuple[str, ...], joined: list[Mapping[str, Any]]) -> Verdict:
        wanted = gpus_wanted(gpus)
        grant: Mapping[str, Any] = {}
        if wanted:
            try:
                answer = await self.daemon.allocate(admitted["user"], wanted, tuple(gpus.device_ids),
                                                    self.settings.allocation_wait)
            except DaemonDown:
                return Refuse(503, RESTARTING, "ds01d_unavailable")
            if answer.status != 200 or not isinstance(answer.doc, dict):
                return Refuse(answer.status if answer.status >= 400 else 502, _error(answer.doc),
                              ALLOCATE_REFUSALS.get(answer.status, "gpu_allocation"))
            grant = answer.doc
        labels = {k: v for k, v in (body.get("Labels") or {}).items() if not k.startswith("ds01.")}
        kind = "ds01" if grant.get("reused") and (body.get("Labels") or {}).get("ds01.container_type") == "ds01" \
            else container_kind(labels)[0]
        admission = Admission(admitted["user"], caller.uid, admitted["slice"], kind, admitted["mark"],
                              tuple(u["uuid"] for u in grant.get("units") or ()), devices)
        try:
            await self.restart_checked(body, joined)   # again: a volume may have been made anew while it waited
            new_body = encode(rewrite(body, admission))
        except (Denied, NotAllowed, Unreachable) as exc:
            if grant and not grant.get("reused"):      # the grant goes back whatever refused the create
                await self.daemon.free(int(grant["id"]))
            if isinstance(exc, Unreachable):
                return Refuse(503, engine_down(str(exc)), "docker_unreachable")
            return Refuse(403, str(exc), exc.rule if isinstance(exc, Denied) else "allowed_devices")
        if not grant or grant.get("reused"):
            return Forward(body=new_body)
        return Forward(body=new_body, answered=self._free_unless_created(int(grant["id"])))

    def _free_unless_created(self, allocation_id: int) -> Any:
        async def answered(status: int) -> None:
            if status != 201:
                await self.daemon.free(allocation_id)
        return answered


def real_path(path: str) -> str:
    """Where a path leads on the host, every symlink followed; OSError where a component is
    missing or cannot be read (the non-strict realpath would take it for a plain directory
    and miss a symlink inside it)."""
    return os.path.realpath(path, strict=True)


def _owner_labels(labels: Any, caller: Caller) -> dict[str, str]:
    """A volume's or network's labels as the gateway forwards them: the caller as its owner,
    whatever `ds01.` labels the request brought."""
    kept = {k: v for k, v in labels.items() if not str(k).startswith("ds01.")} if isinstance(labels, dict) else {}
    return {**kept, "ds01.uid": str(caller.uid), "ds01.user": caller.user}


def _volume_names(inspect: Mapping[str, Any]) -> list[str]:
    """The named volumes an inspected container mounts."""
    return [str(m["Name"]) for m in inspect.get("Mounts") or []
            if isinstance(m, dict) and m.get("Type") == "volume" and m.get("Name")]


def refusal_reason(verdict: Refuse) -> str:
    """The reason a refused create is counted under: the one it was given, else "not_owner"
    for a 403/404 about another user's container or volume it named."""
    return verdict.reason or ("not_owner" if verdict.status in (403, 404) else "other")


def _form_body(head: RequestHead) -> bool:
    """Whether Go's ParseForm could read parameters from the body (a form content type), or
    the request is ambiguous about it (more than one Content-Type: Go reads the first)."""
    types = [value.split(";")[0].strip().lower() for name, value in head.headers if name == "content-type"]
    return len(types) > 1 or any(t in ("application/x-www-form-urlencoded", "multipart/form-data") for t in types)


def _has_body(head: RequestHead) -> bool:
    """Whether dockerd reads a start body as host settings: chunked, or more than 7 bytes
    (smaller ones, like the `{}` old clients send, it ignores)."""
    for name, value in head.headers:
        if name == "transfer-encoding":
            return True
        if name == "content-length" and not (value.strip().isdigit() and int(value) <= 7):
            return True
    return False


def _error(doc: Any) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"]
    return "ds01d gave no reason; tell an admin"


def _target(head: RequestHead, path: str, query: str) -> str:
    """A request target for the engine: the caller's API version, `path` (quoted), `query`."""
    prefix = f"/v{head.api_version}" if head.api_version else ""
    return prefix + quote(path, safe="/:@!$&'()*+,;=-._~") + (f"?{query}" if query else "")
