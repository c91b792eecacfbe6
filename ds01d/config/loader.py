"""Reading ds01.yaml into a `Config`, with every problem reported as `PATH:LINE: message`.

YAML is read into its node tree first (not straight into dicts) because only the
nodes still know their line numbers, and because dicts would silently keep the
last of two duplicate keys.  Loading goes on after an error so that an admin
sees every problem of a file in one run, not one per edit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterator

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from . import schema
from .model import KINDS, LIFECYCLE_KEYS, Config, DaemonSettings, Group, Override, Policies, Reservation


@dataclass(frozen=True, order=True)
class ConfigProblem:
    """One thing wrong with a config file, located for the admin's editor."""

    path: str
    line: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        tag = "warning: " if self.warning else ""
        return f"{self.path}:{self.line}: {tag}{self.message}"


class ConfigError(Exception):
    """The file cannot be used; `problems` says why, each with its line."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(map(str, self.problems)))


def load_config(path: str) -> Config:
    """The valid config at `path`, or ConfigError listing every problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, 0, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(path, 1, f"not UTF-8 text: {exc.reason}")]) from None
    return parse_config(text, path)


def parse_config(text: str, path: str) -> Config:
    """The valid config in `text` (read from `path`), or ConfigError."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([ConfigProblem(path, line, f"bad YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(path, 1, f"bad YAML: {exc}")]) from None
    reader = _Reader(path)
    config = reader.config(root)
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


def line_of(node: Node) -> int:
    return node.start_mark.line + 1


class _Reader:
    """Walks the node tree once, collecting problems instead of stopping at the first."""

    def __init__(self, path: str):
        self.path = path
        self.problems: list[ConfigProblem] = []
        self.lines: dict[str, int] = {}   # "groups.x.bind_roots" -> its line, for host checks
        self._constructor = SafeConstructor()

    def problem(self, node: Node, message: str) -> None:
        self.problems.append(ConfigProblem(self.path, line_of(node), message))

    def value(self, node: Node) -> Any:
        """The plain Python value of a node (YAML 1.1 types, as PyYAML's safe_load)."""
        return self._constructor.construct_object(node, deep=True)

    def parsed(self, node: Node, parser: schema.Parser, where: str) -> tuple[bool, Any]:
        """(ok, value) of `node` through `parser`; a failure is recorded with `where`."""
        if isinstance(node, MappingNode):
            self.problem(node, f"{where}: expected a single value, not a mapping")
            return False, None
        try:
            return True, parser(self.value(node))
        except (ValueError, TypeError, yaml.YAMLError) as exc:
            self.problem(node, f"{where}: {exc}")
            return False, None

    def entries(self, node: Node, where: str) -> Iterator[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping, refusing non-string and duplicate keys."""
        if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null")):
            return
        if not isinstance(node, MappingNode):
            self.problem(node, f"{where}: expected a mapping of keys to values")
            return
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.problem(key_node, f"{where}: keys must be strings, not {key!r}")
                continue
            if key in seen:
                self.problem(key_node, f"{where}: duplicate key {key!r} (first on line {seen[key]})")
                continue
            seen[key] = line_of(key_node)
            yield key, key_node, value_node

    def unknown(self, key_node: Node, key: str, where: str, known: tuple[str, ...] | list[str]) -> None:
        self.problem(key_node, f"{where}: unknown key {key!r} (known: {', '.join(known)})")

    # --- sections -----------------------------------------------------------

    def config(self, root: Node | None) -> Config:
        sections: dict[str, Node] = {}
        for key, key_node, value_node in self.entries(root, "top level"):
            if key not in schema.TOP_LEVEL_KEYS:
                self.unknown(key_node, key, "top level", schema.TOP_LEVEL_KEYS)
            else:
                sections[key] = value_node
        groups = self.groups(sections.get("groups"))
        default_group = self.default_group(sections.get("default_group"), groups)
        return Config(
            path=self.path,
            daemon=self.settings_block(sections.get("daemon"), "daemon", DaemonSettings(), schema.DAEMON_PARSERS),
            policies=self.settings_block(sections.get("policies"), "policies", Policies(), schema.POLICY_PARSERS),
            defaults=self.user_settings(sections.get("defaults"), "defaults", {})[0],
            default_group=default_group,
            groups=MappingProxyType(groups),
            overrides=MappingProxyType(self.overrides(sections.get("user_overrides"), groups)),
            lines=MappingProxyType(dict(self.lines)),
        )

    def settings_block(self, node: Node | None, where: str, base: Any, parsers: dict[str, schema.Parser]) -> Any:
        """A dataclass section (`daemon`, `policies`): `base` with the keys the file sets."""
        changes: dict[str, Any] = {}
        for key, key_node, value_node in self.entries(node, where):
            parser = parsers.get(key)
            if parser is None:
                self.unknown(key_node, key, where, list(parsers))
                continue
            ok, value = self.parsed(value_node, parser, f"{where}.{key}")
            if ok:
                changes[key] = value
        return dataclasses.replace(base, **changes)

    def user_settings(self, node: Node | None, where: str, own: dict[str, schema.Parser]
                      ) -> tuple[MappingProxyType[str, Any], dict[str, tuple[Node, Any]]]:
        """The per-user settings a level sets, and its own keys (`members`, `reason`...)."""
        settings: dict[str, Any] = {}
        own_values: dict[str, tuple[Node, Any]] = {}
        for key, key_node, value_node in self.entries(node, where):
            if key in schema.SCALAR_PARSERS:
                ok, value = self.parsed(value_node, schema.SCALAR_PARSERS[key], f"{where}.{key}")
                if ok:
                    settings[key] = value
                    self.lines[f"{where}.{key}"] = line_of(key_node)
            elif key in LIFECYCLE_KEYS:
                settings.update(self.lifecycle(value_node, f"{where}.{key}", key))
            elif key in own:
                ok, value = self.parsed(value_node, own[key], f"{where}.{key}")
                if ok:
                    own_values[key] = (key_node, value)
            else:
                known = list(own) + list(schema.SCALAR_PARSERS) + list(LIFECYCLE_KEYS)
                self.unknown(key_node, key, where, known)
        self.check_memory_order(node, where, settings)
        return MappingProxyType(settings), own_values

    def lifecycle(self, node: Node, where: str, key: str) -> dict[str, Any]:
        """`30m` for every kind, or `{docker: 30m, ds01: null}` for some kinds."""
        if not isinstance(node, MappingNode):
            ok, value = self.parsed(node, schema.LIFECYCLE_PARSER, where)
            return {f"{key}.{kind}": value for kind in KINDS} if ok else {}
        out: dict[str, Any] = {}
        for kind, kind_node, value_node in self.entries(node, where):
            if kind not in KINDS:
                self.problem(kind_node, f"{where}: unknown container kind {kind!r} (kinds: {', '.join(KINDS)})")
                continue
            ok, value = self.parsed(value_node, schema.LIFECYCLE_PARSER, f"{where}.{kind}")
            if ok:
                out[f"{key}.{kind}"] = value
        return out

    def check_memory_order(self, node: Node | None, where: str, settings: dict[str, Any]) -> None:
        high, high_max = settings.get("memory_high"), settings.get("memory_max")
        if node is not None and high is not None and high_max is not None and high > high_max:
            self.problem(node, f"{where}: memory_high is above memory_max, so it would never throttle")

    def groups(self, node: Node | None) -> dict[str, Group]:
        own = {"members": self.member_list, "unix_group": schema.name}
        groups: dict[str, Group] = {}
        member_of: dict[str, tuple[str, int]] = {}
        for group_name, key_node, value_node in self.entries(node, "groups"):
            where = f"groups.{group_name}"
            settings, own_values = self.user_settings(value_node, where, own)
            members_node, members = own_values.get("members", (None, ()))
            for user in members:
                if user in member_of:
                    other, other_line = member_of[user]
                    self.problem(members_node, f"{where}.members: user {user!r} is already in group "
                                               f"{other!r} (line {other_line}); a user belongs to one group")
                else:
                    member_of[user] = (group_name, line_of(members_node))
            unix_node, unix_group = own_values.get("unix_group", (None, None))
            groups[group_name] = Group(
                name=group_name, members=tuple(members), unix_group=unix_group, settings=settings,
                line=line_of(key_node), unix_group_line=line_of(unix_node) if unix_node else 0)
        return groups

    def reservation(self, user: str, key_node: Node, own: dict[str, tuple[Node, Any]]) -> Reservation | None:
        """`reserved_gpus` with `reservation_start` and `reservation_end`: all three or none."""
        keys = ("reserved_gpus", "reservation_start", "reservation_end")
        present = [k for k in keys if k in own]
        if not present:
            return None
        if len(present) != 3:
            missing = ", ".join(k for k in keys if k not in own)
            self.problem(key_node, f"user_overrides.{user}: a reservation needs {missing} too")
            return None
        start, end = own["reservation_start"][1], own["reservation_end"][1]
        if end <= start:
            self.problem(own["reservation_end"][0], f"user_overrides.{user}.reservation_end: before its start")
            return None
        return Reservation(user, own["reserved_gpus"][1], start, end, own.get("reason", (None, ""))[1])

    def member_list(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list of user names, not {value!r}")
        users = tuple(schema.name(v) for v in value)
        dupes = sorted({u for u in users if users.count(u) > 1})
        if dupes:
            raise ValueError(f"listed twice: {', '.join(dupes)}")
        return users

    def default_group(self, node: Node | None, groups: dict[str, Group]) -> str:
        if node is None:
            if groups:
                self.problems.append(ConfigProblem(self.path, 1, "default_group is missing: say which "
                                                   "group users listed nowhere belong to"))
            return "default"
        ok, value = self.parsed(node, schema.name, "default_group")
        if ok and groups and value not in groups:
            self.problem(node, f"default_group: no group named {value!r} (groups: {', '.join(groups)})")
        return value if ok else "default"

    def overrides(self, node: Node | None, groups: dict[str, Group]) -> dict[str, Override]:
        own = {"reason": schema.text, "expires": schema.date, "group": schema.name,
               "reserved_gpus": schema.device_list, "reservation_start": schema.timestamp,
               "reservation_end": schema.timestamp}
        overrides: dict[str, Override] = {}
        for user, key_node, value_node in self.entries(node, "user_overrides"):
            where = f"user_overrides.{user}"
            settings, own_values = self.user_settings(value_node, where, own)
            if "reason" not in own_values:
                self.problem(key_node, f"{where}: needs a reason (who approved it, and why)")
            group_node, group = own_values.get("group", (None, None))
            if group is not None and group not in groups:
                self.problem(group_node, f"{where}.group: no group named {group!r}")
            listed_in = [g.name for g in groups.values() if user in g.members]
            if group is not None and listed_in and listed_in[0] != group:
                self.problem(group_node, f"{where}.group: {user!r} is listed as a member of "
                                         f"group {listed_in[0]!r}; say it in one place")
            overrides[user] = Override(
                user=user, reason=own_values.get("reason", (None, ""))[1],
                expires=own_values.get("expires", (None, None))[1], group=group,
                settings=settings, line=line_of(key_node),
                reservation=self.reservation(user, key_node, own_values))
        return overrides
