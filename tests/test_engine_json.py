"""Create bodies read the way dockerd (Go's encoding/json) reads them: the hostile cases first."""

from __future__ import annotations

import pytest

from ds01d.rules.engine_json import UnreadableBody, canonical, encode, fold


def test_case_and_go_folding_reach_the_same_field():
    body = canonical(b'{"hostconfig": {"cgroupparent": "evil.slice"}, "image": "x"}')
    assert body["HostConfig"]["CgroupParent"] == "evil.slice" and body["Image"] == "x"
    # U+017F (long s) folds to "s", U+212A (Kelvin) to "k": Go takes them for HostConfig / PidsLimit
    body = canonical('{"Ho\u017ftConfig": {"Privileged": true}}'.encode())
    assert body["HostConfig"]["Privileged"] is True
    assert fold("Kernel\u212aemory".replace("K", "\u212a", 1)) == "kernelkemory"


def test_a_later_duplicate_wins_whatever_its_case():
    body = canonical(b'{"HostConfig": {"CgroupParent": "ok.slice", "CGROUPPARENT": "evil.slice"}}')
    assert body["HostConfig"]["CgroupParent"] == "evil.slice"
    body = canonical(b'{"HostConfig": {"Privileged": true}, "hostConfig": {"Privileged": false}}')
    assert body["HostConfig"]["Privileged"] is False


def test_host_settings_at_the_top_level_are_the_host_config_when_there_is_none():
    body = canonical(b'{"Image": "x", "Privileged": true, "Binds": ["/:/host"]}')
    assert body["HostConfig"] == {"Privileged": True, "Binds": ["/:/host"]} and "Privileged" not in body
    with pytest.raises(UnreadableBody, match="both in HostConfig and at the top level"):
        canonical(b'{"HostConfig": {}, "privileged": true}')


def test_maps_keep_their_keys_and_struct_lists_are_canonical():
    body = canonical(b'{"Labels": {"ds01.user": "a", "DS01.USER": "b"}, "HostConfig": {"devicerequests": '
                     b'[{"driver": "nvidia", "deviceids": ["0"], "capabilities": [["gpu"]]}], '
                     b'"Devices": [{"pathonhost": "/dev/nvidia0"}]}}')
    assert body["Labels"] == {"ds01.user": "a", "DS01.USER": "b"}
    assert body["HostConfig"]["DeviceRequests"] == [{"Driver": "nvidia", "DeviceIDs": ["0"],
                                                     "Capabilities": [["gpu"]]}]
    assert body["HostConfig"]["Devices"] == [{"PathOnHost": "/dev/nvidia0"}]


def test_keys_the_engine_ignores_are_not_forwarded():
    body = canonical(b'{"Image": "x", "Whatever": 1, "HostConfig": {"NotAField": 2}}')
    assert body == {"Image": "x", "HostConfig": {}}


@pytest.mark.parametrize("data, said", [
    (b"[1, 2]", "must be an object"),
    (b'{"HostConfig": [1]}', "HostConfig must be an object"),
    (b'{"HostConfig": {"Memory": NaN}}', "NaN"),
    (b'{"Image": "\xff"}', "not UTF-8"),
    (b'{"Image": ', "not JSON"),
    (b"[" * 100000, "nested too deeply"),
    (b'{"Labels": ' + b"[" * 950 + b"]" * 950 + b"}", "nested too deeply"),
    (b'{"Labels": ' + b"[" * 64 + b"]" * 64 + b"}", "nested too deeply"),
])
def test_what_cannot_be_read_is_refused_in_one_sentence(data, said):
    with pytest.raises(UnreadableBody, match=said) as err:
        canonical(data)
    assert "\n" not in str(err.value)


def test_empty_and_round_trip():
    assert canonical(b"") == {"HostConfig": {}}
    assert canonical(b'{"HostConfig": null}') == {"HostConfig": {}}
    assert canonical(encode(canonical(b'{"image": "x", "Env": ["A=1"]}'))) == {"Image": "x", "Env": ["A=1"],
                                                                             "HostConfig": {}}
