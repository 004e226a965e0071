#!/bin/sh
# fhir-xml-check.sh - the committed FHIR XML test data is what
# tools/fhir_json2xml.py makes of the JSON (no drift), and every file is
# valid against the R4 XSD (tests/data/fhir/xsd/fhir-single.xsd). Skips (77)
# when xmllint or python3 is missing.
set -eu
data="$top_srcdir/tests/data/fhir"
command -v xmllint >/dev/null 2>&1 || { echo "SKIP: xmllint not found (Debian: libxml2-utils)"; exit 77; }
py=${PYTHON3:-python3}
command -v "$py" >/dev/null 2>&1 || { echo "SKIP: python3 not found"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" "$top_srcdir/tools/fhir_json2xml.py" --xsd "$data/xsd" --outdir "$tmp" "$data"/json/*.json
fail=0
n=0
for j in "$data"/json/*.json; do
    b=$(basename "$j" .json)
    if ! cmp -s "$tmp/$b.xml" "$data/xml/$b.xml"; then
        echo "FAIL: $data/xml/$b.xml is stale: regenerate with tools/fhir_json2xml.py"
        fail=1
    fi
    n=$((n + 1))
done
# One xmllint run compiles the 2.6 MB schema once for all files.
if ! xmllint --noout --schema "$data/xsd/fhir-single.xsd" "$data"/xml/*.xml 2>"$tmp/log"; then
    cat "$tmp/log"
    fail=1
fi
grep -c ' validates$' "$tmp/log" | sed 's/$/ XML files valid against fhir-single.xsd/'
echo "checked $n JSON->XML conversions"
exit $fail
