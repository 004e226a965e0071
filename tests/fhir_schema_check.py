#!/usr/bin/env python3
"""fhir_schema_check.py SCHEMA FILE... - validates FHIR JSON files against the
official R4 JSON schema (fhir.schema.json, draft-06). Exits 77 (skip) when the
jsonschema module is missing (Debian: python3-jsonschema), 1 on any invalid file."""
import json
import sys

try:
    import jsonschema
except ImportError:
    print('SKIP: python3 jsonschema module not found (Debian: python3-jsonschema)')
    sys.exit(77)


def add_401(node):
    """The redistributed schema was generated for 4.0.0: its version enums
    lack "4.0.1", which every R4 server must state. Adds it, nothing else."""
    n = 0
    if isinstance(node, dict):
        e = node.get('enum')
        if isinstance(e, list) and '4.0.0' in e and '4.0.1' not in e:
            e.append('4.0.1')
            n += 1
        for v in node.values():
            n += add_401(v)
    elif isinstance(node, list):
        for v in node:
            n += add_401(v)
    return n


def main():
    with open(sys.argv[1], encoding='utf-8') as f:
        schema = json.load(f)
    print('note: added "4.0.1" to %d version enums of the 4.0.0-generated schema' % add_401(schema))
    validator = jsonschema.Draft6Validator(schema)
    bad = 0
    for path in sys.argv[2:]:
        with open(path, encoding='utf-8') as f:
            doc = json.load(f)
        rt = doc.get('resourceType')
        # Validating against the one resource definition gives readable
        # errors; the whole-schema oneOf would only say "not valid under any".
        sub = dict(schema)
        sub.pop('oneOf', None)
        sub['$ref'] = '#/definitions/%s' % rt
        errors = list(jsonschema.Draft6Validator(sub).iter_errors(doc)) if rt in schema['definitions'] else ['unknown resourceType %r' % rt]
        if not errors:
            errors = [e for e in validator.iter_errors(doc)]
        if errors:
            bad += 1
            print('INVALID %s' % path)
            for e in errors[:5]:
                print('  %s' % (getattr(e, 'message', e),))
        else:
            print('valid %s (%s)' % (path, rt))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
