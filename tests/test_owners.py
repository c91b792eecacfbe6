"""Owner, kind and GPU request of containers as real hosts create them."""

import pytest

from ds01d.rules.gpu_request import gpu_request
from ds01d.rules.owners import container_kind, resolve_owner, slice_owner, unescape_unit_part
from ds01d.rules.slice_names import systemd_escape, user_slice


def inspect(name="c", labels=None, cgroup_parent="", mounts=(), env=(), runtime="runc", device_requests=None,
            devices=None):
    return {"Id": "0" * 64, "Name": f"/{name}", "Config": {"Labels": labels or {}, "Env": list(env)},
            "HostConfig": {"CgroupParent": cgroup_parent, "Runtime": runtime,
                           "DeviceRequests": device_requests, "Devices": devices},
            "Mounts": [{"Type": t, "Source": s, "Destination": "/x"} for t, s in mounts]}


@pytest.mark.parametrize("data,owner,signal,kind", [
    (inspect(labels={"ds01.user": "alice"}), "alice", "label:ds01.user", "docker"),
    (inspect(labels={"aime.mlc.USER": "bob"}), "bob", "label:aime.mlc.USER", "docker"),
    (inspect(name="proj._.carol"), "carol", "name:aime", "docker"),
    (inspect(cgroup_parent=r"ds01-students-jean\x2dluc.slice"), "jean-luc", "cgroup-parent", "docker"),
    (inspect(labels={"devcontainer.local_folder": "/home/dave/src/app", "devcontainer.config_file": "x"}),
     "dave", "label:devcontainer.local_folder", "devcontainer"),
    (inspect(labels={"com.docker.compose.project": "p", "com.docker.compose.project.working_dir": "/home/erin/p"}),
     "erin", "label:compose.working_dir", "compose"),
    (inspect(mounts=[("bind", "/home/frank/data"), ("volume", "/var/lib/docker/volumes/x")]),
     "frank", "bind-mount", "docker"),
    (inspect(labels={"ds01.user": "gina", "ds01.container_type": "ds01"}), "gina", "label:ds01.user", "ds01"),
])
def test_each_signal(data, owner, signal, kind):
    o = resolve_owner(data)
    assert (o.owner, o.signal, o.kind, o.flags) == (owner, signal, kind, ())


def test_no_signal_is_unowned():
    o = resolve_owner(inspect(mounts=[("bind", "/srv/data"), ("bind", "/home")]))
    assert (o.owner, o.signal, o.flags) == (None, None, ("unowned",))


def test_strongest_signal_wins_and_disagreement_is_flagged():
    o = resolve_owner(inspect(labels={"ds01.user": "alice"}, cgroup_parent=user_slice("students", "bob"),
                              mounts=[("bind", "/home/alice/x")]))
    assert (o.owner, o.signal) == ("alice", "label:ds01.user")
    assert o.conflicting
    assert o.flags == ("conflicting owners: alice (label:ds01.user) vs bob",)


def test_agreeing_signals_are_not_a_conflict():
    o = resolve_owner(inspect(name="x._.alice", labels={"aime.mlc.USER": "alice"}))
    assert o.flags == () and not o.conflicting


def test_hostile_labels_are_flagged_not_trusted():
    o = resolve_owner(inspect(labels={"ds01.user": "x" * 10_000, "aime.mlc.USER": "bad\nname"},
                              mounts=[("bind", "/home/hank/x")]))
    assert (o.owner, o.signal) == ("hank", "bind-mount")
    assert len(o.flags) == 2 and all(f.startswith("ignored label:") for f in o.flags)


def test_unknown_users_are_flagged():
    o = resolve_owner(inspect(labels={"ds01.user": "ghost"}), known_user=lambda u: u != "ghost")
    assert o.flags == ("ghost is not a local user",)


@pytest.mark.parametrize("labels,kind", [
    ({}, "docker"), ({"devcontainer.metadata": "[]"}, "devcontainer"),
    ({"com.docker.compose.service": "web"}, "compose"),
    ({"ds01.container_type": "compose", "devcontainer.x": "1"}, "compose"),
])
def test_kinds(labels, kind):
    assert container_kind(labels) == (kind, ())


def test_unknown_declared_kind_is_flagged():
    assert container_kind({"ds01.container_type": "jupyter"}) == ("docker", ("unknown ds01.container_type 'jupyter'",))


@pytest.mark.parametrize("name", ["jean-luc.dupont@lab", "ünïcødé", "a\\b", "x-y-z"])
def test_slice_owner_round_trips(name):
    assert slice_owner(user_slice("phd-students", name)) == ("phd-students", name)
    assert unescape_unit_part(systemd_escape(name)) == name


@pytest.mark.parametrize("parent", ["", "system.slice", "ds01.slice", "ds01-students.slice", "/docker",
                                    "ds01-a-b-c.slice", "other-a-b.slice"])
def test_not_user_slices(parent):
    assert slice_owner(parent) is None


@pytest.mark.parametrize("data,expect", [
    (inspect(), (False, (), 0, None)),
    (inspect(device_requests=[{"Count": 0, "DeviceIDs": ["1"], "Capabilities": [["gpu"]]}]),
     (False, ("1",), 0, "DeviceRequests")),
    (inspect(device_requests=[{"Count": -1, "Capabilities": [["gpu"]]}]), (True, (), 0, "DeviceRequests")),
    (inspect(device_requests=[{"Count": 2, "Capabilities": [["gpu", "utility"]]}]), (False, (), 2, "DeviceRequests")),
    (inspect(device_requests=[{"Driver": "nvidia", "DeviceIDs": ["MIG-1234", "0:1"]}]),
     (False, ("MIG-1234", "0:1"), 0, "DeviceRequests")),
    (inspect(device_requests=[{"Count": 1, "Capabilities": [["tpu"]]}]), (False, (), 0, None)),
    (inspect(device_requests=[{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]), (True, (), 0, "CDI")),
    (inspect(device_requests=[{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=0", "nvidia.com/gpu=GPU-abc",
                                                              "vendor.com/fpga=1"]}]),
     (False, ("0", "GPU-abc"), 0, "CDI")),
    (inspect(device_requests=[{"Driver": "cdi", "DeviceIDs": ["vendor.com/fpga=1", 7]}]), (False, (), 0, None)),
    (inspect(runtime="nvidia", env=["NVIDIA_VISIBLE_DEVICES=0,GPU-abc"]),
     (False, ("0", "GPU-abc"), 0, "NVIDIA_VISIBLE_DEVICES")),
    (inspect(runtime="nvidia", env=["NVIDIA_VISIBLE_DEVICES=all"]), (True, (), 0, "NVIDIA_VISIBLE_DEVICES")),
    (inspect(runtime="nvidia", env=["NVIDIA_VISIBLE_DEVICES=void"]), (False, (), 0, None)),
    (inspect(runtime="runc", env=["NVIDIA_VISIBLE_DEVICES=all"]), (False, (), 0, None)),
    (inspect(devices=[{"PathOnHost": "/dev/nvidia3"}, {"PathOnHost": "/dev/nvidiactl"}]),
     (False, ("3",), 0, "/dev/nvidia")),
])
def test_gpu_requests(data, expect):
    r = gpu_request(data)
    assert (r.all_gpus, r.device_ids, r.count, r.source) == expect
    assert r.wants_gpu == (expect[3] is not None)


@pytest.mark.parametrize("claimed,why", [
    ("\u0430lice", "not a plausible user name"),          # Cyrillic a: looks like alice, is not
    ("alice\u200b", "not a plausible user name"),         # zero-width space
    ("ünïcødé", "not a plausible user name"),
    ("a" * 33, "not a plausible user name"),              # the escaped slice name must stay short
    ("-rf", "not a plausible user name"),
    ("root", "root is a system account"),
])
def test_owners_that_are_refused_are_flagged_and_leave_the_container_unowned(claimed, why):
    got = resolve_owner(inspect(labels={"ds01.user": claimed}))
    assert got.owner is None and "unowned" in got.flags
    assert any(why in flag for flag in got.flags), got.flags


def test_a_system_account_claim_falls_back_to_the_next_signal():
    data = inspect(labels={"ds01.user": "www-data"}, mounts=[("bind", "/home/alice/x")])
    got = resolve_owner(data, system_user=lambda user: user in ("root", "www-data"))
    assert (got.owner, got.signal) == ("alice", "bind-mount")
    assert "ignored label:ds01.user: www-data is a system account, which owns no containers" in got.flags


@pytest.mark.parametrize("name", ["alice", "jean-luc.dupont@lab", "a" * 32, "_svc", "Bob2"])
def test_login_and_directory_names_are_owners_and_fit_a_unit_name(name):
    assert resolve_owner(inspect(labels={"ds01.user": name})).owner == name
    assert len(user_slice("a-long-group-name", name)) < 255
