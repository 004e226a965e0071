#!/bin/sh
# run-tests.sh - the whole suite, as CI runs it: a -Werror build with
# `make check` and `make distcheck`, the same suite under ASan+UBSan, each
# libFuzzer target for a bounded time, and (as root) `make package-check`.
# The benchmark programs are built (not run) so that `make bench` cannot rot.
# Stops at the first failure.
set -eu
cd "$(dirname "$0")/.."
jobs=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-60}

# make check in the current build folder; when it fails, the end of each
# failing test's log is printed last, where a CI summary shows it.
check() {
    make -j"$jobs" check "$@" && return 0
    for trs in $(grep -l -E '^:test-result: (FAIL|ERROR)' /dev/null $(find . -name '*.trs')); do
        echo "== end of ${trs%.trs}.log"
        tail -n 80 "${trs%.trs}.log"
    done
    return 1
}

[ -x configure ] || autoreconf -fi

echo "== build and unit/integration tests (gcc, -Werror)"
mkdir -p build && cd build
[ -f Makefile ] || ../configure -q
make -j"$jobs" -s
make -j"$jobs" -s bench-bins
check
cd ..

echo "== the same suite under ASan+UBSan"
mkdir -p build-asan && cd build-asan
[ -f Makefile ] || ../configure -q --enable-asan --enable-ubsan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    check
cd ..

echo "== fuzzing each parser for ${FUZZ_SECONDS}s (clang, libFuzzer)"
mkdir -p build-fuzz && cd build-fuzz
[ -f Makefile ] || ../configure -q CC=clang --enable-fuzz
make -j"$jobs" -s fuzz-targets
sh ../tools/fuzz-all.sh "$FUZZ_SECONDS"
cd ..

echo "== make distcheck"
cd build && make -s distcheck >distcheck.log 2>&1 || { tail -50 distcheck.log; exit 1; }
grep -E 'archives ready|spinegate-.*tar.gz' distcheck.log | head -3
cd ..

# Root only (dpkg in a chroot); about a minute, more the first time (the
# clean Debian 12 root is made and cached).
if [ "$(id -u)" = 0 ]; then
    echo "== the Debian package: build, lintian, install in a clean root, run, purge"
    (cd build && make -s package-check)
else
    echo "== the Debian package: skipped (make package-check needs root)"
fi
echo "all checks passed"
