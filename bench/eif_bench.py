"""EIF measurement throughput against plain SHA-384 over the same file, and peak memory.

Baseline (measured in the same run, alternating rounds, median reported): read the EIF
file front to back into a 1 MiB buffer and feed every byte to one ``hashlib.sha384``.
Ours: ``attested.eif.read_eif`` on the same file, which computes PCR0, PCR1, PCR2, the
CRC-32 and the section checks. It has more work than the baseline (the application
ramdisk is hashed twice, for PCR0 and PCR2, plus the CRC), so it is run with
``parallel=True`` (two hashing threads; the figure that matters) and, for reference,
sequentially. Target: ours >= 0.9x the baseline throughput.

Memory: tracemalloc peak (Python allocations, which is where buffers live) and the growth
of the process's peak RSS while measuring a sparse 1 GiB EIF. Target: < 64 MiB.

The synthetic image has nitro-cli's layout: a 6 MiB kernel, cmdline, metadata, a 4 MiB
bootstrap ramdisk and an application ramdisk for the rest (random data, repeated).

Usage: python bench/eif_bench.py [--size-mib N] [--rounds N] [--no-gib]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from attested.eif import SectionType, read_eif
from attested.eif._build import Pattern, Zeros, write_eif

MIB = 1 << 20
METADATA = (
    b'{"ImageName":"bench","ImageVersion":"1","BuildMetadata":{"BuildTime":"",'
    b'"BuildTool":"bench","BuildToolVersion":"0","OperatingSystem":"","KernelVersion":""}}'
)


def build(path: Path, size: int, *, sparse: bool) -> None:
    block = os.urandom(MIB)
    app = size - 10 * MIB
    with path.open("w+b") as handle:
        write_eif(
            handle,
            [
                (SectionType.KERNEL, Pattern(block, 6 * MIB)),
                (SectionType.CMDLINE, b"reboot=k panic=30 pci=off nomodules console=ttyS0"),
                (SectionType.METADATA, METADATA),
                (SectionType.RAMDISK, Pattern(block[::-1], 4 * MIB)),
                (SectionType.RAMDISK, Zeros(app) if sparse else Pattern(block, app)),
            ],
        )


def baseline(path: Path) -> float:
    start = time.perf_counter()
    digest, buffer = hashlib.sha384(), memoryview(bytearray(MIB))
    with path.open("rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(buffer[:count])
    digest.digest()
    return time.perf_counter() - start


def ours(path: Path, *, parallel: bool) -> float:
    start = time.perf_counter()
    with path.open("rb", buffering=0) as handle:
        image = read_eif(handle, parallel=parallel)
    assert image.intact
    return time.perf_counter() - start


def scaling() -> float:
    """How much faster two threads hash 2 x 64 MiB than one thread (2.0: two free cores)."""
    block = memoryview(bytes(MIB))

    def work() -> None:
        digest = hashlib.sha384()
        for _ in range(64):
            digest.update(block)

    start = time.perf_counter()
    work()
    work()
    serial = time.perf_counter() - start
    threads = [threading.Thread(target=work) for _ in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return serial / (time.perf_counter() - start)


def memory(path: Path, *, parallel: bool) -> tuple[float, float, float]:
    """Seconds, tracemalloc peak MiB and peak-RSS growth MiB for one measurement."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        seconds = ours(path, parallel=parallel)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return seconds, peak / MIB, (after - before) / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="throughput image size")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-gib", action="store_true", help="skip the 1 GiB memory run")
    args = parser.parse_args()
    if args.size_mib < 16:
        parser.error("--size-mib must be at least 16")

    with tempfile.TemporaryDirectory(prefix="eif-bench-") as tmp:
        if not args.no_gib:
            # First, so that the RSS high-water mark is not already raised by other phases.
            big = Path(tmp) / "1gib.eif"
            build(big, 1 << 30, sparse=True)
            baseline(big)  # the first read of a sparse file pays for its holes; not ours to time
            seconds, peak, rss = memory(big, parallel=True)
            print(
                f"1 GiB sparse EIF, parallel:   {seconds:5.2f} s, tracemalloc peak "
                f"{peak:5.1f} MiB, peak RSS growth {rss:5.1f} MiB (target < 64 MiB)"
            )
            seconds, peak, rss = memory(big, parallel=False)
            print(
                f"1 GiB sparse EIF, sequential: {seconds:5.2f} s, tracemalloc peak "
                f"{peak:5.1f} MiB, peak RSS growth {rss:5.1f} MiB"
            )
            big.unlink()

        path = Path(tmp) / "bench.eif"
        size = args.size_mib * MIB
        build(path, size, sparse=False)
        ours(path, parallel=True)  # warm the page cache
        base_times, par_times, seq_times = [], [], []
        for _ in range(args.rounds):
            base_times.append(baseline(path))
            par_times.append(ours(path, parallel=True))
            seq_times.append(ours(path, parallel=False))
        actual = path.stat().st_size / 1e6
        base = actual / statistics.median(base_times)
        par = actual / statistics.median(par_times)
        seq = actual / statistics.median(seq_times)
        print(f"{args.size_mib} MiB EIF, median of {args.rounds} alternating rounds (MB/s):")
        print(f"  baseline sha384 over the file: {base:7.0f}")
        print(
            f"  read_eif parallel:             {par:7.0f}  ratio {par / base:.2f}x (target >= 0.9x)"
        )
        print(f"  read_eif sequential:           {seq:7.0f}  ratio {seq / base:.2f}x")
        print(
            f"  cores available: {len(os.sched_getaffinity(0))}, load average "
            f"{os.getloadavg()[0]:.2f}, two-thread SHA-384 scaling now {scaling():.2f}x "
            "(2.0 = two free cores; parallel mode cannot beat the baseline without them)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
