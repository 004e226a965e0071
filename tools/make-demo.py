#!/usr/bin/env python3
"""make-demo.py - writes the demo HL7 messages in tests/data/demo/.

Segments are built from {field number: value} maps so that field positions
(FT1-19, FT1-25, DG1-15, ...) are right by construction. The patient is made up.
"""
import os
import sys

def seg(name, fields):
    n = max(fields)
    return name + "|" + "|".join(fields.get(i, "") for i in range(1, n + 1))

# Dated in November 2026, so the demo is judged with the FY2027 code set
# (in force for dates from 2026-10-01); the inpatient stays take their
# discharge date (PV1-45).
def msh(cid, typ, ver="2.5"):
    # MSH-1 is the separator itself, so MSH-2 is the first field written.
    return "MSH|^~\\&|CHARGECAP|GENHOSP|SPINEGATE|BILLING|20261116083000||%s|%s|P|%s" % (typ, cid, ver)

PID = seg("PID", {1: "1", 3: "MRN00123^^^GENHOSP^MR", 5: "TESTPATIENT^ALEX^Q", 7: "19800412", 8: "F"})
PV1 = seg("PV1", {1: "1", 2: "O", 3: "SPINE^101^1^GENHOSP", 19: "V0001", 44: "20261116080000"})
PV1_INPATIENT = seg("PV1", {1: "1", 2: "I", 3: "SPINE^101^1^GENHOSP", 19: "V0002", 44: "20261109080000",
                            45: "20261113110000"})
EVN = lambda ev: seg("EVN", {1: ev, 2: "20261116083000"})

def ft1(n, cpt, dx):
    return seg("FT1", {1: str(n), 4: "20261116", 6: "CG", 7: cpt + "^^C4", 10: "1",
                       19: "~".join(d + "^^I10" for d in dx), 25: cpt + "^^C4"})

def ft1_on(n, day, cpt, dx, qty="1"):
    """An FT1 of a given day; a negative qty takes a charge back (a reversal)."""
    return seg("FT1", {1: str(n), 4: day, 6: "CG", 7: cpt + "^^C4", 10: qty,
                       19: "~".join(d + "^^I10" for d in dx), 25: cpt + "^^C4"})

PV1_RECURRING = seg("PV1", {1: "1", 2: "R", 3: "SPINE^101^1^GENHOSP", 19: "V0003", 44: "20261102080000"})

def dg1(n, code, text, principal, free_text=""):
    return seg("DG1", {1: str(n), 3: "%s^%s^I10" % (code, text), 4: free_text, 6: "F",
                       15: "1" if principal else "2"})

MESSAGES = {
    "01-accept-no-spine-codes.hl7": [
        msh("DEMO0001", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1, ft1(1, "99213", ["J20.9"]),
        dg1(1, "J20.9", "Acute bronchitis, unspecified", True)],
    "02-annotate-drg-info.hl7": [
        msh("DEMO0002", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1_INPATIENT, ft1(1, "72146", ["M43.04"]),
        dg1(1, "M43.04", "Spondylolysis, thoracic region", True, "pars defect T8 on MRI")],
    "03-annotate-site-unspecified.hl7": [
        msh("DEMO0003", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1, ft1(1, "72146", ["M43.00"]),
        dg1(1, "M43.00", "Spondylolysis, site unspecified", True, "pars defect at T8, thoracic spine")],
    "04-reject-excludes1.hl7": [
        msh("DEMO0004", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1, ft1(1, "72146", ["M43.04"]),
        dg1(1, "M43.04", "Spondylolysis, thoracic region", True),
        dg1(2, "Q76.2", "Congenital spondylolisthesis", False)],
    "05-reject-seventh-character.hl7": [
        msh("DEMO0005", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1, ft1(1, "72146", ["M43.04XA"]),
        dg1(1, "M43.04XA", "Spondylolysis, thoracic region", True)],
    "06-annotate-two-levels-bar.hl7": [
        msh("DEMO0006", "BAR^P01^BAR_P01"), EVN("P01"), PID, PV1_INPATIENT,
        dg1(1, "M43.04", "Spondylolysis, thoracic region", True),
        dg1(2, "M43.16", "Spondylolisthesis, lumbar region", False)],
    # A charge whose only diagnosis travels in FT1-19: read and judged.
    "08-reject-ft1-19-only.hl7": [
        msh("DEMO0008", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1, ft1(1, "72146", ["M43.04XA"])],
    # ADT carries working diagnoses, not a bill: annotated, never rejected.
    "09-annotate-adt-working-diagnosis.hl7": [
        msh("DEMO0009", "ADT^A01^ADT_A01"), EVN("A01"), PID, PV1_INPATIENT,
        dg1(1, "M43.04XA", "Spondylolysis, thoracic region", True)],
    # A code with a dash where a character should be: no code at all.
    "10-reject-malformed-code.hl7": [
        msh("DEMO0010", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1, ft1(1, "72148", ["M51.36-"]),
        dg1(1, "M51.36-", "Disc degeneration, lumbar", True)],
    # Excludes1 conditions at different regions may both be true
    # (guideline I.A.12.a): forwarded with a query, not rejected.
    "11-annotate-excludes1-other-region.hl7": [
        msh("DEMO0011", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1, ft1(1, "72148", ["M51.16", "M54.12"]),
        dg1(1, "M51.16", "Intervertebral disc disorders with radiculopathy, lumbar region", True),
        dg1(2, "M54.12", "Radiculopathy, cervical region", False)],
    # A recurring account billing two visits: the defect seen on 2 November,
    # the slip on 16 November. Excludes1 codes are never used at the same
    # time (I.A.12.a); on separate visits they are forwarded with a warning.
    "12-annotate-excludes1-two-visits.hl7": [
        msh("DEMO0012", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1_RECURRING,
        ft1_on(1, "20261102", "72070", ["M43.04"]), ft1_on(2, "20261116", "72070", ["M43.14"]),
        dg1(1, "M43.04", "Spondylolysis, thoracic region", True),
        dg1(2, "M43.14", "Spondylolisthesis, thoracic region", False)],
    # A charge taken back (quantity -1) that was coded with a heading (M43.0),
    # and the charge again with the right code: the reversal bills nothing,
    # so its code is not judged and the correction passes.
    "13-accept-charge-reversal.hl7": [
        msh("DEMO0013", "DFT^P03^DFT_P03"), EVN("P03"), PID, PV1,
        ft1_on(1, "20261116", "72146", ["M43.0"], qty="-1"), ft1_on(2, "20261116", "72146", ["M43.04"]),
        dg1(1, "M43.04", "Spondylolysis, thoracic region", True)],
}

def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "demo")
    for name, segs in MESSAGES.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(("\r".join(segs) + "\r").encode("ascii"))
    with open(os.path.join(out, "07-unparseable.hl7"), "wb") as f:
        f.write(b"this is not an HL7 message\r")

if __name__ == "__main__":
    main()
