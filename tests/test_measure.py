"""bench/measure.py: a child's wall time, peak RSS of its largest process and of its whole tree, timeouts."""
import subprocess
import sys
import time

from clipae.bench.measure import MiB, run_measured

PY = sys.executable
# a parent and its child each hold 60 MiB at the same time for about a second
TWO_PROCESSES = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; b = b\"x\" * (60 << 20); time.sleep(1.2)'])\n"
    "b = b'y' * (60 << 20)\n"
    "child.wait()\n"
)


def test_tree_peak_sums_the_processes_and_largest_is_one_of_them():
    run = run_measured([PY, "-c", TWO_PROCESSES], timeout=60)
    assert run.ok and not run.timed_out
    assert 60 * MiB < run.peak_rss < 110 * MiB       # one process: 60 MiB plus the interpreter
    assert run.tree_rss > 120 * MiB                   # both at once
    assert run.wall_s >= 1.2


def test_timeout_kills_the_whole_process_group():
    start = time.perf_counter()
    cmd = [PY, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; "
                     "time.sleep(60)']); time.sleep(60)"]
    run = run_measured(cmd, timeout=1.0)
    assert run.timed_out and not run.ok and run.status == -9
    assert time.perf_counter() - start < 15


def test_exit_status_and_last_line():
    run = run_measured([PY, "-c", "import sys; print('a'); print('last'); sys.exit(3)"], timeout=60)
    assert run.status == 3 and not run.ok and run.last_line == "last"
    run = run_measured([PY, "-c", "import sys; sys.exit('only on stderr')"], timeout=60)
    assert run.last_line == "only on stderr"


SAMPLER_CHECK = """
import time
from clipae.bench.measure import RSSSampler
with RSSSampler(interval=0.01) as before:
    pass
with RSSSampler(interval=0.01) as during:
    block = b"z" * (80 << 20)
    time.sleep(0.1)
print(during.peak - before.peak)
"""


def test_sampler_sees_an_allocation_of_this_process():
    # in a fresh process: the suite's own process has long passed 80 MiB above its start
    out = subprocess.run([PY, "-c", SAMPLER_CHECK], capture_output=True, text=True, timeout=60, check=True)
    assert int(out.stdout.strip()) > 70 * MiB


def test_a_small_child_of_a_big_parent_is_measured_small():
    """ru_maxrss of a child carries the parent's high-water mark across vfork/exec; VmHWM does not."""
    hold = b"h" * (300 << 20)
    run = run_measured([PY, "-c", "import time; time.sleep(0.3)"], timeout=60)
    assert len(hold) and run.ok
    assert run.peak_rss < 100 * MiB


def test_pages_shared_by_a_forked_child_count_once_in_the_tree():
    cmd = [PY, "-c", "import os, time\nb = b'f' * (100 << 20)\npid = os.fork()\ntime.sleep(1.0)\n"
                     "os._exit(0) if pid == 0 else os.waitpid(pid, 0)\n"]
    run = run_measured(cmd, timeout=60)
    assert run.ok and run.peak_rss > 100 * MiB
    assert 100 * MiB < run.tree_rss < 170 * MiB  # summed RSS would be over 200 MiB
