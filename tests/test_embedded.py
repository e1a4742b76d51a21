"""The embedded runtime's readiness wait: it fails fast and says why when a server dies."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamrec.embedded import RuntimeStartError, wait_ready


def test_a_server_that_exits_is_reported_with_its_code_and_hint():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    proc.wait()
    with pytest.raises(RuntimeStartError, match=r"^probe exited with code 3; see probe\.log$"):
        wait_ready("probe", proc, lambda: False, 5.0, "see probe.log")


def test_a_server_that_never_answers_times_out():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(RuntimeStartError, match=r"^probe not ready after 0.2s$"):
            wait_ready("probe", proc, lambda: False, 0.2)
    finally:
        proc.kill()
        proc.wait()


def test_the_wait_ends_once_ready_holds():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    answers = iter([False, False, True])
    try:
        wait_ready("probe", proc, lambda: next(answers), 5.0)
    finally:
        proc.kill()
        proc.wait()
    assert next(answers, "exhausted") == "exhausted"
