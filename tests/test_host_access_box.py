"""Docker without root: every known way from a container to the host, tried by an ordinary
docker-group user through the real docker CLI and the raw API, is refused with its rule's
sentence; everyday workloads are admitted.  The counts are the issue's figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.gateway_box import CONFIG, PEER, SERVICE, STANDARD, UID, GatewayBox
from tests.nvml_scenarios import whole_gpu, write
from tests.service import Service

pytestmark = pytest.mark.box
IMAGE = "busybox:local"
RAW_HTTP = "/run/ds01-checkout/tests/tools/raw_http.py"


@pytest.fixture(scope="module")
def env(box):
    shared = Path(box.run_dir) / "shared-data"
    (shared / "imagenet").mkdir(parents=True, exist_ok=True)
    (shared / "imagenet" / "train.txt").write_text("cat\n")
    config = CONFIG.replace("defaults: {", f'defaults: {{bind_roots: ["~", "{shared}:ro"], ') \
        .replace("max_containers: 6", "max_containers: 20")
    svc = Service(box, config, fake_nvml=True)
    write(svc.nvml_scenario, [whole_gpu(0)])
    svc.reset(config)
    gw = GatewayBox(box, str(svc.config_path))
    gw.switch("enable")
    svc.start()
    home = gw.home
    for name in ("project", "data", "notebooks"):
        (home / name).mkdir(exist_ok=True)
        os.chown(home / name, UID, UID)
    (home / "project" / "Dockerfile").write_text(f"FROM {IMAGE}\n")
    for link, target in (("etc-link", "/etc"), ("peer-link", str(Path(box.run_dir) / f"{PEER}-home"))):
        if not (home / link).is_symlink():
            os.symlink(target, home / link)
    yield gw, svc, shared
    box.run(["systemctl", "kill", SERVICE], check=False)
    gw.switch("disable")
    svc.stop()


def raw(gw, method: str, target: str, body: bytes | str = b"") -> tuple[int, str]:
    data = body.encode() if isinstance(body, str) else body
    request = (f"{method} {target} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nConnection: close\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    out = gw.as_user("python3", RAW_HTTP, STANDARD, input=request.decode("latin-1")).stdout
    return int(out.split()[1]), out


H = "{home}"
#: (what, how, the rule its sentence names).  `how`: docker CLI arguments, or ("raw", method, target, body).
ESCAPES = [
    ("privileged", ["run", "--rm", "--privileged", IMAGE, "true"], "allow_privileged"),
    ("host pid", ["run", "--rm", "--pid", "host", IMAGE, "true"], "allow_host_namespaces"),
    ("host ipc", ["run", "--rm", "--ipc", "host", IMAGE, "true"], "allow_host_namespaces"),
    ("host uts", ["run", "--rm", "--uts", "host", IMAGE, "true"], "allow_host_namespaces"),
    ("host userns", ["run", "--rm", "--userns", "host", IMAGE, "true"], "allow_host_namespaces"),
    ("host cgroupns", ["run", "--rm", "--cgroupns", "host", IMAGE, "true"], "allow_host_namespaces"),
    ("host network", ["run", "--rm", "--network", "host", IMAGE, "true"], "allow_host_network"),
    ("bind /", ["run", "--rm", "-v", "/:/host", IMAGE, "true"], "bind_roots"),
    ("bind /etc", ["run", "--rm", "-v", "/etc:/e:ro", IMAGE, "true"], "bind_roots"),
    ("bind via ..", ["run", "--rm", "-v", f"{H}/../../../../etc:/e", IMAGE, "true"], "bind_roots"),
    ("symlink out of home", ["run", "--rm", "-v", f"{H}/etc-link:/e", IMAGE, "true"], "bind_roots"),
    ("symlink to another home", ["run", "--rm", "-v", f"{H}/peer-link:/p", IMAGE, "true"], "bind_roots"),
    ("another user's home", ["run", "--rm", "-v", f"{H}/../gwpeer-home:/p", IMAGE, "true"], "bind_roots"),
    ("docker's state", ["run", "--rm", "-v", "/var/lib/docker:/d", IMAGE, "true"], "bind_roots"),
    ("docker socket", ["run", "--rm", "-v", "/run/docker.sock:/var/run/docker.sock", IMAGE, "true"], "bind_roots"),
    ("engine socket", ["run", "--rm", "-v", "/run/ds01-engine:/e", IMAGE, "true"], "bind_roots"),
    ("ds01d socket", ["run", "--rm", "-v", "/run/ds01:/s", IMAGE, "true"], "bind_roots"),
    ("/proc", ["run", "--rm", "-v", "/proc:/p", IMAGE, "true"], "bind_roots"),
    ("/sys", ["run", "--rm", "-v", "/sys:/s", IMAGE, "true"], "bind_roots"),
    ("/dev", ["run", "--rm", "-v", "/dev:/dev", IMAGE, "true"], "bind_roots"),
    ("mount bind /", ["run", "--rm", "--mount", "type=bind,src=/,dst=/h", IMAGE, "true"], "bind_roots"),
    ("volume-opt bind", ["run", "--rm", "--mount", "type=volume,dst=/x,volume-opt=type=none,volume-opt=o=bind,"
                         "volume-opt=device=/etc", IMAGE, "true"], "bind_roots"),
    ("volume create bind", ["volume", "create", "-o", "type=none", "-o", "o=bind", "-o", "device=/", "rootvol"],
     "bind_roots"),
    ("volume plugin", ["volume", "create", "--driver", "vieux/sshfs", "pluginvol"], "volume_drivers"),
    ("cap SYS_ADMIN", ["run", "--rm", "--cap-add", "SYS_ADMIN", IMAGE, "true"], "cap_add"),
    ("cap ALL", ["run", "--rm", "--cap-add", "ALL", IMAGE, "true"], "cap_add"),
    ("seccomp", ["run", "--rm", "--security-opt", "seccomp=unconfined", IMAGE, "true"], "allow_unconfined"),
    ("apparmor", ["run", "--rm", "--security-opt", "apparmor=unconfined", IMAGE, "true"], "allow_unconfined"),
    ("systempaths", ["run", "--rm", "--security-opt", "systempaths=unconfined", IMAGE, "true"], "allow_unconfined"),
    ("raw: host sysctl", ("raw", "POST", "/v1.41/containers/create",     # (the CLI refuses it itself)
                          '{"Image": "busybox:local", "HostConfig": {"Sysctls": {"kernel.core_pattern": "|/x"}}}'),
     "allow_unsafe_sysctls"),
    ("device", ["run", "--rm", "--device", "/dev/fuse", IMAGE, "true"], "allowed_devices"),
    ("build host network", ["build", "--network", "host", "-q", f"{H}/project"], "allow_host_network"),
    ("restart policy with a bind", ["run", "-d", "--restart", "always", "-v", f"{H}/project:/p", IMAGE, "true"],
     "bind_roots"),
    ("raw: top-level Binds", ("raw", "POST", "/v1.41/containers/create",
                              '{"Image": "busybox:local", "Binds": ["/:/host"]}'), "bind_roots"),
    ("raw: lower-case keys", ("raw", "POST", "/v1.41/containers/create",
                              '{"Image": "busybox:local", "hostconfig": {"privileged": true}}'), "allow_privileged"),
    ("raw: duplicate key", ("raw", "POST", "/v1.41/containers/create",
                            '{"Image": "busybox:local", "HostConfig": {"Privileged": false, "Privileged": true}}'),
     "allow_privileged"),
    ("raw: old API version", ("raw", "POST", "/v1.24/containers/create",
                              '{"Image": "busybox:local", "HostConfig": {"Binds": ["/etc:/e"]}}'), "bind_roots"),
    ("raw: encoded path", ("raw", "POST", "/v1.41/containers%2Fcreate",
                           '{"Image": "busybox:local", "HostConfig": {"PidMode": "host"}}'), "allow_host_namespaces"),
    ("another apparmor profile", ["run", "--rm", "--security-opt", "apparmor=lxc-container-default-with-nesting",
                                  IMAGE, "true"], "allow_unconfined"),
    ("selinux spc_t", ["run", "--rm", "--security-opt", "label=type:spc_t", IMAGE, "true"], "allow_unconfined"),
    ("oom-score-adj", ["run", "--rm", "--oom-score-adj", "-1000", IMAGE, "true"], "allow_privileged"),
    ("host port 22", ["run", "--rm", "-p", "22:22", IMAGE, "true"], "allow_low_ports"),
    ("host ports 1-2000", ["run", "--rm", "-p", "127.0.0.1:1-2000:1-2000/udp", IMAGE, "true"], "allow_low_ports"),
    ("syslog to the engine socket", ["run", "--rm", "--log-driver", "syslog", "--log-opt",
                                     "syslog-address=unix:///run/ds01-engine/docker.sock", IMAGE, "true"],
     "log_drivers"),
    ("gelf from the host", ["run", "--rm", "--log-driver", "gelf", "--log-opt", "gelf-address=udp://127.0.0.1:9",
                            IMAGE, "true"], "log_drivers"),
    ("macvlan network", ["network", "create", "-d", "macvlan", "-o", "parent=lo", "lanvlan"], "allow_host_network"),
    ("a host bridge by name", ["network", "create", "-o", "com.docker.network.bridge.name=docker0", "hijack"],
     "allow_host_network"),
    ("restart with a volume that binds", ["run", "-d", "--restart", "always", "--mount",
                                          f"type=volume,dst=/x,volume-opt=type=none,volume-opt=o=bind,"
                                          f"volume-opt=device={H}/project", IMAGE, "true"], "bind_roots"),
    ("rshared bind", ["run", "--rm", "-v", f"{H}/project:/p:rshared", IMAGE, "true"], "bind_roots"),
    ("bind propagation", ["run", "--rm", "--mount", f"type=bind,src={H}/project,dst=/p,bind-propagation=shared",
                          IMAGE, "true"], "bind_roots"),
    ("nfs volume", ["volume", "create", "-o", "type=nfs", "-o", "o=addr=127.0.0.1", "-o", "device=:/", "nfsvol"],
     "volume_drivers"),
    ("raw: bare disable", ("raw", "POST", "/v1.41/containers/create",
                           '{"Image": "busybox:local", "HostConfig": {"SecurityOpt": ["disable"]}}'),
     "allow_unconfined"),
    ("raw: lower-case restart name", ("raw", "POST", "/v1.41/containers/create",
                                      '{"Image": "busybox:local", "HostConfig": {"Binds": ["{home}/project:/p"], '
                                      '"RestartPolicy": {"name": "always"}}}'), "bind_roots"),
    ("raw: unmasked /proc", ("raw", "POST", "/v1.41/containers/create",
                             '{"Image": "busybox:local", "HostConfig": {"MaskedPaths": [], "ReadonlyPaths": []}}'),
     "allow_unconfined"),
]


def attempt(gw, how, home: Path) -> tuple[bool, str]:
    """(refused, what the user saw)."""
    if how[0] == "raw":
        code, out = raw(gw, how[1], how[2], how[3].replace(H, str(home)))
        return code == 403, out
    done = gw.docker(*[a.replace(H, str(home)) for a in how], check=False, timeout=120)
    return done.returncode != 0, done.stderr


def test_every_way_to_the_host_is_refused_with_its_rule(env):
    gw, svc, _ = env
    refused = []
    for what, how, rule in ESCAPES:
        got, said = attempt(gw, how, gw.home)
        if got and f"({rule}); ask an admin for an exception" in said:
            refused.append(what)
        else:
            print(f"NOT REFUSED AS EXPECTED: {what}: {said[-300:]}")
    print(f"escape attempts refused: {len(refused)} / {len(ESCAPES)}")
    assert len(ESCAPES) >= 25 and len(refused) == len(ESCAPES)
    # each refused create is counted in ds01d's metrics under the setting it broke
    creates = [(rule, how) for _, how, rule in ESCAPES if how[0] == "run" or (how[0] == "raw" and "create" in how[2])]
    expected = {}
    for rule, _ in creates:
        expected[rule] = expected.get(rule, 0) + 1

    def all_counted() -> dict[str, float] | None:
        counts = refused_counts(svc)
        return counts if all(counts.get(rule, 0) >= n for rule, n in expected.items()) else None
    counted = gw.box.wait_until(all_counted, 15.0, interval=0.2, what="the refusals in the metrics file")
    print(f"refused creates counted by reason: {counted}")


def refused_counts(svc) -> dict[str, float]:
    """ds01_creates_refused_total by reason, from ds01d's metrics file."""
    found = {}
    path = svc.metrics_dir / "ds01d.prom"
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("ds01_creates_refused_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            found[reason] = float(line.rsplit(" ", 1)[1])
    return found


def test_a_privileged_exec_into_ones_own_container(env, box_cleanup):
    gw, _, _ = env
    name = box_cleanup.unique("access-exec")
    gw.docker("run", "-d", "--name", name, IMAGE, "sleep", "600")
    refused = gw.docker("exec", "--privileged", name, "true", check=False)
    assert refused.returncode != 0 and "(allow_privileged)" in refused.stderr
    assert gw.docker("exec", name, "echo", "plain").stdout.strip() == "plain"


def test_a_bind_swapped_for_a_symlink_after_the_create_is_refused_at_start(env, box_cleanup):
    gw, _, _ = env
    name = box_cleanup.unique("access-swap")
    victim = gw.home / "swap"
    victim.mkdir(exist_ok=True)
    os.chown(victim, UID, UID)
    gw.docker("create", "--name", name, "-v", f"{victim}:/d", IMAGE, "ls", "/d")
    victim.rmdir()
    os.symlink("/etc", victim)
    try:
        refused = gw.docker("start", name, check=False)
        assert refused.returncode != 0 and "(bind_roots)" in refused.stderr and "/etc" in refused.stderr
        assert gw.direct("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "created"
    finally:
        victim.unlink()


def test_everyday_workloads_are_admitted(env, box_cleanup):
    gw, svc, shared = env
    home = gw.home
    project = home / "door-compose"
    project.mkdir(exist_ok=True)
    (project / "docker-compose.yml").write_text(
        f'version: "3"\nservices:\n  app:\n    image: {IMAGE}\n    command: sleep 600\n'
        f'    volumes: ["./:/work", "cache:/cache", "{shared}/imagenet:/data"]\nvolumes:\n  cache: {{}}\n')
    os.chown(project, UID, UID)
    mount = json.dumps({"Image": IMAGE, "Cmd": ["sleep", "600"], "Labels": {"devcontainer.local_folder": str(home)},
                        "HostConfig": {"Mounts": [{"Type": "bind", "Source": f"{home}/project",
                                                   "Target": "/workspaces/project"}]}})
    workloads = [
        ("bind the home", ["run", "-d", "-v", f"{home}:/home/me", IMAGE, "sleep", "600"]),
        ("a project dir", ["run", "-d", "-v", f"{home}/project:/work", "-w", "/work", IMAGE, "sleep", "600"]),
        ("shared data, read-only", ["run", "-d", "-v", f"{shared}/imagenet:/data", IMAGE, "sleep", "600"]),
        ("--gpus", ["run", "-d", "--gpus", "1", IMAGE, "sleep", "600"]),
        ("--shm-size", ["run", "-d", "--shm-size", "8g", IMAGE, "sleep", "600"]),
        ("-p 8888:8888", ["run", "-d", "-p", "8888:8888", IMAGE, "sleep", "600"]),
        ("named volume and tmpfs", ["run", "-d", "-v", "cache:/cache", "--tmpfs", "/t", IMAGE, "sleep", "600"]),
        ("--user", ["run", "-d", "--user", "2701:2701", IMAGE, "sleep", "600"]),
        ("a namespaced sysctl", ["run", "-d", "--sysctl", "net.core.somaxconn=1024", IMAGE, "sleep", "600"]),
        ("no-new-privileges", ["run", "-d", "--security-opt", "no-new-privileges", IMAGE, "sleep", "600"]),
        ("--restart with a named volume", ["run", "-d", "--restart", "unless-stopped", "-v", "cache:/c", IMAGE,
                                           "sleep", "600"]),
    ]
    admitted = []
    created: list[str] = []
    for what, args in workloads:
        name = box_cleanup.unique("access-ok")
        done = gw.docker(*args[:2], "--name", name, *args[2:], check=False, timeout=120)
        if done.returncode == 0:
            admitted.append(what)
            created.append(name)
        else:
            print(f"NOT ADMITTED: {what}: {done.stderr[-300:]}")
        if what == "--gpus" and done.returncode == 0:
            gw.docker("rm", "-f", name)          # one GPU in the box
    name = box_cleanup.unique("access-devc")
    code, out = raw(gw, "POST", f"/v1.41/containers/create?name={name}", mount)
    (admitted if code == 201 else []).append("a dev container with a workspace mount")
    compose = gw.as_user("sh", "-c", f"cd {project} && docker-compose -p accessproj up -d", timeout=120, check=False)
    try:
        (admitted if compose.returncode == 0 else []).append("compose with volumes")
        print(f"everyday workloads admitted: {len(admitted)} / {len(workloads) + 2}")
        assert len(admitted) == len(workloads) + 2, compose.stderr
        ro = json.loads(gw.direct("inspect", "-f", "{{json .Mounts}}", created[2]).stdout)
        assert [(m["Source"], m["RW"]) for m in ro] == [(f"{shared}/imagenet", False)]   # made read-only
    finally:
        gw.as_user("sh", "-c", f"cd {project} && docker-compose -p accessproj down -v", timeout=120, check=False)
        for volume in ("cache",):
            gw.direct("volume", "rm", "-f", volume, check=False)


def test_named_volumes_are_their_makers(env, box_cleanup):
    """A volume made through the gateway (explicitly, or by `-v name:/x`) is labelled as its
    maker's; another user can neither mount nor remove it."""
    gw, _, _ = env
    from tests.gateway_box import PEER_UID
    try:
        gw.docker("volume", "create", "--label", "ds01.uid=2702", "made-vol")
        gw.docker("run", "--rm", "-v", "auto-vol:/x", IMAGE, "true")
        for volume in ("made-vol", "auto-vol"):
            labels = json.loads(gw.direct("volume", "inspect", "-f", "{{json .Labels}}", volume).stdout)
            assert (labels["ds01.uid"], labels["ds01.user"]) == ("2701", "gwuser")
            for args in (["run", "--rm", "-v", f"{volume}:/x", IMAGE, "true"],
                         ["run", "--rm", "--mount", f"type=volume,src={volume},dst=/x", IMAGE, "true"],
                         ["volume", "rm", volume]):
                refused = gw.docker(*args, check=False, uid=PEER_UID)
                assert refused.returncode != 0 and f"the volume {volume} is gwuser's" in refused.stderr, args
        gw.docker("run", "--rm", "-v", "made-vol:/x", IMAGE, "true")          # its maker may
    finally:
        gw.direct("volume", "rm", "-f", "made-vol", "auto-vol", check=False)


def test_symlinks_are_followed_through_private_directories_and_volume_folders_again(env, box_cleanup):
    """A symlink to / inside a 0700 directory is seen (the gateway may read it); a local
    volume's folder swapped for a symlink after the create is refused at start and restart."""
    gw, _, _ = env
    private = gw.home / "private"
    private.mkdir(mode=0o700, exist_ok=True)
    os.chown(private, UID, UID)
    link = private / "r"
    if not link.is_symlink():
        os.symlink("/", link)
    refused = gw.docker("run", "--rm", "-v", f"{link}:/host", IMAGE, "true", check=False)
    assert refused.returncode == 125 and "(bind_roots)" in refused.stderr
    folder = gw.home / "volfolder"
    folder.mkdir(exist_ok=True)
    os.chown(folder, UID, UID)
    name = box_cleanup.unique("access-volswap")
    try:
        gw.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={folder}", "bindvol")
        gw.docker("run", "-d", "--name", name, "-v", "bindvol:/v", IMAGE, "sleep", "600")
        gw.docker("stop", "-t", "0", name)
        folder.rmdir()
        os.symlink("/etc", folder)
        for verb in ("start", "restart"):
            refused = gw.docker(verb, name, check=False)
            assert refused.returncode != 0 and "(bind_roots)" in refused.stderr, (verb, refused.stderr)
    finally:
        gw.direct("rm", "-f", name, check=False)
        gw.direct("volume", "rm", "-f", "bindvol", check=False)
        if folder.is_symlink():
            folder.unlink()


def test_restart_policies_never_mount_a_folder_again_unchecked(env, box_cleanup):
    """dockerd's own restarts resolve again what a named volume or a `--volumes-from`
    container binds: a restart policy with either is refused, at create and at update."""
    gw, _, _ = env
    holder, user = box_cleanup.unique("access-binder"), box_cleanup.unique("access-user")
    try:
        gw.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={gw.home}/project", "foldervol")
        refused = gw.docker("run", "-d", "--restart", "always", "-v", "foldervol:/v", IMAGE, "true", check=False)
        assert refused.returncode == 125 and "(bind_roots)" in refused.stderr
        gw.docker("create", "--name", holder, "-v", f"{gw.home}/project:/p", IMAGE, "true")
        refused = gw.docker("run", "-d", "--restart", "on-failure", "--volumes-from", holder, IMAGE, "true",
                            check=False)
        assert refused.returncode == 125 and "(bind_roots)" in refused.stderr
        gw.docker("create", "--name", user, "-v", "foldervol:/v", IMAGE, "sleep", "600")
        refused = gw.docker("update", "--restart", "always", user, check=False)
        assert refused.returncode != 0 and "(bind_roots)" in refused.stderr
        assert gw.direct("inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", user).stdout.strip() in ("", "no")
    finally:
        gw.direct("rm", "-f", holder, user, check=False)
        gw.direct("volume", "rm", "-f", "foldervol", check=False)


def test_a_setuid_program_left_in_a_home_and_what_doctor_says(env, box):
    """A container's root can make a file in a writable bind setuid root; its owner then runs
    it on the host as root, unless the home's filesystem is nosuid.  doctor says which."""
    gw, svc, _ = env
    tool = gw.home / "idcopy"
    gw.as_user("cp", "/usr/bin/id", str(tool))
    gw.docker("run", "--rm", "-v", f"{gw.home}:/h", IMAGE, "sh", "-c", "chown 0:0 /h/idcopy && chmod 4755 /h/idcopy")

    def doctor_says() -> str:
        out = box.run([box.tool("ds01d"), "doctor", "--config", str(svc.config_path)], check=False).stdout
        return next(line for line in out.splitlines() if "setuid:" in line)

    try:
        assert gw.as_user(str(tool), "-u").stdout.strip() == "0"     # the escape, on this mount
        assert doctor_says().startswith("[FAIL] setuid: writable bind roots on filesystems without nosuid: ")
        homes = [str(gw.home), str(gw.home.parent / f"{PEER}-home")]     # every docker-group member's
        for home in homes:
            box.run(["mount", "--bind", home, home])
        try:
            for home in homes:
                box.run(["mount", "-o", "remount,bind,nosuid", home])
            assert gw.as_user(str(tool), "-u").stdout.strip() == str(UID)   # nosuid: just the user
            assert doctor_says() == "[ OK ] setuid: 2 writable bind roots, all on nosuid filesystems"
        finally:
            for home in homes:
                box.run(["umount", home])
    finally:
        tool.unlink()


def test_docker_cp_checks_the_binds_again(env, box_cleanup):
    """docker cp mounts the container's binds again (dockerd's archive routes): a bind swapped
    for a symlink since the create is refused there too, both ways."""
    gw, _, _ = env
    name = box_cleanup.unique("access-cp")
    folder = gw.home / "cpdir"
    folder.mkdir(exist_ok=True)
    os.chown(folder, UID, UID)
    gw.docker("create", "--name", name, "-v", f"{folder}:/d", IMAGE, "true")
    assert gw.docker("cp", f"{name}:/d", "-", check=False).returncode == 0
    folder.rmdir()
    os.symlink("/etc", folder)
    try:
        for args in (["cp", f"{name}:/d/passwd", "-"], ["cp", str(gw.home / "project" / "Dockerfile"), f"{name}:/d/x"]):
            refused = gw.docker(*args, check=False)
            assert refused.returncode != 0 and "(bind_roots)" in refused.stderr, (args, refused.stderr)
        assert not Path("/etc/x").exists()
    finally:
        folder.unlink()


def test_a_form_body_cannot_replace_the_gateways_parameters(env, box_cleanup):
    """POST /containers/prune with a form body: Go reads the body's filters before the query's,
    so the gateway's own-containers filter would not apply; refused, and nothing is pruned."""
    gw, _, _ = env
    from tests.gateway_box import PEER_UID
    name = box_cleanup.unique("access-peer-stopped")
    gw.docker("create", "--name", name, IMAGE, "true", uid=PEER_UID)
    body = "filters=%7B%7D"
    request = ("POST /v1.41/containers/prune HTTP/1.1\r\nHost: d\r\nConnection: close\r\n"
               "Content-Type: application/x-www-form-urlencoded\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}")
    out = gw.as_user("python3", RAW_HTTP, STANDARD, input=request).stdout
    assert out.split()[1] == "400" and "form bodies are not accepted" in out
    assert gw.direct("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "created"


def test_another_users_anonymous_volume_is_theirs(env, box_cleanup):
    """An anonymous volume has no owner's label (dockerd makes it): no other user may mount it
    while a container of its maker uses it, and only admins remove one."""
    gw, _, _ = env
    from tests.gateway_box import PEER_UID
    name = box_cleanup.unique("access-anon")
    gw.docker("run", "-d", "--name", name, "-v", "/data", IMAGE, "sleep", "600", uid=PEER_UID)
    volume = json.loads(gw.direct("inspect", "-f", "{{json .Mounts}}", name).stdout)[0]["Name"]
    try:
        refused = gw.docker("run", "--rm", "-v", f"{volume}:/x", IMAGE, "true", check=False)
        assert refused.returncode == 125 and "used by another user's container" in refused.stderr
        refused = gw.docker("volume", "rm", volume, check=False)
        assert refused.returncode != 0 and "only admins may remove it" in refused.stderr
    finally:
        gw.direct("rm", "-f", "-v", name, check=False)


def test_another_users_network_is_theirs(env, box_cleanup):
    """A network made through the gateway is its maker's: another user can neither join it (a
    create's --network, `network connect`, an endpoint in NetworkingConfig) nor remove it."""
    gw, _, _ = env
    from tests.gateway_box import PEER_UID
    mine = box_cleanup.unique("access-net")
    try:
        gw.docker("network", "create", "--label", "ds01.uid=2701", "peernet", uid=PEER_UID)
        labels = json.loads(gw.direct("network", "inspect", "-f", "{{json .Labels}}", "peernet").stdout)
        assert (labels["ds01.uid"], labels["ds01.user"]) == ("2702", "gwpeer")
        gw.docker("run", "--rm", "--network", "peernet", IMAGE, "true", uid=PEER_UID)     # its maker may
        gw.docker("create", "--name", mine, IMAGE, "sleep", "600")
        for args in (["run", "--rm", "--network", "peernet", "--network-alias", "db", IMAGE, "true"],
                     ["network", "connect", "--alias", "db", "peernet", mine],
                     ["network", "rm", "peernet"]):
            refused = gw.docker(*args, check=False)
            assert refused.returncode != 0 and "the network peernet is gwpeer's" in refused.stderr, args
        code, out = raw(gw, "POST", "/v1.41/containers/create", json.dumps({
            "Image": IMAGE, "NetworkingConfig": {"EndpointsConfig": {"peernet": {"Aliases": ["db"]}}}}))
        assert code == 403 and "gwpeer's" in out
    finally:
        gw.direct("rm", "-f", mine, check=False)
        gw.direct("network", "rm", "peernet", check=False)
