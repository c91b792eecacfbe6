"""ds01d's configuration: the model, its loader, and checks against the host."""

from .loader import ConfigError, ConfigProblem, load_config, parse_config
from .model import (
    BUILTIN_DEFAULTS, DEFAULT_PATH, KINDS, LIFECYCLE_KEYS, SCALAR_KEYS, SETTING_NAMES,
    Config, DaemonSettings, ForeignDevicePolicy, GpusAllPolicy, Group, OutsideSlicePolicy, Override, Policies,
    Reservation, UnownedPolicy,
)

__all__ = [
    "BUILTIN_DEFAULTS", "DEFAULT_PATH", "KINDS", "LIFECYCLE_KEYS", "SCALAR_KEYS", "SETTING_NAMES",
    "Config", "ConfigError", "ConfigProblem", "DaemonSettings", "ForeignDevicePolicy", "GpusAllPolicy", "Group",
    "Reservation",
    "OutsideSlicePolicy", "Override", "Policies", "UnownedPolicy", "load_config", "parse_config",
]
