"""The malloc thresholds, judged by where glibc then puts large blocks (mallinfo2's count of
blocks in mappings of their own), in a fresh interpreter each."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dittofs_controller.runtime import allocator

# A freed 8 MiB block raises glibc's own threshold to 8 MiB; then four 1 MiB blocks.
COUNT_MAPPED_BLOCKS = """
import ctypes, sys
from dittofs_controller.runtime import allocator
if sys.argv[1] == "fixed":
    assert allocator.fix_thresholds({})
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
big = bytearray(8 << 20)
del big
before = mallinfo2().hblks
blocks = [bytearray(1 << 20) for _ in range(4)]
print(mallinfo2().hblks - before)
"""


def mapped_blocks(mode: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", COUNT_MAPPED_BLOCKS, mode],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return int(run.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_large_blocks_keep_mappings_of_their_own_after_a_larger_one_was_freed() -> None:
    assert mapped_blocks("default") == 0  # glibc raised its threshold: all from the heap
    assert mapped_blocks("fixed") == 4


def test_the_environment_of_whoever_runs_the_process_wins() -> None:
    for name in allocator.ENVIRONMENT:
        assert allocator.fix_thresholds({name: "65536"}) is False
