"""The config loader: every class of bad input gives `PATH:LINE: message`, and a good
file means exactly what it says."""

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from ds01d.config import (BUILTIN_DEFAULTS, SETTING_NAMES, ConfigError, GpusAllPolicy, load_config,
                          parse_config)
from ds01d.config.checks import host_problems

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config" / "ds01.yaml"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(textwrap.dedent(text), "/etc/ds01/ds01.yaml")
    return [str(p) for p in err.value.problems]


def test_shipped_config_is_valid_and_sets_every_default():
    config = load_config(str(SHIPPED))
    assert set(config.defaults) == set(SETTING_NAMES)
    # The built-in values match the shipped file, so leaving a key out changes nothing.
    assert dict(config.defaults) == dict(BUILTIN_DEFAULTS)
    assert config.default_group in config.groups


def test_empty_file_is_all_builtin_defaults():
    config = parse_config("", "x.yaml")
    assert config.groups == {} and config.default_group == "default"
    assert config.policies.gpus_all is GpusAllPolicy.STOP


def test_values_are_parsed_to_bytes_seconds_and_cpus():
    config = parse_config(textwrap.dedent("""\
        daemon: {sampling_interval: 5s}
        policies: {warning_lead_times: [5m, 1h], keep_alive_file: null}
        defaults:
          cpus: 2.5
          memory_max: 32g
          idle_timeout: {ds01: null, docker: 2h}
        """), "x.yaml")
    assert config.daemon.sampling_interval == 5
    assert config.policies.warning_lead_times == (3600, 300)
    assert config.policies.keep_alive_file is None
    assert config.defaults["cpus"] == 2.5 and config.defaults["memory_max"] == 32 * 2**30
    assert config.defaults["idle_timeout.ds01"] is None
    assert config.defaults["idle_timeout.docker"] == 7200
    assert "idle_timeout.compose" not in config.defaults


def test_bad_yaml_has_its_line():
    assert problems("defaults:\n  cpus: 8\n  memory_max: [32G\n") == [
        "/etc/ds01/ds01.yaml:4: bad YAML: expected ',' or ']', but got '<stream end>'"]


def test_tabs_are_bad_yaml_with_a_line():
    (p,) = problems("defaults:\n\tcpus: 8\n")
    assert p.startswith("/etc/ds01/ds01.yaml:2: bad YAML:")


def test_unknown_keys_at_every_level():
    out = problems("""\
        deamon: {}
        daemon: {sampling_intervall: 5s}
        policies: {idle_treshold: 5}
        defaults: {cpu: 8, idle_timeout: {jupyter: 1h}}
        groups:
          students: {memebers: [a]}
        user_overrides:
          bob: {reason: x, gpus: 2}
        """)
    assert out == [
        "/etc/ds01/ds01.yaml:1: default_group is missing: say which group users listed nowhere belong to",
        "/etc/ds01/ds01.yaml:1: top level: unknown key 'deamon' (known: daemon, policies, defaults, "
        "default_group, groups, user_overrides)",
        "/etc/ds01/ds01.yaml:2: daemon: unknown key 'sampling_intervall' (known: sampling_interval, "
        "state_dir, socket_path, admin_group, show_other_users, audit_retention, metrics_file)",
        "/etc/ds01/ds01.yaml:3: policies: unknown key 'idle_treshold' (known: idle_threshold, idle_window, "
        "grace_after_start, warning_lead_times, keep_alive_file, keep_alive_max_age, gpus_all, unowned, "
        "outside_slice, sigterm_grace, notify_command, notify_timeout, max_extension, allocation_timeout, "
        "allocation_wait, allow_sharing, foreign_device)",
        "/etc/ds01/ds01.yaml:4: defaults.idle_timeout: unknown container kind 'jupyter' "
        "(kinds: docker, compose, devcontainer, ds01)",
        "/etc/ds01/ds01.yaml:4: defaults: unknown key 'cpu' (known: cpus, memory_max, memory_high, "
        "tasks_max, container_cpus, container_memory, container_shm_size, container_gpu_memory, gpu_quota, max_containers, "
        "priority, allow_full_gpu, allow_privileged, allow_host_namespaces, allow_host_network, bind_roots, "
        "volume_drivers, allowed_devices, cap_add, allow_unconfined, allow_unsafe_sysctls, allow_low_ports, log_drivers, idle_timeout, max_runtime, gpu_hold_after_stop, container_hold_after_stop)",
        "/etc/ds01/ds01.yaml:6: groups.students: unknown key 'memebers' (known: members, unix_group, cpus, "
        "memory_max, memory_high, tasks_max, container_cpus, container_memory, container_shm_size, "
        "container_gpu_memory, gpu_quota, max_containers, priority, allow_full_gpu, allow_privileged, allow_host_namespaces, allow_host_network, bind_roots, "
        "volume_drivers, allowed_devices, cap_add, allow_unconfined, allow_unsafe_sysctls, allow_low_ports, log_drivers, idle_timeout, max_runtime, "
        "gpu_hold_after_stop, container_hold_after_stop)",
        "/etc/ds01/ds01.yaml:8: user_overrides.bob: unknown key 'gpus' (known: reason, expires, group, "
        "reserved_gpus, reservation_start, reservation_end, cpus, "
        "memory_max, memory_high, tasks_max, container_cpus, container_memory, container_shm_size, "
        "container_gpu_memory, gpu_quota, max_containers, priority, allow_full_gpu, allow_privileged, allow_host_namespaces, allow_host_network, bind_roots, "
        "volume_drivers, allowed_devices, cap_add, allow_unconfined, allow_unsafe_sysctls, allow_low_ports, log_drivers, idle_timeout, max_runtime, "
        "gpu_hold_after_stop, container_hold_after_stop)",
    ]


@pytest.mark.parametrize("line,message", [
    ("cpus: eight", "defaults.cpus: CPUs must be a number like 8 or 0.5, not 'eight'"),
    ("cpus: 0", "defaults.cpus: CPUs must be more than 0, not 0"),
    ("memory_max: -32G", "defaults.memory_max: size '-32G' is negative"),
    ("memory_max: -1", "defaults.memory_max: size -1 is negative"),
    ("memory_max: 32X", "defaults.memory_max: bad size '32X'; write it like 512M, 32G or 1T"),
    ("tasks_max: 0", "defaults.tasks_max: must be at least 1, not 0"),
    ("tasks_max: many", "defaults.tasks_max: expected a whole number, not 'many'"),
    ("priority: 101", "defaults.priority: must be between 0 and 100, not 101"),
    ("priority: null", "defaults.priority: expected a whole number, not None"),
    ("gpu_quota: -1", "defaults.gpu_quota: must be at least 0, not -1"),
    ("max_containers: 2.5", "defaults.max_containers: expected a whole number, not 2.5"),
    ("idle_timeout: 30", "defaults.idle_timeout: expected a duration like 30m, 48h or 7d, not 30"),
    ("idle_timeout: '30'", "defaults.idle_timeout: duration '30' has no unit; write it like 30m, 48h or 7d"),
    ("idle_timeout: 30 minutes", "defaults.idle_timeout: bad duration '30 minutes'; write it like 90s, 30m, "
     "48h, 7d or 1h30m"),
    ("max_runtime: {ds01: 2x}", "defaults.max_runtime.ds01: bad duration '2x'; write it like 90s, 30m, "
     "48h, 7d or 1h30m"),
    ("cpus: {a: 1}", "defaults.cpus: expected a single value, not a mapping"),
])
def test_wrong_values_in_defaults(line, message):
    assert problems(f"defaults:\n  container_cpus: null\n  {line}\n") == [f"/etc/ds01/ds01.yaml:3: {message}"]


@pytest.mark.parametrize("text,message", [
    ("daemon: {sampling_interval: 0s}", "1: daemon.sampling_interval: must be longer than 0s"),
    ("daemon: {state_dir: var/lib}", "1: daemon.state_dir: expected an absolute path, not 'var/lib'"),
    ("policies: {gpus_all: rewrite}", "1: policies.gpus_all: must be one of allow, warn, stop, not 'rewrite'"),
    ("policies: {idle_threshold: 150}", "1: policies.idle_threshold: must be between 0 and 100, not 150"),
    ("policies: {warning_lead_times: 5m}", "1: policies.warning_lead_times: expected a list of durations "
     "like [15m, 5m], not '5m'"),
    ("policies: 3", "1: policies: expected a mapping of keys to values"),
    ("policies: {notify_command: notify}", "1: policies.notify_command: expected a command as a list of "
     "strings, like [/usr/local/bin/notify, --to, admins], not 'notify'"),
    ("policies: {notify_command: [notify]}", "1: policies.notify_command: expected an absolute path, "
     "not 'notify'"),
    ("- a\n- b", "1: top level: expected a mapping of keys to values"),
    ("defaults: {cpus: 2}\ndefaults: {cpus: 3}", "2: top level: duplicate key 'defaults' (first on line 1)"),
    ("defaults:\n  memory_max: 8G\n  memory_high: 16G",
     "2: defaults: memory_high is above memory_max, so it would never throttle"),
])
def test_wrong_values_in_sections(text, message):
    assert problems(text) == [f"/etc/ds01/ds01.yaml:{message}"]


GROUPS = textwrap.dedent("""\
    default_group: students
    groups:
      students:
        members: [alice, bob]
      researchers:
        members: [carol, alice]
    """)


def test_user_in_two_groups():
    assert problems(GROUPS) == [
        "/etc/ds01/ds01.yaml:6: groups.researchers.members: user 'alice' is already in group 'students' "
        "(line 4); a user belongs to one group"]


def test_member_names_must_be_strings_and_unique():
    assert problems("default_group: g\ngroups:\n  g:\n    members: [alice, 1234, no]\n") == [
        "/etc/ds01/ds01.yaml:4: groups.g.members: names must be strings (quote 1234)"]
    assert problems("default_group: g\ngroups:\n  g:\n    members: [a, a]\n") == [
        "/etc/ds01/ds01.yaml:4: groups.g.members: listed twice: a"]


def test_default_group_must_exist():
    assert problems("default_group: nobody\ngroups:\n  g: {}\n") == [
        "/etc/ds01/ds01.yaml:1: default_group: no group named 'nobody' (groups: g)"]


def test_override_for_a_group_that_does_not_exist():
    text = GROUPS.replace(", alice]", "]") + "user_overrides:\n  dave:\n    reason: thesis\n    group: phd\n"
    assert problems(text) == ["/etc/ds01/ds01.yaml:10: user_overrides.dave.group: no group named 'phd'"]


def test_override_needs_a_reason_and_a_real_date():
    text = GROUPS.replace(", alice]", "]") + "user_overrides:\n  dave: {expires: next week}\n"
    assert problems(text) == [
        "/etc/ds01/ds01.yaml:8: user_overrides.dave.expires: expected a date like 2026-12-31, not 'next week'",
        "/etc/ds01/ds01.yaml:8: user_overrides.dave: needs a reason (who approved it, and why)",
    ]


def test_override_group_contradicting_a_members_list():
    text = GROUPS.replace(", alice]", "]") + "user_overrides:\n  bob: {reason: r, group: researchers}\n"
    assert problems(text) == [
        "/etc/ds01/ds01.yaml:8: user_overrides.bob.group: 'bob' is listed as a member of group 'students'; "
        "say it in one place"]


def test_every_problem_of_a_file_is_reported_at_once():
    out = problems("defaults:\n  cpus: x\n  memory_max: y\n  priority: z\n")
    assert [p.split(":")[1] for p in out] == ["2", "3", "4"]


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "missing.yaml"))
    assert str(err.value) == f"{tmp_path}/missing.yaml:0: cannot read: No such file or directory"


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"defaults:\n  # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:1: not UTF-8 text"):
        load_config(str(path))


HOST = """\
    default_group: students
    groups:
      students:
        unix_group: students
      researchers:
        unix_group: research
        members: [carol]
      staff:
        unix_group: staff
    user_overrides:
      old: {reason: r, expires: 2026-01-31}
      frank: {reason: r, group: staff}
    """


def test_host_checks():
    config = parse_config(textwrap.dedent(HOST), "c.yaml")
    unix = {"students": frozenset({"alice", "carol", "frank"}), "research": frozenset({"carol"}),
            "staff": frozenset({"frank"})}
    out = [str(p) for p in host_problems(config, dt.date(2026, 11, 24), unix)]
    assert out == [
        "c.yaml:4: groups.students.unix_group: user 'carol' (in Unix group 'students') is also in group "
        "'researchers'; list them in one group or give them a user_overrides entry with `group:`",
        "c.yaml:11: warning: user_overrides.old: expired on 2026-01-31; it no longer applies",
    ]
    unix.pop("staff")
    out = [str(p) for p in host_problems(config, dt.date(2026, 1, 31), unix)]
    assert out == [
        "c.yaml:4: groups.students.unix_group: user 'carol' (in Unix group 'students') is also in group "
        "'researchers'; list them in one group or give them a user_overrides entry with `group:`",
        "c.yaml:9: warning: groups.staff.unix_group: there is no Unix group 'staff' on this host",
    ]


def test_host_access_rules_are_settings_checked_where_they_are_written(tmp_path):
    config = parse_config(textwrap.dedent(f"""\
        defaults:
          bind_roots: ["~", "{tmp_path}:ro", /nonexistent/data]
          cap_add: [sys_ptrace]
        default_group: lab
        groups:
          lab: {{allow_host_network: true}}
        user_overrides:
          carol: {{reason: gdb in containers, expires: 2026-12-31, allow_privileged: true}}
        """), "/etc/ds01/ds01.yaml")
    assert config.defaults["bind_roots"] == ("~", f"{tmp_path}:ro", "/nonexistent/data")
    assert config.defaults["cap_add"] == ("SYS_PTRACE",)
    assert config.overrides["carol"].settings["allow_privileged"] is True
    bare = parse_config("defaults: {bind_roots: [~, /srv:ro], log_drivers: [journald]}\n", "/etc/ds01/ds01.yaml")
    assert bare.defaults["bind_roots"] == ("~", "/srv:ro")      # YAML's bare ~ is null: here, the home
    assert bare.defaults["log_drivers"] == ("journald",)
    out = [str(p) for p in host_problems(config, dt.date(2026, 11, 24), {})]
    assert out == ["/etc/ds01/ds01.yaml:2: warning: defaults.bind_roots: /nonexistent/data is not a directory "
                   "on this host"]
    for bad, said in (('bind_roots: [data]', "expected an absolute path, not 'data'"),
                      ('bind_roots: ["/data:rw"]', "a bind root ends in :ro or nothing"),
                      ("bind_roots: /data", "expected a list like"),
                      ("cap_add: [ALL]", "ALL is not one"),
                      ("log_drivers: [3]", "expected a non-empty string"),
                      ("allow_low_ports: 1", "expected true or false"),
                      ("allow_privileged: yes please", "expected true or false"),
                      ("allow_root: true", "unknown key 'allow_root'")):
        with pytest.raises(ConfigError) as refused:
            parse_config(f"defaults:\n  {bad}\n", "/etc/ds01/ds01.yaml")
        assert said in str(refused.value) and str(refused.value).startswith("/etc/ds01/ds01.yaml:2:"), bad
