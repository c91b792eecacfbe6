"""ds01d: the watchdog daemon that makes a shared multi-user GPU server fair."""

__version__ = "0.1.0"
