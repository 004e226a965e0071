#!/usr/bin/env python3
"""fhir_json2xml.py - converts FHIR R4 JSON resources to FHIR XML.

Implements the JSON<->XML representation rules of FHIR R4 (section 2.6/2.7
of the spec) for what Claim, Bundle and the resources they carry use:
primitives as `value` attributes, `_name` objects as the primitive's id and
extensions, arrays as repeated elements, resources wrapped in their container
element (`<contained><Patient>`, `<resource><Claim>`), Element.id and
Extension.url as attributes, the narrative div as inline XHTML. Element order
is read from the XSDs (fhir-single.xsd), never written by hand.

Usage: fhir_json2xml.py --xsd DIR in.json [out.xml]    (stdout when no out)
       fhir_json2xml.py --xsd DIR --outdir DIR a.json b.json ...
Standard library only.
"""
import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET

XS = '{http://www.w3.org/2001/XMLSchema}'
FHIR_NS = 'http://hl7.org/fhir'
XHTML_NS = 'http://www.w3.org/1999/xhtml'


def quoteattr(text):
    """A double-quoted attribute value; white space other than the blank is
    written as character references so attribute normalisation keeps it."""
    for a, b in (('&', '&amp;'), ('<', '&lt;'), ('>', '&gt;'), ('"', '&quot;'),
                 ('\n', '&#10;'), ('\r', '&#13;'), ('\t', '&#9;')):
        text = text.replace(a, b)
    return '"' + text + '"'


class Num(str):
    """A JSON number kept as its source text, so decimals keep their precision."""


class Schema:
    def __init__(self, path):
        root = ET.parse(path).getroot()
        self.types = {}     # name -> (base, [(elemname, type)], [attrnames])
        self.elements = {}  # top-level element name -> type
        for ct in root.findall(XS + 'complexType'):
            self.types[ct.get('name')] = self._read_type(ct)
        for el in root.findall(XS + 'element'):
            self.elements[el.get('name')] = el.get('type')
        self._flat = {}

    def _read_type(self, ct):
        base, elems, attrs = None, [], []
        ext = ct.find(XS + 'complexContent/' + XS + 'extension')
        body = ext if ext is not None else ct
        if ext is not None:
            base = ext.get('base')

        def walk(node):
            for ch in node:
                if ch.tag == XS + 'element':
                    if ch.get('ref'):
                        ref = ch.get('ref')
                        if ref == 'xhtml:div':
                            elems.append(('div', '#xhtml'))
                        else:
                            elems.append((ref, '#resource'))
                    else:
                        elems.append((ch.get('name'), ch.get('type')))
                elif ch.tag in (XS + 'sequence', XS + 'choice'):
                    walk(ch)
                elif ch.tag == XS + 'attribute':
                    attrs.append(ch.get('name'))

        walk(body)
        return base, elems, attrs

    def flat(self, tname):
        """(ordered element list, attribute names) including the base types."""
        if tname in self._flat:
            return self._flat[tname]
        if tname not in self.types:
            raise KeyError('type %s not in the XSD' % tname)
        base, elems, attrs = self.types[tname]
        if base:
            be, ba = self.flat(base)
            elems, attrs = be + elems, ba + attrs
        self._flat[tname] = (elems, attrs)
        return elems, attrs

    def is_primitive(self, tname):
        return 'value' in self.flat(tname)[1]


class Converter:
    def __init__(self, schema):
        self.s = schema
        self.out = []

    def w(self, depth, text):
        self.out.append('  ' * depth + text)

    def resource(self, obj, depth, top=False):
        rt = obj.get('resourceType')
        if not rt or rt not in self.s.elements:
            raise ValueError('unknown resourceType %r' % rt)
        xmlns = ' xmlns="%s"' % FHIR_NS if top else ''
        self.complex_body(rt, self.s.elements[rt], obj, depth, xmlns, skip=('resourceType',))

    def complex_body(self, tag, tname, obj, depth, extra_attrs='', skip=()):
        if not isinstance(obj, dict):
            raise ValueError('%s: expected an object' % tag)
        elems, attrs = self.s.flat(tname)
        order = {name: i for i, (name, _) in enumerate(elems)}
        types = dict(elems)
        attr_text = extra_attrs
        keys = []
        for k in obj:
            if k in skip or k == 'fhir_comments':
                continue
            base = k[1:] if k.startswith('_') else k
            if base in order:
                if base not in keys:
                    keys.append(base)
            elif base in attrs and not k.startswith('_'):
                attr_text += ' %s=%s' % (k, quoteattr(str(obj[k])))
            else:
                raise ValueError('%s (%s): no element %r in the XSD' % (tag, tname, k))
        keys.sort(key=lambda k: order[k])
        if not keys:
            self.w(depth, '<%s%s/>' % (tag, attr_text))
            return
        self.w(depth, '<%s%s>' % (tag, attr_text))
        for k in keys:
            self.prop(k, types[k], obj.get(k), obj.get('_' + k), depth + 1)
        self.w(depth, '</%s>' % tag)

    def prop(self, name, tname, val, ext, depth):
        vals = val if isinstance(val, list) else ([] if val is None else [val])
        exts = ext if isinstance(ext, list) else ([] if ext is None else [ext])
        n = max(len(vals), len(exts))
        for i in range(n):
            v = vals[i] if i < len(vals) else None
            e = exts[i] if i < len(exts) else None
            if tname == '#xhtml':
                self.w(depth, v)
            elif tname == 'ResourceContainer':
                self.w(depth, '<%s>' % name)
                self.resource(v, depth + 1)
                self.w(depth, '</%s>' % name)
            elif self.s.is_primitive(tname):
                self.primitive(name, tname, v, e, depth)
            else:
                self.complex_body(name, tname, v, depth)

    def primitive(self, name, tname, v, e, depth):
        attrs = ''
        if e and 'id' in e:
            attrs += ' id=%s' % quoteattr(e['id'])
        if v is not None:
            if isinstance(v, bool):
                text = 'true' if v else 'false'
            else:
                text = str(v)
            attrs += ' value=%s' % quoteattr(text)
        if e and e.get('extension'):
            self.w(depth, '<%s%s>' % (name, attrs))
            self.prop('extension', 'Extension', e['extension'], None, depth + 1)
            self.w(depth, '</%s>' % name)
        else:
            self.w(depth, '<%s%s/>' % (name, attrs))

    def convert(self, obj):
        self.out = ['<?xml version="1.0" encoding="UTF-8"?>']
        self.resource(obj, 0, top=True)
        return '\n'.join(self.out) + '\n'


def load(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f, parse_float=Num, parse_int=Num)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--xsd', required=True, help='directory holding fhir-single.xsd')
    ap.add_argument('--outdir', help='write <name>.xml for each input here')
    ap.add_argument('inputs', nargs='+')
    a = ap.parse_args()
    conv = Converter(Schema(os.path.join(a.xsd, 'fhir-single.xsd')))
    if a.outdir:
        for p in a.inputs:
            out = os.path.join(a.outdir, os.path.splitext(os.path.basename(p))[0] + '.xml')
            text = conv.convert(load(p))
            with open(out + '.tmp', 'w', encoding='utf-8') as f:
                f.write(text)
            os.replace(out + '.tmp', out)
        return 0
    text = conv.convert(load(a.inputs[0]))
    if len(a.inputs) > 1:
        with open(a.inputs[1], 'w', encoding='utf-8') as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
