#!/usr/bin/env python3
"""gen-excludes1-cases.py - rule cases for every row of the reviewed Excludes1
table, generated from the rule pack and a code table so that no row goes
untested (tests/data/rules/README describes the case format).

Writes two files into OUT_DIR (default tests/data/rules):

  excludes1-rows.case          for each row, a pair where it must fire, with
                               the severity the row gives at one site, and a
                               pair where it must not (a code of the named
                               category that the row does not name, another
                               owner, or two regions);
  excludes1-no-false-reject.case
                               for each row, the pair at two different
                               regions where both sides carry one, and the
                               note's raw pointer codes that the row leaves
                               out (M48.5 with a rib or acetabulum fracture):
                               none of them may be rejected.

The expected outcome of a pair is computed here from the same data the
engine reads (rows, region axes, region words, levels), independently of
the C code, so a case fails when the engine and the reviewed table
disagree. Codes outside the tables are taken from a short list of valid
billable codes below. Output is deterministic; tests/unit/rules/
test_gen_excludes1.sh regenerates it and diffs with the committed files.

usage: gen-excludes1-cases.py [PACK] [TABLE] [OUT_DIR]
defaults: rules/spine-rules.json rules/tables/spine-fy2026.tsv tests/data/rules
"""
import json
import os
import re
import sys
import tempfile

# Valid billable codes outside the tables (FY2026), by the reference they
# stand for, and a near miss: a code of the same category that the row does
# not name. None: the row names the whole category.
OUTSIDE = {
    "Q67.5": ("Q67.5", "Q67.4"), "Q67.5-Q67.8": ("Q67.6", "Q67.4"), "I27.1": ("I27.1", "I27.0"),
    "M96.2": ("M96.2", "M96.1"), "M96.3": ("M96.3", "M96.1"), "M96.4": ("M96.4", "M96.1"),
    "M80.08": ("M80.08XA", "M80.071A"), "M80.88": ("M80.88XA", "M80.871A"),
    "M88.1": ("M88.1", "M88.0"), "Q68.0": ("Q68.0", "Q68.1"), "S16.1": ("S16.1XXA", "S16.2XXA"),
    "R29.891": ("R29.891", "R29.890"), "F45.8": ("F45.8", "F45.9"), "G24.3": ("G24.3", "G24.1"),
    "P15.2": ("P15.2", "P15.3"), "M02.3": ("M02.30", "M02.10"), "M08.1": ("M08.1", "M08.00"),
    "M84.48": ("M84.48XA", "M84.40XA"), "M84.58": ("M84.58XA", "M84.50XA"),
    "M84.68": ("M84.68XA", "M84.60XA"), "M99": ("M99.01", None), "A18.01": ("A18.01", "A18.02"),
    "M07": ("M07.60", None), "A54.41": ("A54.41", "A54.42"), "A52.11": ("A52.11", "A52.12"),
    "G95.0": ("G95.0", "G95.11"), "G98.0": ("G98.0", "G98.8"), "A52.77": ("A52.77", "A52.76"),
    "A01.05": ("A01.05", "A01.04"), "F45.41": ("F45.41", "F45.42"), "L93.2": ("L93.2", "L93.0"),
    "M79.3": ("M79.3", "M79.4"), "M35.6": ("M35.6", "M35.7"), "M79.2": ("M79.2", "M79.4"),
    "G57.0": ("G57.01", "G57.11"), "S39.012": ("S39.012A", "S39.011A"), "Q05": ("Q05.7", None),
    "Q77.2": ("Q77.2", "Q77.3"), "S28.1": ("S28.1XXA", "S28.0XXA"), "S38.3": ("S38.3XXA", "S38.1XXA"),
    "O71.6": ("O71.6", "O71.5"),
}
# Raw pointers outside the tables: codes of the pointed category that a row
# leaves out (the no-false-reject suite pairs them with the owner).
OUTSIDE_LEFT_OUT = {
    "M96": ["M96.0", "M96.1", "M96.5", "M96.69", "M96.89"],
    "M80": ["M80.011A", "M80.051A", "M80.811A"],
    "M88": ["M88.0", "M88.9"],
    "M84.4": ["M84.40XA", "M84.421A", "M84.454A"],
}


def undot(c):
    return c.replace(".", "")


def dot(c):
    return c if len(c) <= 3 else c[:3] + "." + c[3:]


class Ref:
    """A code reference as the engine reads it (rules/tables.c)."""

    def __init__(self, s):
        t = s.replace(".", "").replace(" ", "").upper()
        t = re.sub(r"-(?=$|/)", "", t)
        self.text = s
        self.fifth = None
        if "/" in t:
            t, f = t.split("/")
            self.fifth = f[2]
        lo, _, hi = t.partition("-")
        self.lo, self.hi = lo, hi or lo

    def match(self, code):
        n = len(code)
        if n < len(self.lo) or n < 3 or code[:len(self.lo)] < self.lo:
            return False
        m = min(n, len(self.hi))
        if code[:m] > self.hi[:m]:
            return False
        return not self.fifth or (n >= 5 and code[4] == self.fifth)

    def category(self):
        return self.lo[:3]


def norm(text):
    return " " + re.sub(r"[^A-Z0-9]+", " ", text.upper()).strip() + " "


class Pack:
    def __init__(self, path):
        j = json.load(open(path, encoding="utf-8"))
        self.regions = j["regions"]
        self.rid = {r["id"]: i for i, r in enumerate(self.regions)}
        self.kind = [r.get("kind", "specific") for r in self.regions]
        self.segs = [set(r.get("segments", [])) for r in self.regions]
        self.desc = [[norm(p) for p in r["description"]] for r in self.regions]
        self.levels = j["levels"]
        self.stop = [norm(w).strip() for w in j.get("level_stop_words", [])]
        self.axes = []
        for a in j.get("region_axes", []):
            refs = [Ref(c) for c in a["codes"]]
            if "region" in a:
                self.axes.append((refs, 0, self.rid[a["region"]], None))
            else:
                self.axes.append((refs, a["character"], None, {k: self.rid[v] for k, v in a["digits"].items()}))
        self.rows = []
        for i, r in enumerate(j["excludes1"]):
            self.rows.append({
                "index": i, "owner": r["owner"], "oref": Ref(r["owner"]), "note": r["note"],
                "applies": [Ref(x) for x in r.get("applies_to", [])], "excl": [Ref(x) for x in r["excludes"]],
                "same": r["relation"] == "same-region", "sev": r["severity"],
                "none": r.get("other_region") == "none"})
        rules = {r["id"]: r for r in j["rules"]}
        self.ceiling = rules["excludes1-pair"]["severity"]

    def specific(self, r):
        return r is not None and r >= 0 and self.kind[r] == "specific"

    def region_of_segments(self, segs):
        for i, r in enumerate(self.regions):
            if self.kind[i] == "specific" and self.segs[i] == segs:
                return i
        return -1

    def level_segments(self, word):
        segs, i = set(), 0
        while i < len(word):
            letter = word[i]
            i += 1
            m = re.match(r"[0-9]{1,2}", word[i:])
            if not m:
                return None
            v = int(m.group(0))
            i += len(m.group(0))
            lv = [l for l in self.levels if l["letter"] == letter and l["from"] <= v <= l["to"]]
            if not lv:
                return None
            segs.add(lv[-1]["segment"])
        return segs

    def desc_region(self, desc):
        n = norm(desc)
        found = [i for i in range(len(self.regions)) if any(p in n for p in self.desc[i])]
        words = n.split()
        segs = set()
        for k, w in enumerate(words):
            if len(w) < 2 or w[0] not in "CTLS" or not w[1].isdigit():
                continue
            s = self.level_segments(w)
            if not s or (k + 1 < len(words) and words[k + 1] in self.stop):
                continue
            segs |= s
        if segs:
            r = self.region_of_segments(segs)
            if r >= 0 and r not in found:
                found.append(r)
        if not found:
            return -1
        spec = [i for i in sorted(found) if self.kind[i] == "specific"]
        if len(spec) == 1:
            return spec[0]
        if spec:
            u = set()
            for i in spec:
                u |= self.segs[i]
            return self.region_of_segments(u)
        return sorted(found)[0]


class Table:
    def __init__(self, path, pack):
        self.codes = {}   # undotted -> (billable, desc)
        self.notes = []   # (owner ref text, type, refs, text)
        seven = set()
        for line in open(path, encoding="utf-8"):
            if line.startswith("#"):
                continue
            f = line.rstrip("\n").split("\t")
            if f[0] == "C":
                self.codes[f[1]] = (f[2] == "1", f[3])
            elif f[0] == "N":
                self.notes.append((f[1], f[2], f[3].split() if f[3] else [], f[4]))
                if f[2] == "sevenChrDef":
                    seven.add(f[1])
        keys = sorted(self.codes)
        self.complete = []   # (sent code undotted, table code)
        for i, c in enumerate(keys):
            leaf = i + 1 == len(keys) or not keys[i + 1].startswith(c)
            if self.codes[c][0]:
                self.complete.append((c, c))
            elif leaf and any(c.startswith(s) for s in seven):
                self.complete.append((c + "X" * (6 - len(c)) + "A", c))
        self.region = {c: pack.desc_region(d) for c, (b, d) in self.codes.items()}
        self.tc_of = {sent: tc for sent, tc in self.complete}


class Judge:
    """The expected outcome of a pair: the policy of docs/excludes1.md."""

    ORDER = {"info": 0, "warn": 1, "reject": 2}

    def __init__(self, pack, table):
        self.p, self.t = pack, table

    def region(self, code):
        for refs, ch, reg, digits in self.p.axes:
            if any(r.match(code) for r in refs):
                if not ch:
                    return reg
                if len(code) < ch:
                    return -1
                return digits.get(code[ch - 1], -1)
        tc = self.t.tc_of.get(code)
        return self.t.region[tc] if tc else -1

    def rows_of(self, code):
        if code not in self.t.tc_of:
            return []
        tc = self.t.tc_of[code]
        return [r for r in self.p.rows if r["oref"].match(tc) and
                (not r["applies"] or any(a.match(tc) for a in r["applies"]))]

    def judge(self, row, o, t):
        """(severity, outcome) or None for no finding."""
        if not row["same"]:
            return row["sev"], "same_condition" if row["sev"] == "reject" else "query"
        ro, rt = self.region(o), self.region(t)
        if not self.p.specific(ro) or not self.p.specific(rt):
            return "warn", "region_unstated"
        if ro == rt:
            return row["sev"], "same_region" if row["sev"] == "reject" else "query"
        if self.p.segs[ro] & self.p.segs[rt]:
            return "warn", "region_overlap"
        return None if row["none"] else ("warn", "other_region")

    def pair(self, a, b):
        """The finding for dx 1 = a, dx 2 = b: (owner, row, severity, outcome)
        or None, found as the engine finds it (owner in claim order, then the
        strongest row of either side, the first on a tie)."""
        def named(o, t):
            return [r for r in self.rows_of(o) if any(x.match(t) for x in r["excl"])]
        first = (a, b) if named(a, b) else (b, a) if named(b, a) else None
        if not first:
            return None
        best = None
        for o, t in (first, first[::-1]):
            for r in named(o, t):
                j = self.judge(r, o, t)
                if j and (not best or self.ORDER[j[0]] > self.ORDER[best[2]]):
                    best = (o, r, j[0], j[1])
        if best and self.ORDER[best[2]] > self.ORDER[self.p.ceiling]:
            best = (best[0], best[1], self.p.ceiling, best[3])
        return best


def candidates(table, ref):
    """Sent codes matching ref: table codes, else the outside list."""
    got = [s for s, tc in table.complete if ref.match(tc)]
    if got:
        return got
    o = OUTSIDE.get(ref.text)
    return [undot(o[0])] if o else []


class Writer:
    def __init__(self, title):
        self.out = [title]
        self.n = 0

    def case(self, name, a, b, lines):
        self.n += 1
        self.out.append("")
        self.out.append("case %s" % name)
        self.out.append("dx 1 %s" % dot(a))
        self.out.append("dx 2 %s" % dot(b))
        self.out.extend(lines)
        # both codes are valid and reportable: nothing but the pair is judged
        self.out.extend("no-finding %s" % r for r in ("code-invalid", "code-not-billable", "seventh-character"))

    def text(self):
        return "\n".join(self.out) + "\n"


def expect_lines(j, a, b, forbid_reject=False):
    r = j.pair(a, b)
    if not r:
        return ["no-finding excludes1-pair"] + (["verdict-not reject"] if forbid_reject else [])
    owner, row, sev, _ = r
    lines = ['finding excludes1-pair %s code=%s message="%s"' % (sev, dot(owner), row["note"])]
    if sev == "reject":
        lines.append("expect reject")
    else:
        lines.append("verdict-not reject")
    return lines


CURRENT_TAG = [""]


def no_reject(j, a, b, problems):
    """Expectations of a no-false-reject pair: whatever the table says short
    of a reject, and never a reject (a pair the table would reject is a
    problem of the table, reported, and the case is written to fail)."""
    lines = expect_lines(j, a, b, True)
    if "expect reject" in lines:
        problems.append("%s + %s would be rejected (%s)" % (dot(a), dot(b), CURRENT_TAG[0]))
        return ["verdict-not reject"]
    return lines


def owners_of(table, row):
    out = []
    for sent, tc in table.complete:
        if row["oref"].match(tc) and (not row["applies"] or any(a.match(tc) for a in row["applies"])):
            out.append(sent)
    return out


def fire_pair(j, table, row):
    """A pair where row decides at its full severity, preferring one where
    it is the row reported (another row may name the same pair)."""
    owners = owners_of(table, row)
    best = None
    for ref in row["excl"]:
        for b in candidates(table, ref):
            for a in owners:
                if a == b:
                    continue
                if row["same"]:
                    ra, rb = j.region(a), j.region(b)
                    if not (j.p.specific(ra) and ra == rb):
                        continue
                r = j.pair(a, b)
                if not r or r[2] != min(row["sev"], j.p.ceiling, key=Judge.ORDER.get):
                    continue
                if r[1] is row:
                    return a, b, True
                best = best or (a, b, False)
    return best if best else (None, None, False)


def miss_pair(j, table, row, fire):
    """A pair the row must not fire on: a near miss of a named category,
    else another owner of the owner's category, else two regions."""
    a, b = fire
    for ref in row["excl"]:
        cat = ref.category()
        near = [s for s, tc in table.complete if tc.startswith(cat) and not any(x.match(tc) for x in row["excl"])]
        o = OUTSIDE.get(ref.text)
        if not near and o and o[1]:
            near = [undot(o[1])]
        for c in near:
            if c != a and not j.pair(a, c):
                return a, c, "a %s code the note does not name" % cat
    cat = a[:3]
    owners = set(owners_of(table, row))
    for s, tc in table.complete:
        if tc.startswith(cat) and s not in owners and not j.pair(s, b):
            return s, b, "an owner-category code the row does not apply to"
    if row["same"] and row["none"]:
        for c in [s for s, _ in table.complete] + [b]:
            if any(x.match(j.t.tc_of.get(c, c)) for x in row["excl"]):
                rb, rc = j.region(a), j.region(c)
                if j.p.specific(rb) and j.p.specific(rc) and rb != rc and not j.pair(a, c):
                    return a, c, "at two regions"
    for s, tc in table.complete:
        if s not in owners and not j.pair(s, b):
            return s, b, "a code outside the owner"
    return None


def other_region_pairs(j, table, row):
    """Owner and named code at two different specific regions, one pair per
    distinct region pair (at most four)."""
    out, seen = [], set()
    owners = owners_of(table, row)
    for ref in row["excl"]:
        for b in candidates(table, ref):
            rb = j.region(b)
            if not j.p.specific(rb):
                continue
            for a in owners:
                ra = j.region(a)
                if not j.p.specific(ra) or ra == rb or (ra, rb) in seen or a == b:
                    continue
                seen.add((ra, rb))
                out.append((a, b))
                if len(out) >= 4:
                    return out
    return out


def left_out(table, row, note_refs):
    """Codes the note's raw pointer reaches that the row does not name, one
    per subcategory."""
    out, seen = [], set()
    for raw in note_refs:
        ref = Ref(raw)
        pool = [s for s, tc in table.complete if ref.match(tc)]
        for prefix, codes in OUTSIDE_LEFT_OUT.items():
            if ref.match(undot(prefix)) or undot(prefix).startswith(ref.lo):
                pool += [undot(c) for c in codes]
        for s in pool:
            tc = table.tc_of.get(s, s)
            if any(x.match(tc) for x in row["excl"]):
                continue
            key = tc[:4]
            if key in seen:
                continue
            seen.add(key)
            out.append(s)
    return out


def main():
    top = os.environ.get("top_srcdir", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    pack_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(top, "rules", "spine-rules.json")
    table_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(top, "rules", "tables", "spine-fy2026.tsv")
    out_dir = sys.argv[3] if len(sys.argv) > 3 else os.path.join(top, "tests", "data", "rules")
    pack = Pack(pack_path)
    table = Table(table_path, pack)
    j = Judge(pack, table)
    head = ("# Generated by tools/gen-excludes1-cases.py from rules/spine-rules.json and\n"
            "# rules/tables/%s: do not edit; regenerate (make rules-cases).\n" % os.path.basename(table_path))
    rows = Writer(head + "# For every reviewed Excludes1 row: a pair where it fires, one where it must not.")
    nfr = Writer(head + "# No false reject: for every row, the pair at two different regions and the\n"
                        "# note's raw pointer codes the row leaves out; none may be rejected.")
    problems = []
    for row in pack.rows:
        tag = "row %d %s \"%s\"" % (row["index"], row["owner"], row["note"][:60])
        CURRENT_TAG[0] = tag
        a, b, own = fire_pair(j, table, row)
        if not a:
            problems.append("%s: no pair fires at the row's severity" % tag)
            continue
        lines = expect_lines(j, a, b)
        if not own:
            lines[0] = lines[0].split(" message=")[0]
            lines.insert(0, "# another row of this pair reports it at the same severity")
        rows.case("%s fires (%s)" % (tag, row["sev"]), a, b, lines)
        miss = miss_pair(j, table, row, (a, b))
        if not miss:
            problems.append("%s: no pair where it must not fire" % tag)
            continue
        ma, mb, why = miss
        r = j.pair(ma, mb)
        if r and r[1] is row and r[2] == row["sev"]:
            problems.append("%s: the miss pair fires" % tag)
        lines = expect_lines(j, ma, mb)
        if r and r[1] is row:
            lines = ["# the row still asks a query here, it does not %s" % row["sev"]] + lines
        rows.case("%s does not fire: %s" % (tag, why), ma, mb, lines)
        for pa, pb in other_region_pairs(j, table, row):
            nfr.case("%s at two regions" % tag, pa, pb, no_reject(j, pa, pb, problems))
        note = [n for n in table.notes if n[1] == "excludes1" and n[3] == row["note"] and
                Ref(n[0]).lo == row["oref"].lo and Ref(n[0]).hi == row["oref"].hi]
        others = [r2 for r2 in pack.rows if r2["note"] == row["note"] and r2["owner"] == row["owner"]]
        if note and row is others[0]:
            # leave-outs are judged against every row of the note together
            merged = dict(row)
            merged["excl"] = [x for r2 in others for x in r2["excl"]]
            owner = owners_of(table, row)[0]
            for c in left_out(table, merged, note[0][2]):
                if c == owner:
                    continue
                nfr.case("%s leaves out %s" % (tag, dot(c)), owner, c, no_reject(j, owner, c, problems))
    if problems:
        sys.exit("gen-excludes1-cases: " + "\n  ".join(problems))
    for name, w in (("excludes1-rows.case", rows), ("excludes1-no-false-reject.case", nfr)):
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".gen-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(w.text())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(out_dir, name))
        print("%s: %d cases" % (name, w.n))


if __name__ == "__main__":
    main()
