"""The machine line of every benchmark section records what a reader needs to trust a time."""

from __future__ import annotations

import os
import re

import torch  # noqa: F401  (imported so that the line reports torch and its threads)

from cram.core.benchlog import machine_description


def test_machine_line_names_threads_and_load():
    line = machine_description()
    assert f"{os.cpu_count()} cores" in line
    assert re.search(r"torch \S+, \d+ thread\(s\) in the writing process", line), line
    assert re.search(r"load \d+\.\d\d / \d+\.\d\d / \d+\.\d\d \(1 / 5 / 15 min\)", line), line
