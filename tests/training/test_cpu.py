"""A busy machine is noticed: the load other processes put on the cores, measured from /proc/stat, and the
warning it gives when torch's threads would oversubscribe them."""
import subprocess
import sys

import pytest

from training.cpu import busy_message, other_load


def test_the_warning_names_the_cause_and_the_remedy():
    assert busy_message(0.2, threads=2, cores=2) is None                 # a quiet 2-core machine
    assert busy_message(3.0, threads=1, cores=2) is None                 # one thread cannot contend with itself
    assert busy_message(4.0, threads=8, cores=16) is None
    message = busy_message(1.0, threads=2, cores=2)
    assert "1.0 of its 2 cores" in message and "--set run.threads=1" in message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_another_busy_process_is_measured():
    quiet = other_load(0.5)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = other_load(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy - quiet > 0.5, (quiet, busy)        # one spinning process: about one core more
