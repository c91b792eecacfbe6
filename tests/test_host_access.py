"""The rules that keep a non-admin's container off the host, pure: each refusal names its
rule; binds are judged where their symlinks lead and forwarded as the path checked."""

from __future__ import annotations

import posixpath

import pytest

from ds01d.rules.engine_json import UnreadableBody, canonical, canonical_fields, NETWORK_CREATE
from ds01d.rules.host_access import Access, Denied, check_binds_at_start, judge_create, judge_exec, judge_network, \
    judge_update, judge_volume, restart_with_volume_binds

HOME = "/home/alice"
LINKS = {"/home/alice/etc-link": "/etc", "/home/alice/up": "/home", "/srv/data": "/mnt/data",
         "/home/alice/bobs": "/home/bob/project"}


def resolve(path: str) -> str:
    """realpath over a made-up tree: LINKS are the symlinks in it."""
    out = "/"
    for part in posixpath.normpath(path).split("/")[1:]:
        out = posixpath.join(out, part)
        while out in LINKS:
            out = LINKS[out]
    return posixpath.normpath(out)


ALICE = Access(home=HOME, bind_roots=("~", "/srv/data:ro"))


def create(**host):
    return {"Image": "x", "HostConfig": host}


@pytest.mark.parametrize("host,rule", [
    ({"Privileged": True}, "allow_privileged"),
    ({"PidMode": "host"}, "allow_host_namespaces"),
    ({"IpcMode": "host"}, "allow_host_namespaces"),
    ({"UTSMode": "HOST"}, "allow_host_namespaces"),
    ({"UsernsMode": "host"}, "allow_host_namespaces"),
    ({"CgroupnsMode": "host"}, "allow_host_namespaces"),
    ({"NetworkMode": "host"}, "allow_host_network"),
    ({"Binds": ["/:/host"]}, "bind_roots"),
    ({"Binds": ["/etc:/e:ro"]}, "bind_roots"),
    ({"Binds": ["/home/alice/../../etc:/e"]}, "bind_roots"),
    ({"Binds": ["/home/alice/etc-link:/e"]}, "bind_roots"),
    ({"Binds": ["/home/alice/up/bob:/b"]}, "bind_roots"),
    ({"Binds": ["/home/alice/bobs:/b"]}, "bind_roots"),
    ({"Binds": ["/var/lib/docker:/d"]}, "bind_roots"),
    ({"Binds": ["/run/docker.sock:/var/run/docker.sock"]}, "bind_roots"),
    ({"Binds": ["/run/ds01-engine:/e"]}, "bind_roots"),
    ({"Binds": ["/var/lib/ds01:/k"]}, "bind_roots"),
    ({"Binds": ["/proc:/p"]}, "bind_roots"),
    ({"Binds": ["/sys/kernel:/s"]}, "bind_roots"),
    ({"Binds": ["/dev:/dev"]}, "bind_roots"),
    ({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}, "bind_roots"),
    ({"Mounts": [{"Type": "volume", "Target": "/v", "VolumeOptions": {"DriverConfig": {
        "Name": "local", "Options": {"type": "none", "o": "bind", "device": "/etc"}}}}]}, "bind_roots"),
    ({"Mounts": [{"Type": "volume", "Target": "/v", "VolumeOptions": {"DriverConfig": {"Name": "sshfs"}}}]},
     "volume_drivers"),
    ({"VolumeDriver": "convoy"}, "volume_drivers"),
    ({"Mounts": [{"Type": "npipe", "Source": "x", "Target": "/x"}]}, "bind_roots"),
    ({"CapAdd": ["SYS_ADMIN"]}, "cap_add"),
    ({"CapAdd": ["cap_sys_ptrace"]}, "cap_add"),
    ({"CapAdd": ["ALL"]}, "cap_add"),
    ({"SecurityOpt": ["seccomp=unconfined"]}, "allow_unconfined"),
    ({"SecurityOpt": ["seccomp:unconfined"]}, "allow_unconfined"),
    ({"SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']}, "allow_unconfined"),
    ({"SecurityOpt": ["apparmor=unconfined"]}, "allow_unconfined"),
    ({"SecurityOpt": ["systempaths=unconfined"]}, "allow_unconfined"),
    ({"SecurityOpt": ["label=disable"]}, "allow_unconfined"),
    ({"SecurityOpt": ["label=type:spc_t"]}, "allow_unconfined"),
    ({"SecurityOpt": ["label:level:s0:c1,c2"]}, "allow_unconfined"),
    ({"SecurityOpt": ["apparmor=lxc-container-default-with-nesting"]}, "allow_unconfined"),
    ({"SecurityOpt": ["apparmor:unconfined"]}, "allow_unconfined"),
    ({"OomScoreAdj": -1000}, "allow_privileged"),
    ({"PortBindings": {"22/tcp": [{"HostPort": "22"}]}}, "allow_low_ports"),
    ({"PortBindings": {"53/udp": [{"HostIp": "0.0.0.0", "HostPort": "1-2000"}]}}, "allow_low_ports"),
    ({"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "unix:///run/ds01-engine/docker.sock"}}},
     "log_drivers"),
    ({"LogConfig": {"Type": "gelf", "Config": {"gelf-address": "udp://127.0.0.1:12201"}}}, "log_drivers"),
    ({"Mounts": [{"Type": "volume", "Target": "/v", "VolumeOptions": {"DriverConfig": {
        "Options": {"type": "none", "o": "bind", "device": "/home/alice/p"}}}}], "RestartPolicy": {"Name": "always"}},
     "bind_roots"),
    ({"MaskedPaths": []}, "allow_unconfined"),
    ({"ReadonlyPaths": []}, "allow_unconfined"),
    ({"Sysctls": {"kernel.core_pattern": "|/tmp/x"}}, "allow_unsafe_sysctls"),
    ({"Sysctls": {"kernel/panic": "1"}}, "allow_unsafe_sysctls"),
    ({"Sysctls": {"net.ipv4.ip_forward": "1"}, "NetworkMode": "host"}, "allow_host_network"),
    ({"Binds": ["/home/alice/p:/p"], "RestartPolicy": {"Name": "always"}}, "bind_roots"),
    ({"Mounts": [{"Type": "bind", "Source": "/home/alice/p", "Target": "/p"}],
      "RestartPolicy": {"Name": "unless-stopped"}}, "bind_roots"),
])
def test_ways_to_the_host_are_refused_by_rule(host, rule):
    with pytest.raises(Denied) as refused:
        judge_create(create(**host), ALICE, resolve)
    assert refused.value.rule == rule and rule in str(refused.value) and "\n" not in str(refused.value)


def test_an_unsafe_sysctl_is_refused_even_with_the_hosts_network_allowed():
    with pytest.raises(Denied, match="allow_unsafe_sysctls"):
        judge_create(create(Sysctls={"net.ipv4.ip_forward": "1"}, NetworkMode="host"),
                     Access(home=HOME, allow_host_network=True), resolve)


def test_everyday_containers_pass_with_their_binds_pinned():
    body = create(Binds=["/home/alice/project:/work", "/srv/data/imagenet:/data", "cache:/cache",
                         "/home/alice/./notebooks/:/nb:rw", "/srv/data/x:/x:rw,z"],
                  Mounts=[{"Type": "bind", "Source": "/home/alice/x", "Target": "/x"}, {"Type": "tmpfs", "Target": "/t"},
                          {"Type": "volume", "Source": "named", "Target": "/v"}],
                  ShmSize=8 << 30, PortBindings={"8888/tcp": [{"HostPort": "8888"}]}, CapAdd=[],
                  SecurityOpt=["no-new-privileges", "apparmor=docker-default"], OomScoreAdj=500,
                  LogConfig={"Type": "json-file", "Config": {"max-size": "10m"}}, Sysctls={"net.core.somaxconn": "1024", "kernel.shmmax": "1"})
    out = judge_create(body, ALICE, resolve)["HostConfig"]
    assert out["Binds"] == ["/home/alice/project:/work", "/mnt/data/imagenet:/data:ro", "cache:/cache",
                            "/home/alice/notebooks:/nb:rw", "/mnt/data/x:/x:z,ro"]
    assert out["Mounts"][0]["Source"] == "/home/alice/x" and out["Mounts"][1] == {"Type": "tmpfs", "Target": "/t"}
    assert body["HostConfig"]["Binds"][1] == "/srv/data/imagenet:/data"      # the input is untouched


def test_exceptions_are_settings():
    lax = Access(home=HOME, allow_privileged=True, allow_host_namespaces=True, allow_host_network=True,
                 cap_add=("SYS_PTRACE",), allow_unconfined=True, bind_roots=("~", "/opt"))
    judge_create(create(Privileged=True, PidMode="host", NetworkMode="host", CapAdd=["sys_ptrace"],
                        SecurityOpt=["seccomp=unconfined"], Binds=["/opt/tools:/t"]), lax, resolve)
    with pytest.raises(Denied, match="never allowed"):
        judge_create(create(Binds=["/etc:/e"]), Access(home=HOME, bind_roots=("/",)), resolve)


def test_exec_update_volume_and_start():
    with pytest.raises(Denied, match="allow_privileged"):
        judge_exec({"Privileged": True, "Cmd": ["sh"]}, ALICE)
    judge_exec({"Privileged": False}, ALICE)
    with pytest.raises(Denied, match="Devices"):
        judge_update({"Devices": [{"PathOnHost": "/dev/sda"}]}, False)
    judge_update({"Memory": 1 << 30, "RestartPolicy": {"Name": "always"}}, False)
    with pytest.raises(Denied, match="--restart on-failure with host binds"):
        judge_update({"RestartPolicy": {"Name": "on-failure"}}, True)
    with pytest.raises(Denied, match="bind_roots"):
        judge_volume({"Name": "v", "DriverOpts": {"type": "none", "o": "bind", "device": "/home/bob"}}, ALICE, resolve)
    with pytest.raises(Denied, match="volume_drivers"):
        judge_volume({"Name": "v", "Driver": "rexray"}, ALICE, resolve)
    judge_volume({"Name": "v", "DriverOpts": {"type": "none", "o": "bind", "device": "/home/alice/d"}}, ALICE, resolve)
    judge_volume({"Name": "v", "DriverOpts": {"type": "tmpfs", "device": "tmpfs", "o": "size=1g"}}, ALICE, resolve)
    check_binds_at_start(["/home/alice/project:/w"], [], ALICE, resolve)
    LINKS["/home/alice/project"] = "/etc"          # swapped for a symlink after the create
    try:
        with pytest.raises(Denied, match="bind_roots"):
            check_binds_at_start(["/home/alice/project:/w"], [], ALICE, resolve)
        with pytest.raises(Denied, match="bind_roots"):
            check_binds_at_start([], [{"Type": "bind", "Source": "/home/alice/project", "RW": True}], ALICE, resolve)
    finally:
        del LINKS["/home/alice/project"]


@pytest.mark.parametrize("raw", [
    b'{"Image":"x","HostConfig":{"Mounts":[{"type":"bind","source":"/","target":"/host"}]}}',
    b'{"Image":"x","HostConfig":{"Mounts":[{"Type":"bind","Source":"/home/alice","source":"/","Target":"/h"}]}}',
    b'{"Image":"x","HostConfig":{"Mounts":[{"Type":"tmpfs","type":"bind","Source":"/","Target":"/h"}]}}',
    b'{"Image":"x","HostConfig":{"Mounts":[{"Type":"volume","Source":"v","Target":"/h","volumeoptions":'
    b'{"driverconfig":{"options":{"type":"none","o":"bind","device":"/"}}}}]}}',
    b'{"Image":"x","HostConfig":{"Mounts":[{"Type":"volume","Source":"v","Target":"/h","VolumeOptions":'
    b'{"DriverConfig":{"name":"sshfs"}}}]}}',
])
def test_mounts_are_read_with_gos_key_matching(raw):
    """Mount keys match whatever their case and the later duplicate wins, as in Go."""
    from ds01d.rules.engine_json import canonical
    with pytest.raises(Denied):
        judge_create(canonical(raw), ALICE, resolve)


def test_a_read_only_root_cannot_be_made_writable_by_a_later_key():
    from ds01d.rules.engine_json import canonical
    body = canonical(b'{"Image":"x","HostConfig":{"Mounts":[{"Type":"bind","Source":"/srv/data/x","Target":"/d",'
                     b'"ReadOnly":true,"readonly":false}]}}')
    assert judge_create(body, ALICE, resolve)["HostConfig"]["Mounts"][0]["ReadOnly"] is True


def test_a_source_that_cannot_be_followed_is_refused_not_guessed():
    def unreadable(path: str) -> str:
        if path.startswith("/home/alice/private"):
            raise PermissionError(13, "Permission denied")
        return resolve(path)
    with pytest.raises(Denied, match="cannot be checked \\(Permission denied\\)"):
        judge_create(create(Binds=["/home/alice/private/r:/host"]), ALICE, unreadable)


def test_a_home_or_root_of_slash_allows_nothing():
    for access in (Access(home="/"), Access(home=HOME, bind_roots=("/",))):
        with pytest.raises(Denied, match="not allowed"):
            judge_create(create(Binds=["/opt/x:/x"]), access, resolve)


def test_fields_of_the_wrong_shape_are_unreadable_not_a_crash():
    from ds01d.rules.engine_json import UnreadableBody
    for body in (create(Sysctls=["a"]), create(Mounts=[{"Type": "volume", "VolumeOptions": [1]}]),
                 create(Mounts=[{"Type": "volume", "VolumeOptions": {"DriverConfig": {"Options": "x"}}}])):
        with pytest.raises(UnreadableBody, match="must be an object"):
            judge_create(body, ALICE, resolve)
    with pytest.raises(UnreadableBody, match="DriverOpts must be an object"):
        judge_volume({"Name": "v", "DriverOpts": ["o", "bind"]}, ALICE, resolve)


def test_host_ports_are_read_as_go_reads_them():
    body = canonical(b'{"Image":"x","HostConfig":{"PortBindings":{"80/tcp":[{"hostport":"80"}]}}}')
    with pytest.raises(Denied, match="host port 80 is not allowed"):
        judge_create(body, ALICE, resolve)
    judge_create(canonical(b'{"HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":""}],"8080/tcp":null}}}'),
                 ALICE, resolve)
    judge_create(create(PortBindings={"22/tcp": [{"HostPort": "2222"}]}), ALICE, resolve)
    with pytest.raises(UnreadableBody, match="not a number"):
        judge_create(create(PortBindings={"22/tcp": [{"HostPort": "ssh"}]}), ALICE, resolve)
    judge_create(create(PortBindings={"22/tcp": [{"HostPort": "22"}]}), Access(home=HOME, allow_low_ports=True),
                 resolve)


@pytest.mark.parametrize("raw,refused", [
    (b'{"Name":"n"}', False),
    (b'{"Name":"n","Driver":"bridge","Options":{"com.docker.network.driver.mtu":"1400"}}', False),
    (b'{"Name":"n","driver":"macvlan","Options":{"parent":"eth0"}}', True),
    (b'{"Name":"n","Driver":"ipvlan"}', True),
    (b'{"Name":"n","Driver":"weaveworks/net-plugin:latest"}', True),
    (b'{"Name":"n","Options":{"com.docker.network.bridge.name":"br0"}}', True),
    (b'{"Name":"n","ConfigOnly":true,"Options":{"Com.Docker.Network.Bridge.Name ":"docker0"}}', True),
])
def test_networks_on_the_hosts_interfaces_are_refused(raw, refused):
    fields = canonical_fields(raw, NETWORK_CREATE)
    if refused:
        with pytest.raises(Denied, match="allow_host_network"):
            judge_network(fields, ALICE)
    else:
        judge_network(fields, ALICE)
    judge_network(fields, Access(home=HOME, allow_host_network=True))


def test_a_restart_policy_with_volumes_that_bind_folders_is_refused():
    host = {"RestartPolicy": {"Name": "always"}}
    restart_with_volume_binds(host, [{}, {"type": "tmpfs", "device": "tmpfs"}])
    restart_with_volume_binds({"RestartPolicy": {"Name": "no"}}, [{"o": "bind", "device": "/home/alice/d"}], True)
    with pytest.raises(Denied, match="bind_roots"):
        restart_with_volume_binds(host, [{"o": "rbind,ro", "device": "/home/alice/d"}])
    with pytest.raises(Denied, match="bind_roots"):
        restart_with_volume_binds(host, [{"type": "none", "device": "/home/alice/d"}])
    with pytest.raises(Denied, match="bind_roots"):
        restart_with_volume_binds(host, [], joined=True)


# ---- the hostile review's findings (review of 606bbf3) ------------------------------------------


def test_nested_keys_fold_as_go_folds_them_in_an_update():
    from ds01d.rules.engine_json import UPDATE_CONFIG
    fields = canonical_fields(b'{"RestartPolicy": {"name": "always"}}', UPDATE_CONFIG)
    with pytest.raises(Denied, match="--restart always with host binds"):
        judge_update(fields, True)


@pytest.mark.parametrize("host", [
    {"Binds": ["/home/alice/d:/mnt:rshared"]},
    {"Binds": ["/home/alice/d:/mnt:ro,shared"]},
    {"Mounts": [{"Type": "bind", "Source": "/home/alice/d", "Target": "/mnt", "BindOptions": {"Propagation": "rshared"}}]},
])
def test_propagation_back_to_the_host_is_refused(host):
    with pytest.raises(Denied, match="propagation"):
        judge_create(create(**host), ALICE, resolve)
    judge_create(create(Binds=["/home/alice/d:/mnt:rslave"]), ALICE, resolve)


def test_bare_disable_network_file_systems_and_too_many_mounts():
    with pytest.raises(Denied, match="allow_unconfined"):
        judge_create(create(SecurityOpt=["disable"]), ALICE, resolve)
    for kind in ("nfs", "NFS4", "cifs"):
        with pytest.raises(Denied, match="network file systems need an admin"):
            judge_volume({"Name": "n", "DriverOpts": {"type": kind, "o": "addr=10.0.0.5", "device": ":/home"}},
                         ALICE, resolve)
    with pytest.raises(Denied, match="more than 64"):
        judge_create(create(Binds=[f"/home/alice/d{i}:/d{i}" for i in range(65)]), ALICE, resolve)


def test_a_volume_that_binds_below_a_read_only_root_is_made_read_only():
    out = judge_volume({"Name": "w", "DriverOpts": {"type": "none", "o": "bind,rw", "device": "/srv/data/x"}},
                       ALICE, resolve)
    assert out["DriverOpts"]["o"] == "bind,ro"
    mounted = judge_create(create(Mounts=[{"Type": "volume", "Target": "/x", "VolumeOptions": {
        "Labels": {"ds01.uid": "0", "mine": "1"},
        "DriverConfig": {"Options": {"type": "none", "o": "bind", "device": "/srv/data"}}}}]), ALICE, resolve)
    options = mounted["HostConfig"]["Mounts"][0]["VolumeOptions"]
    assert options["DriverConfig"]["Options"]["o"] == "bind,ro" and options["Labels"] == {"mine": "1"}
    home = judge_volume({"Name": "h", "DriverOpts": {"type": "none", "o": "bind", "device": "/home/alice/d"}},
                        ALICE, resolve)
    assert home["DriverOpts"]["o"] == "bind"


def test_a_lone_surrogate_is_unreadable_not_a_different_path():
    with pytest.raises(UnreadableBody, match="surrogate"):
        canonical(b'{"HostConfig": {"Binds": ["/home/alice/\\udc80:/x"]}}')
    with pytest.raises(UnreadableBody, match="surrogate"):
        canonical(b'{"HostConfig": {"Sysctls": {"\\ud800": "1"}}}')
