"""ds01d's configuration: the model (`model`), one parser per key (`schema`), the YAML
loader with file:line problems (`loader`), checks against the host (`checks`), and the
durations, sizes and CPU counts admins write (`quantities`).

The bottom of the package: everything may import it, it imports nothing of ds01d's.
"""

from .loader import ConfigError, ConfigProblem, load_config, parse_config
from .model import (
    ACCESS_KEYS, BUILTIN_DEFAULTS, DEFAULT_PATH, KINDS, LIFECYCLE_KEYS, SCALAR_KEYS, SETTING_NAMES,
    Config, DaemonSettings, ForeignDevicePolicy, GpusAllPolicy, Group, OutsideSlicePolicy, Override, Policies,
    Reservation, UnownedPolicy,
)

__all__ = [
    "ACCESS_KEYS", "BUILTIN_DEFAULTS", "DEFAULT_PATH", "KINDS", "LIFECYCLE_KEYS", "SCALAR_KEYS", "SETTING_NAMES",
    "Config", "ConfigError", "ConfigProblem", "DaemonSettings", "ForeignDevicePolicy", "GpusAllPolicy", "Group",
    "Reservation",
    "OutsideSlicePolicy", "Override", "Policies", "UnownedPolicy", "load_config", "parse_config",
]
