#!/bin/sh
# test_gen_excludes1.sh - the committed Excludes1 rule cases
# (tests/data/rules/excludes1-*.case) must be what tools/gen-excludes1-cases.py
# makes from the committed rule pack and FY2026 table: a row added, changed
# or removed in rules/spine-rules.json without regenerating its cases fails
# here. The cases themselves are run by test_eval (C) and by
# tests/integration/test_formats.py (HL7 v2, FHIR JSON and XML).
set -eu
top=${top_srcdir:-.}
py=${PYTHON3:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" "$top/tools/gen-excludes1-cases.py" "$top/rules/spine-rules.json" \
    "$top/rules/tables/spine-fy2026.tsv" "$tmp"
for name in excludes1-rows.case excludes1-no-false-reject.case; do
    if ! cmp -s "$tmp/$name" "$top/tests/data/rules/$name"; then
        echo "FAIL: tests/data/rules/$name differs from what tools/gen-excludes1-cases.py makes"
        diff "$top/tests/data/rules/$name" "$tmp/$name" | head -20
        echo "run: make rules-cases (or tools/gen-excludes1-cases.py) and commit"
        exit 1
    fi
    echo "ok: tests/data/rules/$name matches the generator's output"
done
