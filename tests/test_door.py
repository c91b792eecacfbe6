"""The gateway's rules about containers, pure: how a request names a container (as dockerd
routes it), what a create body reaches into, whose a listed container is."""

import pytest

from ds01d.rules import door
from ds01d.rules.admission_mark import admitted_owner, sign
from ds01d.rules.owners import resolve_owner

KEY = b"k" * 32


@pytest.mark.parametrize("method,path,query,expected", [
    ("GET", "/containers/json", "", door.ListContainers()),
    ("POST", "/containers/create", "name=x", door.Create()),
    ("POST", "/containers/prune", "", door.Prune()),
    ("DELETE", "/containers/json", "", door.OnContainer("json", "")),       # a container named json
    ("POST", "/containers/create/start", "", door.OnContainer("create", "/start")),
    ("GET", "/containers/web/json", "", door.OnContainer("web", "/json")),
    ("PUT", "/containers/web/archive", "path=/tmp", door.OnContainer("web", "/archive")),
    ("POST", "/containers/web/attach/ws", "", door.OnContainer("web", "/attach/ws")),
    ("DELETE", "/containers/web", "force=1", door.OnContainer("web", "")),
    ("POST", "/exec/abc/start", "", door.OnExec("abc")),
    ("GET", "/exec/abc/json", "", door.OnExec("abc")),
    ("POST", "/commit", "container=web&repo=x", door.Commit("web")),
    ("POST", "/commit", "repo=x", door.Elsewhere()),
    ("POST", "/networks/n1/connect", "", door.NetworkConnect("n1")),
    ("POST", "/networks/x/y/connect", "", door.NetworkConnect("x/y")),          # dockerd's {id:.*}
    ("POST", "/networks/bridge/disconnect", "", door.NetworkConnect("bridge")),
    ("DELETE", "/networks/n1", "", door.OnNetwork("n1")),
    ("POST", "/networks/create", "", door.NetworkCreate()),
    ("POST", "/containers/F/v/kill", "", door.Unrouted(door.route("POST", "/containers/F/v/kill", "").why)),
    ("DELETE", "/containers/F/v", "", door.Unrouted(door.route("DELETE", "/containers/F/v", "").why)),
    ("POST", "/swarm/init", "", door.Unrouted("swarm change the whole engine; ask an admin")),
    ("GET", "/services", "", door.Elsewhere()),
    ("POST", "/volumes/prune", "", door.Unrouted(
        "pruning volumes removes other users' volumes; ask an admin")),
    ("GET", "/images/json", "", door.Elsewhere()),
    ("POST", "/build", "t=x", door.Build()),
    ("GET", "/containers/", "", door.Elsewhere()),
])
def test_requests_are_routed_as_dockerd_routes_them(method, path, query, expected):
    assert door.route(method, path, query) == expected


def test_query_values_are_read_and_replaced_as_go_reads_them():
    assert door.first_value("container=a&container=b", "container") == "a"      # r.Form.Get: the first
    assert door.first_value("container=my+box", "container") == "my box"
    replaced = door.with_value("container=a&repo=r&container=b", "container", "ID")
    assert replaced == "container=ID&repo=r&container=ID"
    assert door.with_value("t=x", "cgroupparent", "s.slice", add=True) == "t=x&cgroupparent=s.slice"
    assert door.with_value("cgroupparent=a&t=x", "cgroupparent", "s.slice", add=True) == "cgroupparent=s.slice&t=x"


def test_a_create_reaching_into_other_containers_names_them():
    body = {"HostConfig": {"VolumesFrom": ["data:ro", "other"], "NetworkMode": "container:net",
                           "PidMode": "container:pids", "IpcMode": "shareable", "Links": ["/db:/me/db", "cache"]}}
    assert door.joined_containers(body) == ["data", "other", "db", "cache", "net", "pids"]
    assert door.joined_containers({"HostConfig": {"NetworkMode": "bridge"}}) == []


def test_listing_owners_trust_only_a_verified_mark():
    def admitted(labels):
        found = admitted_owner(KEY, labels)
        return found[1] if found else None

    def inferred(shaped):
        return resolve_owner(shaped).owner
    marked = {"Labels": {"ds01.user": "alice", "ds01.uid": "2001", "ds01.admission": sign(KEY, 2001, "alice")}}
    forged = {"Labels": {"ds01.user": "alice", "ds01.uid": "2001", "ds01.admission": sign(b"x" * 32, 2001, "alice")},
              "Mounts": [{"Type": "bind", "Source": "/home/bob/data"}]}
    old = {"Labels": {}, "Names": ["/job._.carol"]}
    owners = [door.listed_owner(e, admitted, inferred) for e in (marked, forged, old, {"Labels": "junk"})]
    assert owners == ["alice", "alice", "carol", None]   # a forged mark falls back to the label, as before the gateway
    listing = [marked, old, "junk", {"Labels": None}]
    assert door.own_entries(listing, "alice", lambda e: door.listed_owner(e, admitted, inferred)) == [marked]
    assert door.own_entries({"message": "x"}, "alice", lambda e: None) == {"message": "x"}


def test_a_compose_listing_is_scoped_to_its_project():
    assert door.compose_scoped('filters={"label":["com.docker.compose.project=web"]}')
    assert not door.compose_scoped('filters={"label":["app=web"]}') and not door.compose_scoped("")


def test_a_verified_mark_decides_ownership_against_every_other_signal():
    labels = {"ds01.user": "alice", "ds01.uid": "2001", "ds01.admission": sign(KEY, 2001, "alice"),
              "ds01.container_type": "compose", "aime.mlc.USER": "bob"}
    inspect = {"Config": {"Labels": labels}, "HostConfig": {"CgroupParent": "ds01-x-bob.slice"}}
    got = resolve_owner(inspect, admitted=lambda l: (admitted_owner(KEY, l) or (0, None))[1])
    assert (got.owner, got.signal, got.kind, got.flags) == ("alice", "gateway", "compose", ())
    for uid in ("2002", "02001", "-1", "2001 ", "", "9" * 11, None):
        bad = {**labels, "ds01.uid": uid} if uid is not None else {k: v for k, v in labels.items() if k != "ds01.uid"}
        assert admitted_owner(KEY, bad) is None, uid


def test_old_api_versions_are_compared_as_numbers():
    assert door.api_before("1.23", 1, 24) and door.api_before("1.9", 1, 24)
    assert not door.api_before("1.24", 1, 24) and not door.api_before("1.41", 1, 24)
    assert not door.api_before(None, 1, 24)


def test_link_names_are_not_routed():
    assert "legacy links" in door.route("GET", "/containers/F/v/json", "").why


def test_a_prune_is_narrowed_to_the_callers_own():
    import json
    from urllib.parse import parse_qsl
    for query, labels in (("", ["ds01.uid=7"]), ('filters={"label":["a=b"]}', ["a=b", "ds01.uid=7"]),
                          ('filters={"label":{"a=b":true},"until":["1h"]}', {"a=b": True, "ds01.uid=7": True})):
        got = json.loads(dict(parse_qsl(door.with_owner_filter(query, 7)))["filters"])
        assert got["label"] == labels
    with pytest.raises(ValueError):
        door.with_owner_filter("filters=[1]", 7)


def test_joined_containers_are_named_by_the_id_they_were_checked_as():
    body = {"Image": "x", "HostConfig": {"VolumesFrom": ["data:ro"], "Links": ["/db:alias"],
                                         "NetworkMode": "container:net", "PidMode": "host"}}
    out = door.joined_by_id(body, {"data": "ID1", "db": "ID2", "net": "ID3"})
    assert out["HostConfig"] == {"VolumesFrom": ["ID1:ro"], "Links": ["ID2:alias"], "NetworkMode": "container:ID3",
                                 "PidMode": "host"}
    assert body["HostConfig"]["VolumesFrom"] == ["data:ro"]          # the input is not changed


def test_named_volumes_of_a_create():
    body = {"HostConfig": {"Binds": ["cache:/c", "/home/a:/h", "data:/d:ro"],
                           "Mounts": [{"Type": "volume", "Source": "opt", "Target": "/o"},
                                      {"Type": "volume", "Target": "/anon"}, {"Type": "bind", "Source": "/x"}]}}
    assert door.named_volumes(body) == ["cache", "data", "opt"]
    assert door.plain_volume_names(body) == ["cache", "data"]
    assert door.route("DELETE", "/volumes/v1", "") == door.OnVolume("v1")
    assert door.route("POST", "/volumes/create", "") == door.VolumeCreate()


def test_the_networks_a_create_joins():
    body = {"HostConfig": {"NetworkMode": "bobproj_default"},
            "NetworkingConfig": {"endpointsconfig": {"bobproj_default": {}, "other": {"Aliases": ["db"]}, "bridge": {}}}}
    assert door.named_networks(body) == ["bobproj_default", "bobproj_default", "other"]
    assert door.named_networks({"HostConfig": {"NetworkMode": "container:abc"}}) == []
    assert door.named_networks({"HostConfig": {"NetworkMode": "Host"}}) == []
