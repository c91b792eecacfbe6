"""`ds01 run`'s reading of its arguments: --gpus is docker run's option, never the command's."""

from __future__ import annotations

import pytest

from ds01d.cli.ds01_run import split_gpus


@pytest.mark.parametrize("argv,gpus,rest", [
    (["--gpus", "1", "img"], "1", ["img"]),
    (["--gpus=2", "-it", "img", "sh"], "2", ["-it", "img", "sh"]),
    (["-it", "--rm", "--gpus", "1", "img"], "1", ["-it", "--rm", "img"]),
    # options with values: the value is not the image, and may look like anything
    (["-e", "--gpus", "--gpus", "1", "img"], "1", ["-e", "--gpus", "img"]),
    (["--name", "x", "-v", "/a:/b", "--gpus", "1", "img"], "1", ["--name", "x", "-v", "/a:/b", "img"]),
    (["-eFOO=1", "-p8080:80", "--gpus", "1", "img"], "1", ["-eFOO=1", "-p8080:80", "img"]),
    (["-dit", "--gpus", "1", "img"], "1", ["-dit", "img"]),
    # after the image, --gpus is the container's own argument
    (["img", "python", "train.py", "--gpus", "4"], None, ["img", "python", "train.py", "--gpus", "4"]),
    (["--gpus", "1", "img", "train", "--gpus=4"], "1", ["img", "train", "--gpus=4"]),
    (["--", "img", "--gpus", "4"], None, ["--", "img", "--gpus", "4"]),
    (["-w", "/work", "img", "--gpus", "3"], None, ["-w", "/work", "img", "--gpus", "3"]),
])
def test_gpus_is_read_from_docker_run_options_only(argv, gpus, rest):
    assert split_gpus(argv) == (gpus, rest)
