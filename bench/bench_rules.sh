#!/bin/sh
# bench_rules.sh - runs the rule-evaluation benchmark (bench/bench_rules.c).
exec "$top_builddir/bench/bench_rules" "$@"
