import pytest
from hypothesis import given, strategies as st

from ds01d.config.quantities import (format_cpus, format_duration, format_size, parse_cpus, parse_duration,
                              parse_size)


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("30m", 1800), ("48h", 172800), ("7d", 604800), ("1w", 604800),
    ("1h30m", 5400), (" 2h ", 7200), ("0s", 0), ("30M", 1800),
])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text,hint", [
    ("30", "no unit"), ("-5m", "bad duration"), ("5 minutes", "bad duration"), ("", "empty"),
    ("1.5h", "bad duration"), ("m30", "bad duration"), ("30m1", "bad duration"),
])
def test_bad_durations_say_how_to_write_one(text, hint):
    with pytest.raises(ValueError, match=hint):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**8))
def test_formatted_durations_parse_back(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text,size", [
    ("32G", 32 * 2**30), ("32g", 32 * 2**30), ("512M", 512 * 2**20), ("1.5G", 1536 * 2**20),
    ("2T", 2 * 2**40), ("4096", 4096), (4096, 4096), ("64k", 65536), ("8GiB", 8 * 2**30), ("8gb", 8 * 2**30),
])
def test_sizes_parse(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("value", ["-1G", -5, "32X", "G", "lots", True])
def test_bad_sizes_are_refused(value):
    with pytest.raises(ValueError):
        parse_size(value)


@given(st.integers(min_value=0, max_value=2**50))
def test_formatted_sizes_parse_back(n):
    assert parse_size(format_size(n)) == n


def test_cpus():
    assert parse_cpus(8) == 8.0 and parse_cpus(0.5) == 0.5
    assert format_cpus(8.0) == "8" and format_cpus(0.5) == "0.5"
    for bad in (0, -1, "8", True, None):
        with pytest.raises(ValueError):
            parse_cpus(bad)
