"""The NSM binding's cost per call, and the simulated NSM's documents per second.

1. Simulated documents per second, against one bare ES384 signature over the same
   payload bytes (a fresh P-384 key, ``attested._cose.sign_es384``), measured in the
   same run. The ratio is what the simulator adds on top of the signature it cannot
   avoid: building and encoding the payload, checking the chain, locking.
2. The binding's marshalling cost per call, against the libnsm stand-in that the tests
   compile (tests/nsm/stub): ``NsmDevice`` calls (argument checks, buffers, the
   device lock, error mapping, typed results) against bare ctypes calls of the same
   stub functions with preallocated buffers and the same prototypes. The stub does
   almost no work, so this isolates the Python side.

Rounds alternate between ours and the baseline, and the median round is reported:
these machines are noisy.

Usage: python bench/nsm_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for the stub's build helper in tests/

import nsm  # noqa: E402
from attested import _cose  # noqa: E402
from attested.simulator import SimulatedNsm  # noqa: E402
from nsm import _lib  # noqa: E402
from tests.nsm.stub import Stub, StubUnavailable, build_stub  # noqa: E402


def _per_call(function: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - start) / count


def _compare(
    ours: Callable[[], object], baseline: Callable[[], object], rounds: int, count: int
) -> tuple[float, float, float]:
    """Median seconds per call of each, and the median of the per-round ratios."""
    _per_call(ours, max(1, count // 10))  # warm up
    _per_call(baseline, max(1, count // 10))
    ours_times, base_times, ratios = [], [], []
    for _ in range(rounds):
        o = _per_call(ours, count)
        b = _per_call(baseline, count)
        ours_times.append(o)
        base_times.append(b)
        ratios.append(o / b)
    return statistics.median(ours_times), statistics.median(base_times), statistics.median(ratios)


def bench_simulator(rounds: int) -> None:
    logging.getLogger("attested.simulator").setLevel(logging.ERROR)  # the start warning
    sim = SimulatedNsm()
    nonce, public_key = os.urandom(32), os.urandom(294)
    document = sim.get_attestation_document(nonce=nonce, public_key=public_key)
    cose = _cose.parse_sign1(document, max_size=len(document))
    protected, payload = cose.protected, cose.payload
    key = ec.generate_private_key(ec.SECP384R1())
    ours, base, ratio = _compare(
        lambda: sim.get_attestation_document(nonce=nonce, public_key=public_key),
        lambda: _cose.sign_es384(key, protected, payload),
        rounds,
        200,
    )
    print(f"simulated NSM ({len(document)}-byte documents):")
    print(f"  documents per second:          {1 / ours:8.0f}  ({ours * 1e6:.0f} us each)")
    print(f"  bare ES384 signatures / s:     {1 / base:8.0f}  ({base * 1e6:.0f} us each)")
    print(f"RATIO simulated document vs bare ES384 sign: {ratio:.2f}x the time")


def bench_binding(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="nsm-bench-") as directory:
        try:
            path = build_stub(Path(directory))
        except StubUnavailable as exc:
            print(f"binding: skipped ({exc})")
            return
        os.environ[_lib.ENV_VAR] = str(path)
        stub = Stub(path)
        stub.reset()
        stub.set_document(os.urandom(4500))
        library = _lib.load_library()  # the same prototypes the binding declares
        nonce, public_key = os.urandom(32), os.urandom(294)
        with nsm.open_device(backend="libnsm") as device:
            fd = device._backend._fd  # type: ignore[attr-defined]

            lock = ctypes.c_bool()
            pcr_buffer = (ctypes.c_uint8 * 64)()
            pcr_length = ctypes.c_uint32()

            def bare_describe_pcr() -> None:
                pcr_length.value = 64
                library.nsm_describe_pcr(fd, 16, ctypes.byref(lock), pcr_buffer, pcr_length)

            nonce_buffer = (ctypes.c_uint8 * len(nonce)).from_buffer_copy(nonce)
            key_buffer = (ctypes.c_uint8 * len(public_key)).from_buffer_copy(public_key)
            doc_buffer = (ctypes.c_uint8 * 8192)()
            doc_length = ctypes.c_uint32()

            def bare_attestation() -> None:
                doc_length.value = 8192
                library.nsm_get_attestation_doc(
                    fd, None, 0, nonce_buffer, 32, key_buffer, 294, doc_buffer, doc_length
                )

            cases = [
                ("describe_pcr(16)", lambda: device.describe_pcr(16), bare_describe_pcr),
                (
                    "get_attestation_document (4500 B)",
                    lambda: device.get_attestation_document(nonce=nonce, public_key=public_key),
                    bare_attestation,
                ),
            ]
            print("binding over the libnsm stand-in (per call):")
            for name, ours_call, bare_call in cases:
                ours, base, ratio = _compare(ours_call, bare_call, rounds, 5000)
                print(
                    f"  {name:<36} ours {ours * 1e6:6.2f} us, bare ctypes {base * 1e6:6.2f} us, "
                    f"marshalling {(ours - base) * 1e6:6.2f} us"
                )
                print(f"RATIO {name} vs bare ctypes call: {ratio:.2f}x")
        del os.environ[_lib.ENV_VAR]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bench_simulator(args.rounds)
    bench_binding(args.rounds)


if __name__ == "__main__":
    main()
