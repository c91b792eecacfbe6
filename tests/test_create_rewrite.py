"""A non-admin's create body as the gateway forwards it: pure, hostile cases first."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01d.rules.create_rewrite import Admission, NotAllowed, gpus_wanted, requested_gpus, rewrite
from ds01d.rules.engine_json import UnreadableBody, canonical

ALICE = Admission("alice", 2001, "ds01-students-alice.slice", "docker", "mark", ())
ALICE_GPU = Admission("alice", 2001, "ds01-students-alice.slice", "docker", "mark", ("MIG-a",))


def forwarded(raw: dict, admission: Admission = ALICE) -> dict:
    body = canonical(json.dumps(raw).encode())
    return rewrite(body, admission)


def test_spoofed_owner_labels_and_someone_elses_slice_are_replaced():
    out = forwarded({"Image": "x", "Labels": {"ds01.user": "bob", "ds01.uid": "0", "ds01.admission": "forged",
                                              "ds01.container_type": "ds01", "keep": "me"},
                     "HostConfig": {"CgroupParent": "ds01-staff-bob.slice"}})
    assert out["HostConfig"]["CgroupParent"] == "ds01-students-alice.slice"
    assert out["Labels"] == {"keep": "me", "ds01.user": "alice", "ds01.uid": "2001", "ds01.container_type": "docker",
                             "ds01.admission": "mark"}


def test_a_cuda_image_without_gpus_sees_none():
    out = forwarded({"Image": "cuda", "Env": ["NVIDIA_VISIBLE_DEVICES=all", "A=1"]})
    assert out["Env"] == ["A=1", "NVIDIA_VISIBLE_DEVICES=void"]


@pytest.mark.parametrize("raw, wanted", [
    ({"HostConfig": {"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}}, 1),
    ({"HostConfig": {"DeviceRequests": [{"Count": 2, "Capabilities": [["gpu"]]}]}}, 2),
    ({"HostConfig": {"DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["0", "GPU-x"]}]}}, 2),
    ({"HostConfig": {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]}}, 1),
    ({"Env": ["NVIDIA_VISIBLE_DEVICES=0,1,2"]}, 3),
    ({"HostConfig": {"Runtime": "nvidia"}, "Env": ["NVIDIA_VISIBLE_DEVICES=all"]}, 1),
    ({"HostConfig": {"Runtime": "runc"}, "Env": ["NVIDIA_VISIBLE_DEVICES=all"]}, 0),
    ({"HostConfig": {"Devices": [{"PathOnHost": "/dev/nvidia3", "PathInContainer": "/dev/nvidia3"}]}}, 1),
    ({"Image": "x"}, 0),
])
def test_every_form_of_gpu_request_is_seen(raw, wanted):
    assert gpus_wanted(requested_gpus(canonical(json.dumps(raw).encode()))) == wanted


def test_any_gpu_form_becomes_exactly_the_allocated_units():
    out = forwarded({"Env": ["NVIDIA_VISIBLE_DEVICES=all"], "HostConfig": {
        "DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]},
                           {"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=0"]},
                           {"Driver": "other", "Capabilities": [["fpga"]]}],
        "Devices": [{"PathOnHost": "/dev/nvidia0"}, {"PathOnHost": "/dev/nvidia-caps/nvidia-cap1"},
                    {"PathOnHost": "/dev/./nvidiactl"}]}}, ALICE_GPU)
    assert out["HostConfig"]["DeviceRequests"] == [
        {"Driver": "other", "Capabilities": [["fpga"]]},
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["MIG-a"], "Capabilities": [["gpu"]]}]
    assert out["HostConfig"]["Devices"] == []
    assert out["Env"] == ["NVIDIA_VISIBLE_DEVICES=MIG-a"]


@pytest.mark.parametrize("host", [
    {"Devices": [{"PathOnHost": "/dev/fuse"}]},
    {"Devices": [{"PathOnHost": "/dev/char/195:0"}]},          # nvidia0 by its numbers
    {"Devices": [{"PathOnHost": "/dev/../dev/sda"}]},
    {"DeviceCgroupRules": ["c 195:* rwm"]},
])
def test_other_devices_and_cgroup_rules_need_an_admin(host):
    with pytest.raises(NotAllowed, match="allowed_devices"):
        rewrite({"HostConfig": host}, ALICE)


def test_a_driverless_request_the_nvidia_driver_matches_is_a_gpu_request():
    """dockerd sends `[["compute", "utility"]]` (and even `[[]]`) without a driver to nvidia."""
    for caps in ([["compute", "utility"]], [[]]):
        body = {"HostConfig": {"DeviceRequests": [{"Count": -1, "Capabilities": caps}]}}
        assert requested_gpus(body).all_gpus
        assert rewrite(body, ALICE_GPU)["HostConfig"]["DeviceRequests"] == [
            {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["MIG-a"], "Capabilities": [["gpu"]]}]
    assert not requested_gpus({"HostConfig": {"DeviceRequests": [{"Count": 1, "Capabilities": [["fpga"]]}]}}).wants_gpu


@pytest.mark.parametrize("raw", [
    {"Env": "NVIDIA_VISIBLE_DEVICES=all"},
    {"Env": [1]},
    {"HostConfig": {"DeviceRequests": {"Count": 1}}},
    {"HostConfig": {"DeviceRequests": [{"Count": "1"}]}},
    {"HostConfig": {"DeviceRequests": [{"Count": True}]}},
    {"HostConfig": {"DeviceRequests": [{"Capabilities": [1]}]}},
    {"HostConfig": {"DeviceRequests": [{"DeviceIDs": [0]}]}},
    {"HostConfig": {"Devices": [{"PathOnHost": 5}]}},
    {"Labels": ["ds01.user=bob"]},
    {"Labels": {"a": 1}},
])
def test_fields_of_the_wrong_type_are_refused_not_a_crash(raw):
    with pytest.raises(UnreadableBody, match="not what the engine takes"):
        requested_gpus(canonical(json.dumps(raw).encode()))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3), max_leaves=12)
FIELDS = st.sampled_from(["Env", "Labels", "HostConfig", "hostconfig", "DeviceRequests", "Devices", "Image"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(FIELDS, JSON | st.dictionaries(FIELDS, JSON, max_size=3), max_size=4))
def test_any_body_is_forwarded_with_alices_identity_or_refused(raw):
    try:
        body = canonical(json.dumps(raw).encode())
        requested_gpus(body)
        out = rewrite(body, ALICE)
    except (UnreadableBody, NotAllowed) as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert out["HostConfig"]["CgroupParent"] == ALICE.slice and out["Labels"]["ds01.user"] == "alice"
    assert canonical(json.dumps(out).encode())["Labels"]["ds01.user"] == "alice"
