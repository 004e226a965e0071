#!/bin/sh
# test_gen_tables.sh - the committed tables (rules/tables/*.tsv) must be what
# tools/gen-tables.py makes from the official data. With the data present
# ($SPINEGATE_DATA, else $top_srcdir/../shared/data) the generator runs into
# a temp dir and the output is diffed with the committed files. Without it
# the test says so and checks each committed file's own header and body
# checksum instead.
set -eu
top=${top_srcdir:-.}
py=${PYTHON3:-python3}
data=${SPINEGATE_DATA:-$top/../shared/data}
tables=$top/rules/tables

if [ -d "$data/icd10cm" ] && [ -d "$data/msdrg" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$py" "$top/tools/gen-tables.py" "$data" "$tmp"
    for f in "$tmp"/*.tsv; do
        name=$(basename "$f")
        if ! cmp -s "$f" "$tables/$name"; then
            echo "FAIL: rules/tables/$name differs from what tools/gen-tables.py makes from $data"
            diff "$tables/$name" "$f" | head -20
            echo "run: make rules-tables (or tools/gen-tables.py DATA_DIR rules/tables) and commit"
            exit 1
        fi
        echo "ok: rules/tables/$name matches the generator's output from $data"
    done
    for f in "$tables"/*.tsv; do
        [ -f "$tmp/$(basename "$f")" ] || { echo "FAIL: $f is not made by the generator"; exit 1; }
    done
    exit 0
fi

echo "note: no official data at $data: checking the committed files' headers and checksums only"
"$py" - "$tables" <<'PYEOF'
import os, sys
d = sys.argv[1]
files = [f for f in sorted(os.listdir(d)) if f.endswith(".tsv")]
if not files:
    sys.exit("FAIL: no table files in %s" % d)
for name in files:
    raw = open(os.path.join(d, name), "rb").read()
    lines = raw.split(b"\n")
    head = {}
    i = 0
    while i < len(lines) and lines[i].startswith(b"#"):
        k, _, v = lines[i][1:].partition(b"\t")
        head[k.decode()] = v.decode()
        i += 1
    body = b"\n".join(lines[i:])
    for k in ("spinegate-tables", "fiscal_year", "valid_from", "valid_to", "body_lines", "body_fnv1a64"):
        if k not in head:
            sys.exit("FAIL: %s: header lacks %s" % (name, k))
    h = 0xcbf29ce484222325
    for b in body:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    if "%016x" % h != head["body_fnv1a64"]:
        sys.exit("FAIL: %s: body checksum does not match its header" % name)
    if body.count(b"\n") != int(head["body_lines"]):
        sys.exit("FAIL: %s: body line count does not match its header" % name)
    print("ok: %s (%s, %s..%s) header and checksum" % (name, head["fiscal_year"], head["valid_from"], head["valid_to"]))
PYEOF
