"""Test doubles that ship with the package: the scenario-driven fake `pynvml`.

It lives in the package (not under tests/) because the daemon itself loads it when
`DS01D_FAKE_NVML` is set, for the box tests and for `scripts/demo`.  Production code
never imports from here otherwise.

May import: the standard library and nvidia-ml-py's `pynvml` (whose constants,
structures and error classes the fake reuses, so callers cannot tell them apart).
"""
