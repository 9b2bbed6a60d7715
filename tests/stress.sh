#!/usr/bin/env bash
# Run a pytest selection several times with busy loops beside it, to shake out tests that
# fail only on a loaded machine (CI runs on 2 shared cores).
#
#   tests/stress.sh [-n RUNS] [-k BUSY_LOOPS] [PYTEST ARGS...]
#   tests/stress.sh -n 10 -k 2 tests/service/test_openapi.py tests/service
#
# Defaults: 10 runs, 2 busy loops, all of tests/. The loops are stopped on exit (also
# on Ctrl-C or an error). Exits 1 if any run failed, and says which runs did.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10
loops=2
while getopts "n:k:h" opt; do
    case "$opt" in
        n) runs=$OPTARG ;;
        k) loops=$OPTARG ;;
        h) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "usage: tests/stress.sh [-n RUNS] [-k BUSY_LOOPS] [PYTEST ARGS...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- tests
case "$runs$loops" in
    *[!0-9]*) echo "stress: -n and -k take whole numbers" >&2; exit 2 ;;
esac

python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3

busy=()
stop_loops() {
    local pid
    for pid in "${busy[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${busy[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    busy=()
}
trap stop_loops EXIT
trap 'exit 130' INT TERM

for _ in $(seq 1 "$loops"); do
    "$python" -c 'while True: pass' &
    busy+=("$!")
done
echo "stress: $runs run(s) of pytest $* beside $loops busy loop(s) (pids ${busy[*]:-none})" >&2

failed=()
for run in $(seq 1 "$runs"); do
    echo "== stress run $run/$runs" >&2
    if ! "$python" -m pytest -q -p no:cacheprovider "$@"; then
        failed+=("$run")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "stress: ${#failed[@]} of $runs run(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "stress: all $runs run(s) passed" >&2
