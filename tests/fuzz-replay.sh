#!/bin/sh
# fuzz-replay.sh - replays every fuzz target's seed corpus (and any crash
# inputs kept there) as plain regression input. Run by `make check`.
set -eu
fail=0
count=0
for t in $FUZZ_TARGETS; do
    name=$(basename "$t" | sed 's/^fuzz_//')
    dir="$top_srcdir/fuzz/corpus/$name"
    [ -d "$dir" ] || { echo "no seed corpus for $t at $dir"; fail=1; continue; }
    "$top_builddir/$t" "$dir" || { echo "FAIL: $t"; fail=1; }
    count=$((count + 1))
done
echo "fuzz corpora replayed for $count targets"
exit $fail
