#!/bin/sh
# fhir-out-check.sh - every kind of FHIR writer output (tests/fhir_out_dump)
# is valid: JSON against the official R4 JSON schema (python3-jsonschema),
# XML against the R4 XSD (xmllint). Skips (77) when neither tool exists.
set -eu
data="$top_srcdir/tests/data/fhir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$top_builddir/tests/fhir_out_dump" "$tmp"
fail=0
ran=0
py=${PYTHON3:-python3}
if "$py" -c 'import jsonschema' 2>/dev/null; then
    "$py" "$top_srcdir/tests/fhir_schema_check.py" "$data/schema/fhir.schema.json" "$tmp"/*.json "$data"/json/spine-*.json || fail=1
    ran=1
else
    echo "SKIP part: python3 jsonschema not found (Debian: python3-jsonschema)"
fi
if command -v xmllint >/dev/null 2>&1; then
    xmllint --noout --schema "$data/xsd/fhir-single.xsd" "$tmp"/*.xml || fail=1
    ran=1
else
    echo "SKIP part: xmllint not found (Debian: libxml2-utils)"
fi
[ $ran = 1 ] || exit 77
exit $fail
