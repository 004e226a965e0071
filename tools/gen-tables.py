#!/usr/bin/env python3
"""gen-tables.py - builds spinegate's code tables from the official data.

Reads the ICD-10-CM spine extract of each fiscal year (icd10cm/ for FY2026,
icd10cm/fy2027/ for FY2027: spine-codes.tsv, spine-notes.tsv) and the MS-DRG
lists (msdrg/*.tsv) under DATA_DIR and writes one table file per fiscal year
into OUT_DIR (default rules/tables): spine-fy2026.tsv, spine-fy2027.tsv.
Adding a year is one line in FISCAL_YEARS and the file it generates.
The file is line-based TSV that rules/tables.c parses at load; its format is
described in docs/rule-pack.md ("Table files"). Output is written to a temp
file, fsynced and renamed, so a reader never sees half a table.

usage: gen-tables.py [DATA_DIR] [OUT_DIR]
DATA_DIR defaults to $top_srcdir/../shared/data (or ../shared/data).
"""
import os
import re
import sys

# One line per fiscal year: name, ICD-10-CM folder under DATA_DIR/icd10cm,
# validity, the MS-DRG grouper version whose lists are in DATA_DIR/msdrg, and
# the version CMS uses for that year's discharges when it differs (the lists
# of the newer grouper are not available, so the older ones are applied and
# the DRG finding says so).
FISCAL_YEARS = [
    ("FY2026", "", "2025-10-01", "2026-09-30", "43.0", "43"),
    ("FY2027", "fy2027", "2026-10-01", "2027-09-30", "43.0", "44"),
]

# A code as it appears in a tabular note: "M43.1", "M41.-", "S12.0-", "M43.5X9",
# the odd "S12.6.-" and the range forms "Q76.3-Q76.4" / "S12.0--S12.6.-".
CODE = r"[A-Z][0-9][0-9A-Z]?(?:\.?[0-9A-Z]{0,4})?(?:\.?-)?"
ITEM = re.compile(r"^(%s)(?:-{1,2}(%s))?(?: with fifth character ([0-9A-Z]))?$" % (CODE, CODE))
PAREN = re.compile(r"\(([^()]*)\)")


def norm(code):
    """Drops dots and the trailing '-' that means 'more characters follow'."""
    return code.replace(".", "").rstrip("-").replace("-", "")


def refs_of(text):
    """Returns the code references of a note as normalised tokens:
    CODE, LO-HI (a range compared by prefix), either with /5=C (the fifth
    character must be C). Parenthesised groups that hold no code are prose."""
    out = []
    for group in PAREN.findall(text):
        g = group.strip()
        if not re.match(r"^[A-Z][0-9]", g):
            continue
        for part in re.split(r",\s*|\s+and\s+", g):
            part = part.strip()
            m = ITEM.match(part)
            if not m:
                raise SystemExit("gen-tables: cannot read code reference %r in note %r" % (part, text))
            lo, hi, fifth = m.group(1), m.group(2), m.group(3)
            tok = norm(lo)
            if hi:
                tok += "-" + norm(hi)
            if fifth:
                tok += "/5=" + fifth
            out.append(tok)
    return out


def owner_of(code_dotted):
    """A note's owner: a code ("M43.0" -> M430) or a section ("M50-M54")."""
    if re.match(r"^[A-Z][0-9]{2}-[A-Z][0-9]{2}$", code_dotted):
        return code_dotted
    return norm(code_dotted)


def read_tsv(path, ncols):
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        if not header:
            raise SystemExit("gen-tables: %s is empty" % path)
        for lineno, line in enumerate(f, 2):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) != ncols:
                raise SystemExit("gen-tables: %s:%d: %d columns, expected %d" % (path, lineno, len(cols), ncols))
            rows.append(cols)
    return rows


def clean(s):
    """Table text never holds a tab or newline (the format's separators)."""
    return s.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def build(data_dir, fiscal_year, subdir, valid_from, valid_to, drg_version, drg_for_year):
    icd = os.path.join(data_dir, "icd10cm", subdir) if subdir else os.path.join(data_dir, "icd10cm")
    drg = os.path.join(data_dir, "msdrg")
    body = []
    codes = read_tsv(os.path.join(icd, "spine-codes.tsv"), 4)
    seen = set()
    for code, dotted, billable, desc in codes:
        if norm(dotted) != code or billable not in ("0", "1") or code in seen:
            raise SystemExit("gen-tables: bad code row %r" % code)
        seen.add(code)
        body.append("C\t%s\t%s\t%s" % (code, billable, clean(desc)))
    for dotted, ntype, text in read_tsv(os.path.join(icd, "spine-notes.tsv"), 3):
        refs = refs_of(text) if ntype in ("excludes1", "excludes2") else []
        body.append("N\t%s\t%s\t%s\t%s" % (owner_of(dotted), ntype, " ".join(refs), clean(text)))
    for code, dotted in read_tsv(os.path.join(drg, "drg551_552_pdx.tsv"), 2):
        body.append("P\t%s" % code)
    for code, dotted, alive in read_tsv(os.path.join(drg, "mcc.tsv"), 3):
        if alive not in ("0", "1"):
            raise SystemExit("gen-tables: bad mcc_only_if_alive for %s" % code)
        body.append("M\t%s\t%s" % (code, alive))
    excl = {}
    for pdx, _pd, mcc, _md in read_tsv(os.path.join(drg, "pdx_exclusions.tsv"), 4):
        excl.setdefault(pdx, []).append(mcc)
    for pdx in sorted(excl):
        body.append("X\t%s\t%s" % (pdx, ",".join(sorted(set(excl[pdx])))))
    text = "".join(line + "\n" for line in body).encode("utf-8")
    head = [
        "#spinegate-tables\t1",
        "#fiscal_year\t%s" % fiscal_year,
        "#valid_from\t%s" % valid_from,
        "#valid_to\t%s" % valid_to,
        "#icd10cm\tCDC ICD-10-CM tabular %s, spine extract (M40-M54, Q76, S12-S14, S22-S24, S32-S34)" % fiscal_year,
        "#msdrg\tCMS MS-DRG grouper v%s: DRG 551/552 PDX list, MCC list, PDX-MCC exclusions" % drg_version,
        "#msdrg_version\t%s" % drg_version.split(".")[0],
        "#msdrg_version_for_year\t%s" % drg_for_year,
        "#generated_by\ttools/gen-tables.py (do not edit: regenerate)",
        "#body_lines\t%d" % len(body),
        "#body_fnv1a64\t%016x" % fnv1a64(text),
    ]
    return ("".join(h + "\n" for h in head)).encode("utf-8") + text


def write_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def main(argv):
    top = os.environ.get("top_srcdir", ".")
    data_dir = argv[1] if len(argv) > 1 else os.path.join(top, "..", "shared", "data")
    out_dir = argv[2] if len(argv) > 2 else os.path.join(top, "rules", "tables")
    if not os.path.isdir(data_dir):
        sys.stderr.write("gen-tables: no data directory at %s\n" % data_dir)
        return 2
    os.makedirs(out_dir, exist_ok=True)
    for fy, subdir, valid_from, valid_to, drg_version, drg_for_year in FISCAL_YEARS:
        name = "spine-%s.tsv" % fy.lower()
        write_atomic(os.path.join(out_dir, name),
                     build(data_dir, fy, subdir, valid_from, valid_to, drg_version, drg_for_year))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
