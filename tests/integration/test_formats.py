"""test_formats.py - every rule case of tests/data/rules/*.case, written as an
HL7 v2 DFT^P03 and as a FHIR R4 Claim (JSON, and XML through the project's
converter), judged by the real spinegate-check; the verdict and findings
must be those the case expects. So each rule is exercised through both
formats, where it must fire and where it must not, without a line of C.

A case that one format cannot express (a discharge disposition in FHIR, a
pointer to a missing diagnosis in HL7, which links by code, an ADT in FHIR)
is skipped for that format with the reason printed. The case language is
written down in tests/data/rules/README, with how each directive is said in
HL7 and in FHIR."""
import json
import os
import shlex
import subprocess
import sys
import tempfile
import unittest

import harness as h

RULES = os.path.join(h.DATA, "rules")
sys.path.insert(0, os.path.join(h.TOP_SRCDIR, "tools"))


class CaseError(Exception):
    pass


SETTINGS = ("inpatient", "outpatient", "unknown")
POAS = ("Y", "N", "U", "W", "1")


def parse_cases(path):
    """Reads a .case file (tests/data/rules/README) into a list of dicts."""
    cases, cur = [], None
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("finding") else raw.strip()
            if not line or line.startswith("#"):
                continue
            word, _, rest = line.partition(" ")
            if word == "case":
                cur = {"name": rest, "date": "2026-01-15", "alive": None, "dx": [], "lines": [],
                       "policy": [], "expect": None, "findings": None, "want": [], "not": [],
                       "setting": "unknown", "discharge": None, "kind": "bill", "verdict_not": [],
                       "code_sets": None}
                cases.append(cur)
                continue
            toks = shlex.split(rest)
            where = "%s:%d" % (path, n)
            if word == "date":
                cur["date"] = None if toks[0] == "none" else toks[0]
            elif word == "alive":
                cur["alive"] = toks[0]
            elif word == "setting":
                if toks[0] not in SETTINGS:
                    raise CaseError("%s: setting %s" % (where, toks[0]))
                cur["setting"] = toks[0]
            elif word == "discharge":
                cur["discharge"] = toks[0]
            elif word == "kind":
                if toks[0] not in ("bill", "adt"):
                    raise CaseError("%s: kind %s" % (where, toks[0]))
                cur["kind"] = toks[0]
            elif word == "dx":
                d = {"seq": int(toks[0]), "code": toks[1], "type": None, "system": "cm", "text": None,
                     "poa": None, "line": None, "stage": None}
                for t in toks[2:]:
                    if t in ("principal", "secondary", "admitting"):
                        d["type"] = t
                    elif t.startswith("system="):
                        d["system"] = t[7:]
                    elif t.startswith("text="):
                        d["text"] = t[5:]
                    elif t.startswith("poa="):
                        if t[4:] not in POAS:
                            raise CaseError("%s: poa %s" % (where, t[4:]))
                        d["poa"] = t[4:]
                    elif t in ("stage=working", "stage=final"):
                        d["stage"] = t[6:]
                    elif t.startswith("line="):
                        d["line"] = int(t[5:])
                        if d["line"] not in {l["seq"] for l in cur["lines"]}:
                            raise CaseError("%s: dx line=%d: no line %d before it in the case"
                                            % (where, d["line"], d["line"]))
                    else:
                        raise CaseError("%s: dx option %s" % (where, t))
                cur["dx"].append(d)
            elif word == "line":
                # CPT codes are five digits; HCPCS level II codes start with a letter.
                l = {"seq": int(toks[0]), "code": toks[1], "ptr": [], "codes": [], "date": None,
                     "system": "hcpcs" if toks[1][:1].isalpha() else "cpt"}
                for t in toks[2:]:
                    if t.startswith("ptr="):
                        l["ptr"] = [int(x) for x in t[4:].split(",")]
                    elif t.startswith("codes="):
                        l["codes"] = t[6:].split(",")
                    elif t.startswith("system="):
                        l["system"] = t[7:]
                    elif t.startswith("date="):
                        l["date"] = t[5:]
                    else:
                        raise CaseError("%s: line option %s" % (where, t))
                cur["lines"].append(l)
            elif word == "policy":
                cur["policy"].append(toks[0])
            elif word == "expect":
                cur["expect"] = toks[0]
            elif word == "verdict-not":
                cur["verdict_not"].append(toks[0])
            elif word == "code-sets":
                cur["code_sets"] = [] if toks == ["none"] else toks
            elif word == "findings":
                cur["findings"] = int(toks[0])
            elif word == "finding":
                toks = shlex.split(line.partition(" ")[2].split(" #", 1)[0])
                w = {"rule": toks[0], "sev": None, "code": None, "suggest": None, "message": None}
                for t in toks[1:]:
                    if t in ("reject", "warn", "info"):
                        w["sev"] = t
                    elif "=" in t:
                        k, v = t.split("=", 1)
                        w[k] = v
                cur["want"].append(w)
            elif word == "no-finding":
                cur["not"].append(toks[0])
            else:
                raise CaseError("%s: unknown directive %s" % (where, word))
    return cases


HL7_SYS = {"cm": "I10", "who": None, "icd9": "I9", "other": "SNM", "none": ""}
HL7_PROC = {"cpt": "C4", "hcpcs": "HCPCS", "pcs": "I10P", "none": ""}
FHIR_SYS = {"cm": "http://hl7.org/fhir/sid/icd-10-cm", "who": "http://hl7.org/fhir/sid/icd-10",
            "icd9": "http://hl7.org/fhir/sid/icd-9-cm", "other": "http://snomed.info/sct", "none": None}
FHIR_PROC = {"cpt": "http://www.ama-assn.org/go/cpt",
             "hcpcs": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
             "pcs": "http://www.cms.gov/Medicare/Coding/ICD10", "none": None}
HL7_CLASS = {"inpatient": "I", "outpatient": "O", "unknown": ""}
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
CARIN = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBSupportingInfoType"
POA_SYSTEM = "http://terminology.hl7.org/CodeSystem/ex-diagnosis-on-admission"


def system_name(d, table):
    """The coding-system name of a dx for one format: a literal one
    (system=raw:NAME) as written, else the table's; None when the format
    has no name for it."""
    if d["system"].startswith("raw:"):
        return d["system"][4:]
    if d["system"] not in table:
        raise CaseError("system=%s is not a known system (cm, who, icd9, other, none, raw:NAME)" % d["system"])
    return table[d["system"]]


def esc(v):
    return v.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\").replace("~", "\\R\\")


def seg(name, fields):
    n = max(fields)
    return name + "|" + "|".join(fields.get(i, "") for i in range(1, n + 1))


def hl7_date(d):
    return (d or "").replace("-", "")


def to_hl7(c, cid):
    """Returns (message, None) or (None, reason it cannot be said in HL7)."""
    if any(d["system"] == "who" for d in c["dx"]):
        return None, "HL7 v2 has no WHO ICD-10 coding system name distinct from ICD-10-CM"
    adt = c["kind"] == "adt"
    if adt and c["lines"]:
        return None, "an ADT message carries no FT1 service lines"
    for d in c["dx"]:
        if d["line"] is not None and (d["type"] not in (None, "secondary") or d["poa"] or d["stage"]):
            return None, "FT1-19 carries no diagnosis type, stage or POA (a line's code is secondary)"
        if d["type"] == "admitting" and d["stage"]:
            return None, "DG1-6 holds one value: admitting, working or final"
    by_seq = {d["seq"]: d["code"] for d in c["dx"] if d["line"] is None}
    norm = lambda code: code.replace(".", "").replace(" ", "").upper()
    on_claim = {norm(code) for code in by_seq.values()}
    for l in c["lines"]:
        if any(norm(x) not in on_claim for x in l["codes"]):
            return None, ("a code in FT1-19 without a DG1 is a diagnosis of its own in HL7, "
                          "so a line code that is not on the claim cannot be sent")
    # Fiscal year of a YYYY-MM-DD date: the code sets change on October 1st.
    fiscal = lambda d: int(d[:4]) + (int(d[5:7] or 1) >= 10)
    line_dates = [l["date"] for l in c["lines"]]
    if c["date"] and line_dates and all(line_dates) and fiscal(min(line_dates)) != fiscal(c["date"]):
        return None, ("a bill with dated FT1 lines takes its service date from them (PV1-44 only "
                      "without lines), so a claim date in a year apart from its lines' cannot be sent")
    date = hl7_date(c["date"])
    mtype = "ADT^A01^ADT_A01" if adt else "DFT^P03^DFT_P03"
    segs = ["MSH|^~\\&|CASES|TEST|SPINEGATE|TEST|20260115083000||%s|%s|P|2.5" % (mtype, cid),
            seg("EVN", {1: "A01" if adt else "P03"}),
            seg("PID", {1: "1", 7: "19700101", 8: "F"})]
    # A time of day only after a whole date: 201907 + 0800 would read as July 8th.
    pv1 = {1: "1", 2: HL7_CLASS[c["setting"]], 44: date + "0800" if len(date) == 8 else date}
    if c["discharge"]:
        pv1[45] = hl7_date(c["discharge"])
    if c["alive"] == "no":
        pv1[36] = "20"
    elif c["alive"] == "yes":
        pv1[36] = "01"
    segs.append(seg("PV1", pv1))
    for l in c["lines"]:
        reps = [x + "^^I10" for x in l["codes"]]
        for p in l["ptr"]:
            if p not in by_seq:
                return None, "HL7 FT1-19 links by code, so a pointer to a missing diagnosis cannot be sent"
            reps.append(by_seq[p] + "^^I10")
        # Diagnoses carried only by this line: FT1-19 alone, no DG1.
        for d in c["dx"]:
            if d["line"] == l["seq"]:
                reps.append("%s^%s^%s" % (esc(d["code"]), esc(d["text"] or ""),
                                          esc(system_name(d, HL7_SYS) or "")))
        proc = l["code"] + "^^" + HL7_PROC[l["system"]]
        ldate = hl7_date(l["date"]) or date
        segs.append(seg("FT1", {1: str(l["seq"]), 4: ldate, 6: "CG", 7: proc, 10: "1",
                                19: "~".join(reps), 25: proc}))
    for d in c["dx"]:
        if d["line"] is not None:
            continue
        f = {1: str(d["seq"]), 3: "%s^^%s" % (esc(d["code"]), esc(system_name(d, HL7_SYS) or ""))}
        if d["text"]:
            f[4] = esc(d["text"])
        # DG1-6: a case that states stages leaves the others' unstated.
        staged = any(x["stage"] for x in c["dx"])
        f[6] = ("A" if d["type"] == "admitting" else "W" if d["stage"] == "working"
                else "F" if d["stage"] == "final" or not staged else "")
        if d["type"] == "principal":
            f[15] = "1"
        elif d["type"] == "secondary":
            f[15] = "2"
        if d["poa"]:
            f[26] = d["poa"]
        segs.append(seg("DG1", f))
    return "\r".join(segs) + "\r", None


def to_fhir(c, cid):
    if c["alive"] is not None:
        return None, "a FHIR Claim carries no discharge disposition"
    if c["kind"] == "adt":
        return None, "FHIR has no ADT: a Claim is always a bill"
    if any(l["codes"] for l in c["lines"]):
        return None, "FHIR items link by diagnosisSequence, not by code"
    if any(d["stage"] for d in c["dx"]):
        return None, "a FHIR Claim states no working or final stage of a diagnosis"
    if c["discharge"] and c["setting"] == "unknown":
        return None, "a FHIR Claim without a type that states a stay is read as inpatient"
    claim = {"resourceType": "Claim", "id": cid, "status": "active",
             "use": "claim", "patient": {"reference": "#p"}, "created": "2026-01-16",
             "contained": [{"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "1970-01-01"}],
             "provider": {"display": "Test"},
             "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
             "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Plan"}}]}
    info = []
    if c["setting"] == "inpatient":
        claim["type"] = {"coding": [{"system": CLAIM_TYPE, "code": "institutional"}]}
        info.append({"sequence": 1, "category": {"coding": [{"system": CARIN, "code": "typeofbill"}]},
                     "code": {"coding": [{"system": "https://www.nubc.org/CodeSystem/TypeOfBill", "code": "0111"}]}})
    elif c["setting"] == "outpatient":
        claim["type"] = {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]}
    if c["discharge"]:
        period = {"end": c["discharge"]}
        if c["date"]:
            period["start"] = c["date"]
        info.append({"sequence": len(info) + 1, "category": {"coding": [{"system": CARIN, "code": "admissionperiod"}]},
                     "timingPeriod": period})
    if info:
        claim["supportingInfo"] = info
    if c["date"]:
        claim["billablePeriod"] = {"start": c["date"], "end": c["date"]}
    dxs = []
    for d in c["dx"]:
        # A diagnosis carried only by a line in HL7 (dx ... line=N) is, in
        # FHIR, a Claim.diagnosis that the item points at: FHIR has no other
        # place for it.
        code = {"code": d["code"]}
        system = system_name(d, FHIR_SYS)
        if system:
            code = {"system": system, "code": d["code"]}
        cc = {"coding": [code]}
        if d["text"]:
            cc["text"] = d["text"]
        x = {"sequence": d["seq"], "diagnosisCodeableConcept": cc}
        dtype = d["type"] or ("secondary" if d["line"] is not None else None)
        if dtype in ("principal", "admitting"):
            x["type"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-diagnosistype", "code": dtype}]}]
        elif dtype == "secondary":
            x["type"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-diagnosistype", "code": "discharge"}]}]
        if d["poa"]:
            x["onAdmission"] = {"coding": [{"code": "1"}]} if d["poa"] == "1" else \
                {"coding": [{"system": POA_SYSTEM, "code": d["poa"].lower()}]}
        dxs.append(x)
    if dxs:
        claim["diagnosis"] = dxs
    items = []
    for l in c["lines"]:
        coding = {"code": l["code"]}
        if FHIR_PROC[l["system"]]:
            coding["system"] = FHIR_PROC[l["system"]]
        it = {"sequence": l["seq"], "productOrService": {"coding": [coding]}}
        ptr = list(l["ptr"]) + [d["seq"] for d in c["dx"] if d["line"] == l["seq"] and d["seq"] not in l["ptr"]]
        if ptr:
            it["diagnosisSequence"] = ptr
        if l["date"] or c["date"]:
            it["servicedDate"] = l["date"] or c["date"]
        items.append(it)
    if items:
        claim["item"] = items
    return claim, None


def check_tool(path, policy):
    args = [h.CHECK, "--json", "--no-progress"]
    for p in policy:
        if p == "advisory":
            args += ["--advisory"]
        elif p.startswith("adt="):
            args += ["--adt", p[4:]]
        else:
            args += ["--severity", p]
    r = subprocess.run(args + [path], capture_output=True, text=True, timeout=60)
    if r.returncode not in (0, 1):
        raise AssertionError("spinegate-check failed (%d): %s" % (r.returncode, r.stderr))
    return [json.loads(l) for l in r.stdout.splitlines()]


def mismatch(case, out):
    """Returns None when out (one JSON Lines object) meets the case."""
    got = out["findings"]
    if case["expect"] and out["verdict"] != case["expect"]:
        return "verdict %s, expected %s" % (out["verdict"], case["expect"])
    if out["verdict"] in case["verdict_not"]:
        return "verdict %s, which the case rules out" % out["verdict"]
    if case["code_sets"] is not None and out["code_sets"] != case["code_sets"]:
        return "code sets %s, expected %s" % (out["code_sets"], case["code_sets"])
    if case["findings"] is not None and len(got) != case["findings"]:
        return "%d findings, expected %d: %s" % (len(got), case["findings"], [f["rule"] for f in got])
    free = list(got)
    for w in case["want"]:
        for f in free:
            if f["rule"] != w["rule"] or (w["sev"] and f["severity"] != w["sev"]):
                continue
            if w["code"] and w["code"] not in f["codes"]:
                continue
            if w["suggest"] and w["suggest"] not in (f["suggestion"] or ""):
                continue
            if w["message"] and w["message"] not in f["message"]:
                continue
            free.remove(f)
            break
        else:
            return "no finding %s in %s" % (w, [(f["rule"], f["severity"], f["codes"]) for f in got])
    for rule in case["not"]:
        if any(f["rule"] == rule for f in got):
            return "unexpected finding %s" % rule
    return None


class Formats(unittest.TestCase):
    def run_format(self, fmt):
        import fhir_json2xml  # the project's converter, tools/fhir_json2xml.py
        total = skipped = 0
        conv = None
        problems = []
        tmp = tempfile.mkdtemp(prefix="sg-cases-")
        # SG_RULE_CASES=excludes runs only the case files whose names start
        # with it (a quick loop while editing one rule's cases).
        only = os.environ.get("SG_RULE_CASES", "")
        for name in sorted(os.listdir(RULES)):
            if not name.endswith(".case") or not name.startswith(only):
                continue
            for i, case in enumerate(parse_cases(os.path.join(RULES, name))):
                cid = "%s-%d" % (name[:-5], i)
                if fmt == "hl7":
                    doc, why = to_hl7(case, cid)
                    data = doc.encode() if doc else None
                else:
                    doc, why = to_fhir(case, cid)
                    data = json.dumps(doc).encode() if doc else None
                    if doc and fmt == "xml":
                        if conv is None:
                            conv = fhir_json2xml.Converter(fhir_json2xml.Schema(
                                os.path.join(h.DATA, "fhir", "xsd", "fhir-single.xsd")))
                        obj = json.loads(data, parse_float=fhir_json2xml.Num, parse_int=fhir_json2xml.Num)
                        data = conv.convert(obj).encode()
                if data is None:
                    skipped += 1
                    print("skip %s %s: %s" % (fmt, case["name"], why))
                    continue
                path = os.path.join(tmp, cid + "." + fmt)
                with open(path, "wb") as f:
                    f.write(data)
                out = check_tool(path, case["policy"])
                total += 1
                bad = mismatch(case, out[0]) if len(out) == 1 else "%d results" % len(out)
                if bad:
                    problems.append("%s / %s: %s" % (name, case["name"], bad))
        print("%s: %d cases judged, %d not expressible" % (fmt, total, skipped))
        self.assertGreater(total, 0 if only else 80)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_cases_as_hl7(self):
        self.run_format("hl7")

    def test_cases_as_fhir_json(self):
        self.run_format("json")

    def test_cases_as_fhir_xml(self):
        self.run_format("xml")


class Corpus(unittest.TestCase):
    def test_corpus_without_spine_codes_is_accepted(self):
        """Every corpus message that parses and carries no spine code is
        accepted: the gate is safe in front of a whole feed."""
        corpus = os.path.join(h.DATA, "hl7", "corpus")
        fhir = os.path.join(h.DATA, "fhir", "json")
        files = [os.path.join(corpus, n) for n in sorted(os.listdir(corpus)) if n.endswith(".hl7")]
        files += [os.path.join(fhir, n) for n in sorted(os.listdir(fhir)) if n.startswith(("Claim-", "Bundle-"))]
        spine = ("M4", "M5", "Q76", "S12", "S13", "S14", "S22", "S23", "S24", "S32", "S33", "S34")
        judged = 0
        for path in files:
            for out in check_tool(path, []):
                if any(f["rule"] == "parse-error" for f in out["findings"]):
                    continue  # the malformed samples: tested by the parser's own tests
                judged += 1
                codes = [c for f in out["findings"] for c in f["codes"]]
                # table-coverage fires only for spine codes outside the tables' years.
                carries_spine = any(c.replace(".", "").startswith(spine) for c in codes) or \
                    any(f["rule"] == "table-coverage" for f in out["findings"])
                if not carries_spine:
                    self.assertEqual(out["verdict"], "accept", "%s #%d: %s" % (path, out["index"], out["findings"]))
        self.assertGreater(judged, 60)


class CheckTool(unittest.TestCase):
    def test_demo_verdicts_and_exit_codes(self):
        demo = os.path.join(h.DATA, "demo")
        for name in sorted(os.listdir(demo)):
            if not name.endswith(".hl7"):
                continue
            out = check_tool(os.path.join(demo, name), [])
            want = "reject" if ("reject" in name or "unparseable" in name) else name.split("-")[1]
            self.assertEqual(out[0]["verdict"], want, name)
        ok = subprocess.run([h.CHECK, os.path.join(demo, "01-accept-no-spine-codes.hl7")], capture_output=True)
        self.assertEqual(ok.returncode, 0)
        bad = subprocess.run([h.CHECK, os.path.join(demo, "04-reject-excludes1.hl7")], capture_output=True)
        self.assertEqual(bad.returncode, 1)
        missing = subprocess.run([h.CHECK, "/nonexistent/file.hl7"], capture_output=True)
        self.assertEqual(missing.returncode, 2)
        usage = subprocess.run([h.CHECK, "--no-such-flag"], capture_output=True)
        self.assertEqual(usage.returncode, 2)

    def test_max_diagnoses_as_the_daemon(self):
        """A claim over max-diagnoses is refused unjudged, as the daemon does
        (default 1000, the daemon's); --max-diagnoses moves the bound."""
        from test_mllp import dft

        def run(msg, *opts):
            with tempfile.NamedTemporaryFile("w", suffix=".hl7", delete=False) as f:
                f.write(msg)
            try:
                return subprocess.run([h.CHECK, "--json", "--no-progress"] + list(opts) + [f.name],
                                      capture_output=True, text=True, timeout=60)
            finally:
                os.unlink(f.name)

        many = dft("MANY0001", ["J20.9"] * 1001)
        r = run(many)
        self.assertEqual(r.returncode, 1)
        out = json.loads(r.stdout)
        self.assertEqual(out["verdict"], "reject")
        self.assertIn("claim has 1001 diagnoses, over the limit of 1000 (max-diagnoses)",
                      out["findings"][0]["message"])
        r = run(many, "--max-diagnoses", "1001")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(json.loads(r.stdout)["verdict"], "accept")
        r = run(dft("FEW00001", ["J20.9", "M54.5", "M43.04"]), "--max-diagnoses", "2")
        self.assertEqual(json.loads(r.stdout)["verdict"], "reject")
        self.assertIn("over the limit of 2", r.stdout)
        # A FHIR Claim is held to the same bound.
        claim = {"resourceType": "Claim", "id": "c1", "status": "active",
                 "diagnosis": [{"sequence": i + 1, "diagnosisCodeableConcept": {"coding": [{
                     "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J20.9"}]}}
                     for i in range(3)]}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(claim, f)
        try:
            r = subprocess.run([h.CHECK, "--json", "--no-progress", "--max-diagnoses", "2", f.name],
                               capture_output=True, text=True, timeout=60)
        finally:
            os.unlink(f.name)
        self.assertIn("claim has 3 diagnoses, over the limit of 2", r.stdout)
        for bad in ("0", "-1", "x", ""):
            self.assertEqual(run(many, "--max-diagnoses", bad).returncode, 2, bad)

    def test_batch_on_stdin_and_json_lines_shape(self):
        demo = os.path.join(h.DATA, "demo")
        batch = b"".join(open(os.path.join(demo, n), "rb").read() for n in sorted(os.listdir(demo))
                         if n.endswith(".hl7") and "unparseable" not in n)
        r = subprocess.run([h.CHECK, "--json", "-"], input=batch, capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        lines = [json.loads(l) for l in r.stdout.splitlines()]
        sent = [n for n in os.listdir(demo) if n.endswith(".hl7") and "unparseable" not in n]
        self.assertEqual([l["index"] for l in lines], list(range(1, len(sent) + 1)))
        for l in lines:
            self.assertEqual(set(l) - {"id"},
                             {"source", "index", "verdict", "code_set", "code_sets", "code_set_fit",
                              "findings"})
            for f in l["findings"]:
                self.assertEqual(set(f), {"rule", "severity", "message", "codes", "location", "suggestion"})
                if "well-formed" in f["message"]:
                    continue  # a malformed code is shown as it was sent
                for c in f["codes"]:
                    self.assertRegex(c, r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]+)?$")


if __name__ == "__main__":
    h.run(__name__)
