#!/bin/sh
# fuzz-all.sh SECONDS - runs every libFuzzer target in ./fuzz (a build made
# with --enable-fuzz) for SECONDS each, two at a time, starting from a copy
# of its seed corpus. Exits non-zero if any target finds a crash, a leak or
# undefined behaviour; the offending input is left in fuzz/<name>-out/.
set -u
secs=${1:-60}
src=$(cd "$(dirname "$0")/.." && pwd)
status=0
run_one() {
    t=$1
    name=$(basename "$t" | sed 's/^fuzz_//')
    out="fuzz/$name-out"
    mkdir -p "$out/corpus"
    cp -r "$src/fuzz/corpus/$name/." "$out/corpus/" 2>/dev/null || true
    dict=""
    [ -f "$src/fuzz/dict/$name.dict" ] && dict="-dict=$src/fuzz/dict/$name.dict"
    if "$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/" $dict "$out/corpus" >"$out/log" 2>&1; then
        echo "fuzz $name: ok ($(grep -h 'stat::number_of_executed_units' "$out/log" | awk '{print $2}') execs in ${secs}s)"
    else
        echo "fuzz $name: FAILED, see build-fuzz/$out/log"
        tail -40 "$out/log"
        return 1
    fi
}
set -- fuzz/fuzz_*
pids=""
for t in "$@"; do
    case "$t" in *.o|*.c) continue ;; esac
    [ -x "$t" ] || continue
    run_one "$t" &
    pids="$pids $!"
    if [ "$(echo $pids | wc -w)" -ge 2 ]; then
        for p in $pids; do wait "$p" || status=1; done
        pids=""
    fi
done
for p in $pids; do wait "$p" || status=1; done
exit $status
