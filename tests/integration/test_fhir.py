"""test_fhir.py - FHIR Claims over HTTP end to end: the real daemon, curl as
the client, a real downstream HTTP server, and every response checked against
the official FHIR R4 definitions (JSON schema, XSD)."""
import copy
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness as h

FHIR = os.path.join(h.DATA, "fhir")


def load(name):
    with open(os.path.join(FHIR, "json", name)) as f:
        return json.load(f)


def curl(port, path, body=None, ctype="application/fhir+json", method=None, extra=()):
    """Runs curl; returns (status, content type, body bytes)."""
    return curl_h(port, path, body, ctype, method, extra)[:3]


def curl_h(port, path, body=None, ctype="application/fhir+json", method=None, extra=()):
    """Runs curl; returns (status, content type, body bytes, headers) where
    headers maps lower-case names to values."""
    with tempfile.NamedTemporaryFile(delete=False) as out:
        pass
    with tempfile.NamedTemporaryFile(delete=False) as hdr:
        pass
    args = ["curl", "-s", "-o", out.name, "-D", hdr.name, "-w", "%{http_code} %{content_type}",
            "--max-time", "30"]
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(data)
        args += ["--data-binary", "@" + f.name, "-H", "Content-Type: " + ctype]
    if method:
        args += ["-X", method]
    args += list(extra) + ["http://127.0.0.1:%d%s" % (port, path)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if body is not None:
        os.unlink(f.name)
    with open(out.name, "rb") as f:
        content = f.read()
    os.unlink(out.name)
    headers = {}
    with open(hdr.name, "rb") as f:
        for line in f.read().decode("latin-1").split("\r\n")[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
    os.unlink(hdr.name)
    code, _, ct = r.stdout.partition(" ")
    return int(code or 0), ct, content, headers


def with_dx(claim, codes):
    c = copy.deepcopy(claim)
    c["diagnosis"] = [{"sequence": i + 1, "diagnosisCodeableConcept": {"coding": [
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]}} for i, code in enumerate(codes)]
    for item in c.get("item", []):
        item["diagnosisSequence"] = [1]
    return c


def dated(claim, date, cid):
    """The claim with its billable period and every line dated date (YYYY-MM-DD)."""
    c = copy.deepcopy(claim)
    c["id"] = cid
    c["billablePeriod"] = {"start": date, "end": date}
    for item in c.get("item", []):
        item.pop("servicedPeriod", None)
        item["servicedDate"] = date
    return c


def three_claims(kind, ids):
    """A batch or transaction Bundle: the Patient and three Claims that pass
    (spine-b1, spine-b2, spine-b1 again), with the Claim ids given."""
    bundle = load("spine-bundle-two.json")
    bundle["type"] = kind
    bundle["entry"].append(copy.deepcopy(bundle["entry"][1]))
    bundle["entry"][3]["fullUrl"] = "urn:uuid:4b7d2e90-5a1c-4f3e-9b8d-2c6a1e0f7d33"
    claims = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Claim"]
    for e, cid in zip(claims, ids):
        e["resource"]["id"] = cid
    return bundle


def forwarded_ids(sink, ids):
    """The ids among ids that the sink received, in the order it got them."""
    out = []
    for r in sink.received:
        body = r[2].decode("utf-8", "replace")
        out += [i for i in ids if '"%s"' % i in body]
    return out


def metric(text, name, labels):
    """The value of one sample of the Prometheus text, or None if absent."""
    m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return int(m.group(1)) if m else None


NS = "{http://hl7.org/fhir}"
ANNOTATION = "https://spinegate.invalid/fhir/StructureDefinition/annotation"


def load_xml(name):
    with open(os.path.join(FHIR, "xml", name), "rb") as f:
        return f.read()


def xml_claim(code="M43.04", cid=None):
    """The example XML Claim with its one diagnosis code (and id) replaced."""
    x = load_xml("spine-m4304-mri.xml").replace(b'value="M43.04"', b'value="%s"' % code.encode())
    if cid:
        x = x.replace(b'<id value="spine-m4304-mri"/>', b'<id value="%s"/>' % cid.encode(), 1)
    return x


def parameters_json(claim, mode=None):
    p = [{"name": "mode", "valueCode": mode}] if mode else []
    return {"resourceType": "Parameters", "parameter": p + [{"name": "resource", "resource": claim}]}


def parameters_xml(claim_xml, mode=None):
    body = re.sub(rb"^<\?xml[^>]*\?>\s*", b"", claim_xml)
    m = (b'<parameter><name value="mode"/><valueCode value="%s"/></parameter>' % mode.encode()
         if mode else b"")
    return (b'<Parameters xmlns="http://hl7.org/fhir">' + m +
            b'<parameter><name value="resource"/><resource>' + body +
            b"</resource></parameter></Parameters>")


def xml_entries(body):
    """(status, location) of each entry of an XML batch/transaction-response."""
    import xml.etree.ElementTree as ET
    root = ET.fromstring(body)
    out = []
    for e in root.findall(NS + "entry"):
        r = e.find(NS + "response")
        loc = r.find(NS + "location")
        out.append((r.find(NS + "status").get("value"), loc.get("value") if loc is not None else None))
    return out


def issues(body, fmt="json"):
    """(severity, code) of each issue of an OperationOutcome."""
    if fmt == "json":
        return [(i["severity"], i["code"]) for i in json.loads(body)["issue"]]
    import xml.etree.ElementTree as ET
    root = ET.fromstring(body)
    return [(i.find(NS + "severity").get("value"), i.find(NS + "code").get("value"))
            for i in root.findall(NS + "issue")]


class Fhir(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = h.HttpSink().start()
        cls.d = h.Daemon("--downstream-fhir", "http://127.0.0.1:%d/r4" % cls.sink.port,
                         "--header-timeout", "1s", "--body-timeout", "1s",
                         "--max-body-size", "1M", mllp=False, http=True).start()
        cls.port = cls.d.http_port

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()
        cls.sink.stop()

    def assertValidJson(self, body, resource_type):
        doc = json.loads(body)
        self.assertEqual(doc["resourceType"], resource_type)
        ok, why = h.fhir_json_valid(body)
        self.assertTrue(ok, why)
        return doc

    def assertValidXml(self, body, root):
        self.assertIn(b"<" + root.encode(), body)
        ok, why = h.fhir_xml_valid(body)
        self.assertTrue(ok, why)

    def test_claim_annotated_stored_forwarded_with_extensions(self):
        # Site unspecified, linked to a thoracic MRI: a warning, so the
        # Claim is forwarded with its finding as an extension.
        claim = with_dx(load("spine-m4304-mri.json"), ["M43.00"])
        status, ct, body = curl(self.port, "/fhir/Claim", claim)
        self.assertEqual(status, 201, body)
        self.assertIn("application/fhir+json", ct)
        self.assertValidJson(body, "OperationOutcome")
        h.wait_for(lambda: any("spine-m4304-mri" in r[2].decode() for r in self.sink.received), 10,
                   "forwarded Claim")
        path, ctype, fwd, _ = [r for r in self.sink.received if b"spine-m4304-mri" in r[2]][0]
        self.assertEqual(path, "/r4/Claim")
        claim = self.assertValidJson(fwd, "Claim")
        self.assertIn("spinegate.invalid/fhir/StructureDefinition", json.dumps(claim))

    def test_xml_claim_answered_in_xml(self):
        with open(os.path.join(FHIR, "xml", "spine-m4304-mri.xml"), "rb") as f:
            xml = f.read()
        status, ct, body = curl(self.port, "/fhir/Claim", xml, "application/fhir+xml")
        self.assertEqual(status, 201, body)
        self.assertIn("application/fhir+xml", ct)
        self.assertValidXml(body, "OperationOutcome")

    def test_reject_is_422_with_outcome_and_not_forwarded(self):
        claim = with_dx(load("spine-m4304-mri.json"), ["M43.04", "Q76.2"])
        claim["id"] = "reject-me"
        status, _, body = curl(self.port, "/fhir/Claim", claim)
        self.assertEqual(status, 422, body)
        oo = self.assertValidJson(body, "OperationOutcome")
        errors = [i for i in oo["issue"] if i["severity"] == "error"]
        self.assertTrue(errors)
        self.assertTrue(any(i.get("expression", [""])[0].startswith("Claim.diagnosis[") for i in errors), errors)
        self.assertTrue(all(i["code"] in ("business-rule", "code-invalid") for i in errors))
        time.sleep(0.3)
        self.assertFalse(any(b"reject-me" in r[2] for r in self.sink.received))
        h.wait_for(lambda: [n for n in self.d.folder("reject") if "reject-me" in n], 5, "reject copy")

    def test_validate_only_judges(self):
        claim = with_dx(load("spine-m4304-mri.json"), ["M43.04XA"])
        claim["id"] = "validate-only"
        status, _, body = curl(self.port, "/fhir/Claim/$validate", claim)
        self.assertEqual(status, 200, body)
        oo = self.assertValidJson(body, "OperationOutcome")
        self.assertTrue(any(i["severity"] == "error" for i in oo["issue"]))
        time.sleep(0.3)
        self.assertFalse(any(b"validate-only" in r[2] for r in self.sink.received))

    def test_batch_bundle_one_entry_per_request_entry(self):
        # The Patient and two Claims: three entries, in request order; the
        # Patient only served references (200 with a note), the Claims
        # were created (201 with a Location).
        status, _, body = curl(self.port, "/fhir", load("spine-bundle-two.json"))
        self.assertEqual(status, 200, body)
        doc = self.assertValidJson(body, "Bundle")
        self.assertEqual(doc["type"], "batch-response")
        self.assertEqual(len(doc["entry"]), 3)
        self.assertEqual([e["response"]["status"] for e in doc["entry"]],
                         ["200 OK", "201 Created", "201 Created"])
        self.assertNotIn("location", doc["entry"][0]["response"])
        note = doc["entry"][0]["response"]["outcome"]["issue"][0]
        self.assertEqual((note["severity"], note["code"]), ("information", "informational"))
        self.assertIn("Patient not stored", note["diagnostics"])
        self.assertEqual([e["response"].get("location") for e in doc["entry"][1:]],
                         ["Claim/spine-b1/_history/1", "Claim/spine-b2/_history/1"])

    def test_transaction_with_a_reject_forwards_nothing(self):
        bundle = load("spine-bundle-two.json")
        bundle["type"] = "transaction"
        for k, e in enumerate(bundle["entry"]):
            e["request"] = {"method": "POST", "url": "Claim"}
            e["resource"]["id"] = "txn-%d" % k
        bad = bundle["entry"][1]["resource"]
        bad.update(with_dx(bad, ["M43.04", "Q76.2"]))
        bad.pop("billablePeriod", None)
        for item in bad.get("item", []):
            item.pop("servicedDate", None)
            item.pop("servicedPeriod", None)
        status, _, body = curl(self.port, "/fhir", bundle)
        self.assertEqual(status, 422, body)
        oo = self.assertValidJson(body, "OperationOutcome")
        self.assertTrue(any(i.get("expression", [""])[0].startswith("Bundle.entry[1].resource.diagnosis")
                            for i in oo["issue"] if i["severity"] == "error"), oo)
        time.sleep(0.3)
        self.assertFalse(any(b"txn-0" in r[2] for r in self.sink.received))
        bundle["type"] = "collection"
        self.assertEqual(curl(self.port, "/fhir", bundle)[0], 400)

    def healthz(self):
        status, _, body = curl(self.port, "/healthz")
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def test_transaction_all_good_forwarded_in_order(self):
        ids = ["txn-ok-1", "txn-ok-2", "txn-ok-3"]
        status, _, body = curl(self.port, "/fhir", three_claims("transaction", ids))
        self.assertEqual(status, 200, body)
        doc = self.assertValidJson(body, "Bundle")
        self.assertEqual(doc["type"], "transaction-response")
        self.assertEqual([e["response"]["status"] for e in doc["entry"]],
                         ["200 OK"] + ["201 Created"] * 3)
        self.assertEqual([e["response"].get("location") for e in doc["entry"]],
                         [None] + ["Claim/%s/_history/1" % i for i in ids])
        h.wait_for(lambda: len(forwarded_ids(self.sink, ids)) == 3, 10, "three forwarded Claims")
        self.assertEqual(forwarded_ids(self.sink, ids), ids)

    def test_transaction_with_an_unstorable_claim_stores_nothing(self):
        # The middle Claim's id is over the queue's 199 bytes: the queue
        # refuses it, so none of the three is stored, the answer says so and
        # names the entry, and nothing is forwarded.
        ids = ["txn-long-1", "txn-long-" + "x" * 250, "txn-long-3"]
        before = self.healthz()["queue"]["committed"]
        status, _, body = curl(self.port, "/fhir", three_claims("transaction", ids))
        self.assertEqual(status, 400, body)
        oo = self.assertValidJson(body, "OperationOutcome")
        issue = oo["issue"][0]
        self.assertEqual(issue["severity"], "error")
        # Refused as the sender's error before anything is stored: the id
        # limit is checked when the Claim is judged (app/gate.c), and a
        # Claim the queue still refuses fails the whole group.
        self.assertIn("none of the transaction's 3 Claims was stored", issue["diagnostics"])
        self.assertTrue(issue["expression"][0].startswith("Bundle.entry[2].resource"), issue)
        time.sleep(0.5)
        self.assertEqual(forwarded_ids(self.sink, ids), [])
        self.assertEqual(self.healthz()["queue"]["committed"], before)

    def test_transaction_storage_error_stores_nothing(self):
        # A storage error injected from outside: another process holds the
        # queue database's write lock, so the group commit that holds the
        # transaction fails (SQLITE_BUSY after the 5 s busy timeout) and
        # rolls back. All three Claims pass; none is stored or forwarded.
        import sqlite3
        ids = ["txn-busy-1", "txn-busy-2", "txn-busy-3"]
        before = self.healthz()["queue"]
        db = sqlite3.connect(os.path.join(self.d.data_dir, "queue.db"), timeout=10,
                             isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            status, _, body = curl(self.port, "/fhir", three_claims("transaction", ids))
        finally:
            db.execute("ROLLBACK")
            db.close()
        self.assertEqual(status, 503, body)
        oo = self.assertValidJson(body, "OperationOutcome")
        issue = oo["issue"][0]
        self.assertEqual(issue["code"], "transient")
        self.assertIn("none of its 3 Claims was stored or forwarded", issue["diagnostics"])
        self.assertIn("send the whole Bundle again", issue["diagnostics"])
        time.sleep(0.5)
        self.assertEqual(forwarded_ids(self.sink, ids), [])
        after = self.healthz()["queue"]
        self.assertEqual(after["committed"], before["committed"])
        self.assertIn("transaction of 3 Claims not stored", self.d.logtext())
        # The same Bundle sent again once storage is back: all three, in order.
        status, _, body = curl(self.port, "/fhir", three_claims("transaction", ids))
        self.assertEqual(status, 200, body)
        h.wait_for(lambda: len(forwarded_ids(self.sink, ids)) == 3, 10, "three forwarded Claims")
        self.assertEqual(forwarded_ids(self.sink, ids), ids)

    def test_batch_with_an_unstorable_claim_stores_the_others(self):
        ids = ["batch-long-1", "batch-long-" + "x" * 250, "batch-long-3"]
        status, _, body = curl(self.port, "/fhir", three_claims("batch", ids))
        self.assertEqual(status, 200, body)
        doc = self.assertValidJson(body, "Bundle")
        self.assertEqual(doc["type"], "batch-response")
        self.assertEqual([e["response"]["status"] for e in doc["entry"]],
                         ["200 OK", "201 Created", "400 Bad Request", "201 Created"])
        self.assertNotIn("location", doc["entry"][2]["response"])
        bad = doc["entry"][2]["response"]["outcome"]["issue"][0]
        self.assertTrue("over the limit of 199 bytes" in bad["diagnostics"] or
                        "cannot be stored" in bad["diagnostics"], bad)
        h.wait_for(lambda: len(forwarded_ids(self.sink, ids)) == 2, 10, "two forwarded Claims")
        self.assertEqual(forwarded_ids(self.sink, ids), [ids[0], ids[2]])

    def test_metadata(self):
        status, _, body = curl(self.port, "/fhir/metadata")
        self.assertEqual(status, 200)
        doc = self.assertValidJson(body, "CapabilityStatement")
        self.assertEqual(doc["fhirVersion"], "4.0.1")
        status, ct, body = curl(self.port, "/fhir/metadata?_format=xml")
        self.assertIn("xml", ct)
        self.assertValidXml(body, "CapabilityStatement")

    def test_broken_json_and_xml(self):
        status, _, body = curl(self.port, "/fhir/Claim", b'{"resourceType": "Claim", ', "application/fhir+json")
        self.assertEqual(status, 400)
        self.assertValidJson(body, "OperationOutcome")
        status, _, body = curl(self.port, "/fhir/Claim", b"<Claim xmlns='http://hl7.org/fhir'><id value=",
                               "application/fhir+xml")
        self.assertEqual(status, 400)
        self.assertValidXml(body, "OperationOutcome")

    def test_wrong_content_type(self):
        status, _, body = curl(self.port, "/fhir/Claim", b"hello", "text/plain")
        self.assertEqual(status, 415)
        self.assertValidJson(body, "OperationOutcome")

    def test_huge_body_is_413_and_daemon_unaffected(self):
        big = b'{"resourceType":"Claim","x":"' + b"a" * (50 * 1024 * 1024) + b'"}'
        status, _, _ = curl(self.port, "/fhir/Claim", big)
        self.assertIn(status, (413, 0))  # 0: curl saw the connection closed while sending
        status, _, _ = curl(self.port, "/fhir/metadata")
        self.assertEqual(status, 200)

    def test_slow_client_times_out_others_unaffected(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(b"POST /fhir/Claim HTTP/1.1\r\nHost: x\r\n")
        t0 = time.time()
        # Meanwhile another client is served at once.
        status, _, _ = curl(self.port, "/fhir/metadata")
        self.assertEqual(status, 200)
        self.assertLess(time.time() - t0, 1.0)
        for ch in b"Content-Type: application/fhir+json\r\n":
            try:
                s.sendall(bytes([ch]))
            except OSError:
                break
            time.sleep(0.1)
            if time.time() - t0 > 3:
                break
        s.settimeout(5)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        s.close()
        self.assertIn(b" 408 ", data.split(b"\r\n")[0] + b" ")

    def test_healthz_and_metrics(self):
        curl(self.port, "/fhir/Claim", load("spine-m4304-mri.json"))
        status, _, body = curl(self.port, "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["status"], "ok")
        status, ct, body = curl(self.port, "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        self.assertIn('spinegate_messages_total{format="fhir+json",outcome="annotate"}', text)
        self.assertIn("spinegate_findings_total{rule=", text)
        self.assertIn("spinegate_queue_depth", text)
        self.assertIn("spinegate_answer_seconds_bucket", text)
        self.assertIn("# TYPE spinegate_code_set_total counter", text)
        self.assertIn("# TYPE spinegate_code_set_fallback_total counter", text)
        self.assertIsNotNone(metric(text, "spinegate_code_set_fallback_total", 'fit="newer"'), text)
        self.assertIsNotNone(metric(text, "spinegate_code_set_fallback_total", 'fit="older"'), text)
        # The queue's counters, each with its HELP and TYPE lines: the claim was committed.
        for name in ("spinegate_queue_commits_total", "spinegate_queue_commit_failures_total",
                     "spinegate_queue_syncs_total"):
            self.assertIn("# TYPE %s counter\n" % name, text)
            self.assertRegex(text, r"(?m)^# HELP %s \S" % name)
            self.assertRegex(text, r"(?m)^%s \d+$" % name)
        commits = re.search(r"(?m)^spinegate_queue_commits_total (\d+)$", text)
        self.assertGreaterEqual(int(commits.group(1)), 1)

    def test_code_set_by_date_and_counted(self):
        base = with_dx(load("spine-m4304-mri.json"), ["M43.04", "Q76.2"])
        before = curl(self.port, "/metrics")[2].decode()

        def count(text, labels, name="spinegate_code_set_total"):
            return metric(text, name, labels) or 0

        # 2026-11-15 is in FY2027: judged (the Excludes1 pair rejects), not
        # waved through with a table-coverage note. Real traffic: $validate
        # dry runs are counted apart (test_validate_counted_apart).
        status, _, body = curl(self.port, "/fhir/Claim", dated(base, "2026-11-15", "fy27-pair"))
        self.assertEqual(status, 422, body)
        oo = self.assertValidJson(body, "OperationOutcome")
        self.assertTrue(any(i["severity"] == "error" for i in oo["issue"]), oo)
        self.assertNotIn(b"table-coverage", body)
        status, _, body = curl(self.port, "/fhir/Claim", dated(base, "2025-11-03", "fy26-pair"))
        self.assertEqual(status, 422, body)
        # After the newest table: the newest is applied and a warning names it.
        ok = with_dx(load("spine-m4304-mri.json"), ["M43.16"])
        status, _, body = curl(self.port, "/fhir/Claim", dated(ok, "2027-11-15", "fy28-ok"))
        self.assertEqual(status, 201, body)
        oo = self.assertValidJson(body, "OperationOutcome")
        self.assertTrue(any(i["severity"] == "warning" and "FY2027" in json.dumps(i) for i in oo["issue"]), oo)
        after = curl(self.port, "/metrics")[2].decode()
        self.assertEqual(count(after, 'code_set="FY2027"') - count(before, 'code_set="FY2027"'), 2, after)
        self.assertEqual(count(after, 'code_set="FY2026"') - count(before, 'code_set="FY2026"'), 1, after)
        self.assertEqual(count(after, 'fit="newer"', "spinegate_code_set_fallback_total")
                         - count(before, 'fit="newer"', "spinegate_code_set_fallback_total"), 1, after)

    def test_not_found_and_method(self):
        self.assertEqual(curl(self.port, "/fhir/Patient", load("spine-m4304-mri.json"))[0], 404)
        status, _, _, hd = curl_h(self.port, "/fhir/Claim", method="GET")
        self.assertEqual((status, hd.get("allow")), (405, "POST"))
        status, _, _, hd = curl_h(self.port, "/fhir/metadata", load("spine-m4304-mri.json"))
        self.assertEqual((status, hd.get("allow")), (405, "GET, HEAD"))

    # ---- conformance (issue 11): every answer in both formats, valid ----

    def assertValid(self, body, fmt, resource_type):
        if fmt == "json":
            return self.assertValidJson(body, resource_type)
        self.assertValidXml(body, resource_type)

    def sink_bodies(self, cid):
        return [r[2] for r in self.sink.received if ('"%s"' % cid).encode() in r[2]]

    def test_post_claim_location_etag(self):
        claim = with_dx(load("spine-m4304-mri.json"), ["M43.00"])
        claim["id"] = "loc-1"
        status, ct, body, hd = curl_h(self.port, "/fhir/Claim", claim)
        self.assertEqual(status, 201, body)
        self.assertEqual(hd.get("location"), "/fhir/Claim/loc-1/_history/1")
        self.assertEqual(hd.get("etag"), 'W/"1"')
        self.assertValidJson(body, "OperationOutcome")
        status, ct, body, hd = curl_h(self.port, "/fhir/Claim", xml_claim("M43.00", "loc-x1"),
                                      "application/fhir+xml")
        self.assertEqual(status, 201, body)
        self.assertEqual(hd.get("location"), "/fhir/Claim/loc-x1/_history/1")
        self.assertValidXml(body, "OperationOutcome")
        # An id that is not a FHIR id is not echoed: the server names one.
        claim["id"] = "not a fhir id!"
        status, _, body, hd = curl_h(self.port, "/fhir/Claim", claim)
        self.assertEqual(status, 201, body)
        self.assertRegex(hd.get("location", ""), r"^/fhir/Claim/sg-[0-9a-f]+-\d{9}-0/_history/1$")
        # A reject creates nothing: no Location.
        claim = with_dx(load("spine-m4304-mri.json"), ["M43.04", "Q76.2"])
        claim["id"] = "loc-rej"
        status, _, body, hd = curl_h(self.port, "/fhir/Claim", claim,
                                     extra=["-H", "Prefer: return=minimal"])
        self.assertEqual(status, 422, body)
        self.assertNotIn("location", hd)
        self.assertValidJson(body, "OperationOutcome")

    def test_post_claim_prefer(self):
        claim = with_dx(load("spine-m4304-mri.json"), ["M43.00"])
        claim["id"] = "pref-min"
        status, _, body, hd = curl_h(self.port, "/fhir/Claim", claim,
                                     extra=["-H", "Prefer: return=minimal"])
        self.assertEqual((status, body), (201, b""))
        self.assertEqual(hd.get("location"), "/fhir/Claim/pref-min/_history/1")
        claim["id"] = "pref-oo"
        status, _, body = curl(self.port, "/fhir/Claim", claim,
                               extra=["-H", "Prefer: return=OperationOutcome"])
        self.assertEqual(status, 201, body)
        self.assertValidJson(body, "OperationOutcome")
        claim["id"] = "pref-rep"
        status, ct, body = curl(self.port, "/fhir/Claim", claim,
                                extra=["-H", "Prefer: return=representation"])
        self.assertEqual(status, 201, body)
        self.assertIn("application/fhir+json", ct)
        rep = self.assertValidJson(body, "Claim")
        self.assertEqual(rep["id"], "pref-rep")
        self.assertEqual(json.dumps(rep).count(ANNOTATION), 1)
        status, ct, body = curl(self.port, "/fhir/Claim", xml_claim("M43.00", "pref-rep-x"),
                                "application/fhir+xml", extra=["-H", "Prefer: return=representation"])
        self.assertEqual(status, 201, body)
        self.assertIn("application/fhir+xml", ct)
        self.assertValidXml(body, "Claim")
        self.assertEqual(body.count(ANNOTATION.encode()), 1)
        # Asked for in XML, the JSON Claim is still answered as sent, and says so.
        claim["id"] = "pref-rep-2"
        status, ct, body = curl(self.port, "/fhir/Claim", claim, "application/json",
                                extra=["-H", "Prefer: return=representation", "-H",
                                       "Accept: application/fhir+xml"])
        self.assertEqual(status, 201, body)
        self.assertIn("application/fhir+json", ct)
        self.assertEqual(self.assertValidJson(body, "Claim")["id"], "pref-rep-2")
        claim["id"] = "pref-rep-3"
        status, ct, body = curl(self.port, "/fhir/Claim", claim, "application/json",
                                extra=["-H", "Prefer: return=representation"])
        self.assertEqual(ct.split(";")[0], "application/json")

    def test_bundle_entries_in_request_order_json_and_xml(self):
        bundle = load("spine-bundle-two.json")
        patient, c1, c2 = bundle["entry"]
        c1["resource"]["id"], c2["resource"]["id"] = "ord-a", "ord-b"
        rej = copy.deepcopy(c1)
        rej["fullUrl"] = "urn:uuid:0e5c3a2b-1d4f-4e6a-8b9c-7d1e2f3a4b5c"
        rej["resource"] = with_dx(rej["resource"], ["M43.04", "Q76.2"])
        rej["resource"]["id"] = "ord-r"
        rej["resource"].pop("billablePeriod", None)  # as in the transaction test: the pair rejects undated
        for item in rej["resource"].get("item", []):
            item.pop("servicedDate", None)
            item.pop("servicedPeriod", None)
        bundle["entry"] = [c1, patient, rej, c2]
        want = ["201 Created", "200 OK", "422 Unprocessable Entity", "201 Created"]
        locs = ["Claim/ord-a/_history/1", None, None, "Claim/ord-b/_history/1"]
        status, _, body = curl(self.port, "/fhir", bundle)
        self.assertEqual(status, 200, body)
        doc = self.assertValidJson(body, "Bundle")
        self.assertEqual([e["response"]["status"] for e in doc["entry"]], want)
        self.assertEqual([e["response"].get("location") for e in doc["entry"]], locs)
        self.assertIn(("error", "business-rule"),
                      [(i["severity"], i["code"]) for i in doc["entry"][2]["response"]["outcome"]["issue"]])
        # The same answer in XML, asked for with Accept.
        for k, e in enumerate(bundle["entry"]):
            if e["resource"]["resourceType"] == "Claim":
                e["resource"]["id"] += "-x"
        status, ct, body = curl(self.port, "/fhir", bundle, extra=["-H", "Accept: application/fhir+xml"])
        self.assertEqual(status, 200, body)
        self.assertIn("application/fhir+xml", ct)
        self.assertValidXml(body, "Bundle")
        self.assertEqual(xml_entries(body),
                         list(zip(want, [l and l.replace("/_history", "-x/_history") for l in locs])))
        # An XML request Bundle: Patient, Claim, Claim.
        x = load_xml("spine-bundle-two.xml").replace(b'value="spine-b1"', b'value="ord-xb1"')
        x = x.replace(b'value="spine-b2"', b'value="ord-xb2"')
        status, ct, body = curl(self.port, "/fhir", x, "application/fhir+xml")
        self.assertEqual(status, 200, body)
        self.assertValidXml(body, "Bundle")
        self.assertEqual(xml_entries(body), [("200 OK", None),
                                             ("201 Created", "Claim/ord-xb1/_history/1"),
                                             ("201 Created", "Claim/ord-xb2/_history/1")])

    def test_bundle_prefer_minimal(self):
        bundle = three_claims("batch", ["min-1", "min-2", "min-3"])
        status, _, body = curl(self.port, "/fhir", bundle, extra=["-H", "Prefer: return=minimal"])
        self.assertEqual(status, 200, body)
        doc = self.assertValidJson(body, "Bundle")
        self.assertEqual([e["response"]["status"] for e in doc["entry"]],
                         ["200 OK"] + ["201 Created"] * 3)
        self.assertEqual(["outcome" in e["response"] for e in doc["entry"]], [True, False, False, False])
        self.assertEqual([e["response"].get("location") for e in doc["entry"][1:]],
                         ["Claim/min-%d/_history/1" % k for k in (1, 2, 3)])

    def test_bundle_entry_without_resource(self):
        bundle = three_claims("batch", ["nores-1", "nores-2", "nores-3"])
        bundle["entry"].insert(2, {"request": {"method": "DELETE", "url": "Claim/old"}})
        status, _, body = curl(self.port, "/fhir", bundle)
        self.assertEqual(status, 200, body)
        doc = self.assertValidJson(body, "Bundle")
        self.assertEqual([e["response"]["status"] for e in doc["entry"]],
                         ["200 OK", "201 Created", "400 Bad Request", "201 Created", "201 Created"])
        self.assertEqual(doc["entry"][2]["response"]["outcome"]["issue"][0]["code"], "not-supported")
        # In a transaction it fails the whole Bundle before anything is stored.
        ids = ["nores-t1", "nores-t2", "nores-t3"]
        bundle = three_claims("transaction", ids)
        bundle["entry"].insert(2, {"request": {"method": "DELETE", "url": "Claim/old"}})
        status, _, body = curl(self.port, "/fhir", bundle, extra=["-H", "Accept: application/fhir+xml"])
        self.assertEqual(status, 400, body)
        self.assertValidXml(body, "OperationOutcome")
        self.assertEqual(issues(body, "xml"), [("error", "not-supported")])
        self.assertIn(b'<expression value="Bundle.entry[2]"/>', body)
        time.sleep(0.3)
        self.assertEqual(forwarded_ids(self.sink, ids), [])

    def test_validate_both_forms_both_urls(self):
        rej = with_dx(load("spine-m4304-mri.json"), ["M43.04", "Q76.2"])
        n = 0
        for url in ("/fhir/Claim/$validate", "/fhir/$validate"):
            for form in ("claim", "parameters", "parameters+mode"):
                for fmt in ("json", "xml"):
                    n += 1
                    cid = "val-%d" % n
                    mode = "create" if form.endswith("mode") else None
                    if fmt == "json":
                        c = dict(rej, id=cid)
                        body = c if form == "claim" else parameters_json(c, mode)
                        ctype = "application/fhir+json"
                    else:
                        c = xml_claim("M43.0", cid)  # not billable: rejected
                        body = c if form == "claim" else parameters_xml(c, mode)
                        ctype = "application/fhir+xml"
                    what = "%s %s %s" % (url, form, fmt)
                    status, ct, out = curl(self.port, url, body, ctype)
                    self.assertEqual(status, 200, what + ": " + out.decode())
                    self.assertIn("application/fhir+" + fmt, ct, what)
                    self.assertValid(out, fmt, "OperationOutcome")
                    self.assertIn("error", [i[0] for i in issues(out, fmt)], what)
        time.sleep(0.3)
        self.assertFalse(any(b'"val-' in r[2] or b'value="val-' in r[2] for r in self.sink.received))

    def test_validate_refusals(self):
        claim = load("spine-m4304-mri.json")
        cases = [
            ("/fhir/Claim/$validate", parameters_json(claim, "delete"), 400, "not-supported"),
            ("/fhir/$validate", parameters_json({"resourceType": "Patient"}), 400, "not-supported"),
            ("/fhir/$validate", {"resourceType": "Parameters"}, 400, "required"),
            ("/fhir/Claim/$validate", load("spine-bundle-two.json"), 400, "not-supported"),
            ("/fhir/Claim", parameters_json(claim), 400, "not-supported"),
        ]
        for url, body, want, code in cases:
            status, _, out = curl(self.port, url, body)
            self.assertEqual(status, want, out)
            self.assertValidJson(out, "OperationOutcome")
            self.assertEqual(issues(out), [("error", code)], out)
        # A readable document whose Claim cannot be mapped is a verdict: 200.
        bad = copy.deepcopy(claim)
        bad["diagnosis"][0]["sequence"] = "one"
        status, _, out = curl(self.port, "/fhir/$validate", parameters_json(bad))
        self.assertEqual(status, 200, out)
        self.assertEqual(issues(out), [("error", "value")])
        status, _, out = curl(self.port, "/fhir/$validate", b'{"resourceType": "Parameters", ')
        self.assertEqual(status, 400, out)

    def test_validate_counted_apart(self):
        rej = with_dx(load("spine-m4304-mri.json"), ["M43.04", "Q76.2"])
        rej["id"] = "val-metrics"
        before = curl(self.port, "/metrics")[2].decode()
        for url in ("/fhir/Claim/$validate", "/fhir/$validate"):
            self.assertEqual(curl(self.port, url, parameters_json(rej))[0], 200)
        after = curl(self.port, "/metrics")[2].decode()
        lab = 'format="fhir+json",outcome="reject"'
        self.assertEqual(metric(after, "spinegate_messages_total", lab),
                         metric(before, "spinegate_messages_total", lab), after)
        self.assertEqual((metric(after, "spinegate_validations_total", lab) or 0)
                         - (metric(before, "spinegate_validations_total", lab) or 0), 2, after)

    def test_content_negotiation(self):
        claim = load("spine-m4304-mri.json")
        v = "/fhir/Claim/$validate"
        cases = [
            # (content type, extra headers, query, wanted media type)
            ("application/json", [], "", "application/json"),
            ("application/fhir+json", [], "", "application/fhir+json"),
            ("application/json", ["Accept: application/fhir+xml;q=0.5, application/fhir+json;q=0.9"],
             "", "application/fhir+json"),
            ("application/json", ["Accept: application/fhir+json;q=0.2, application/fhir+xml"], "",
             "application/fhir+xml"),
            ("application/json", ["Accept: application/xml"], "", "application/xml"),
            ("application/json", ["Accept: */*"], "", "application/json"),
            ("application/fhir+json", ["Accept: text/html"], "", "application/fhir+json"),
            ("application/fhir+json", ["Accept: application/fhir+xml;q=0, */*;q=0.1"], "",
             "application/fhir+json"),
            ("application/fhir+json", ["Accept: application/fhir+json"], "?_format=xml",
             "application/fhir+xml"),
            ("application/fhir+json", ["Accept: application/fhir+xml"], "?_format=application/fhir+json",
             "application/fhir+json"),
            ("application/fhir+json", [], "?_format=application%2Fxml", "application/xml"),
            ("application/fhir+json",
             ["Accept: application/fhir+xml; fhirVersion=4.0; q=0.8, application/json; q=0.7"], "",
             "application/fhir+xml"),
            ("application/fhir+json", ["Accept: text/html, application/*;q=0.5"], "",
             "application/fhir+json"),
        ]
        for ctype, hdrs, query, want in cases:
            extra = []
            for x in hdrs:
                extra += ["-H", x]
            status, ct, out = curl(self.port, v + query, claim, ctype, extra=extra)
            self.assertEqual(status, 200, out)
            self.assertEqual(ct.split(";")[0], want, (ctype, hdrs, query))
            self.assertValid(out, "xml" if "xml" in want else "json", "OperationOutcome")
        # An XML request with */*: answered in XML.
        status, ct, out = curl(self.port, v, xml_claim(), "application/fhir+xml", extra=["-H", "Accept: */*"])
        self.assertEqual(ct.split(";")[0], "application/fhir+xml")
        # _pretty: indented, still the same resource.
        for fmt in ("json", "xml"):
            status, ct, out = curl(self.port, "/fhir/metadata?_pretty=true&_format=" + fmt)
            self.assertEqual(status, 200)
            self.assertGreater(out.count(b"\n"), 10)
            self.assertValid(out, fmt, "CapabilityStatement")
            plain = curl(self.port, "/fhir/metadata?_format=" + fmt)[2]
            self.assertLessEqual(plain.strip().count(b"\n"), 1)

    def test_capability_statement_lists_what_is_implemented(self):
        status, ct, body = curl(self.port, "/fhir/metadata")
        self.assertEqual(status, 200)
        cs = self.assertValidJson(body, "CapabilityStatement")
        self.assertEqual(cs["fhirVersion"], "4.0.1")
        self.assertEqual(cs["kind"], "instance")
        self.assertEqual(set(cs["format"]), {"application/fhir+json", "application/fhir+xml",
                                             "application/json", "application/xml", "text/xml",
                                             "json", "xml"})
        self.assertEqual(len(cs["rest"]), 1)
        rest = cs["rest"][0]
        self.assertEqual(rest["mode"], "server")
        self.assertEqual([r["type"] for r in rest["resource"]], ["Claim"])
        self.assertEqual([i["code"] for i in rest["resource"][0]["interaction"]], ["create"])
        self.assertEqual([o["name"] for o in rest["resource"][0]["operation"]], ["validate"])
        self.assertEqual([i["code"] for i in rest["interaction"]], ["batch", "transaction"])
        self.assertEqual([o["name"] for o in rest["operation"]], ["validate"])
        status, ct, body = curl(self.port, "/fhir/metadata", extra=["-H", "Accept: application/fhir+xml"])
        self.assertIn("application/fhir+xml", ct)
        self.assertValidXml(body, "CapabilityStatement")
        self.assertIn(b'<fhirVersion value="4.0.1"/>', body)

    def test_every_error_answer_in_both_formats(self):
        claim = load("spine-m4304-mri.json")
        cases = [
            ("/fhir/Patient", claim, "application/fhir+json", None, 404),
            ("/fhir/Claim", None, None, "GET", 405),
            ("/fhir/metadata", claim, "application/fhir+json", None, 405),
            ("/fhir/Claim", b"hello", "text/plain", None, 415),
            ("/fhir/Claim", b'{"resourceType": ', "application/fhir+json", None, 400),
            ("/fhir/Claim", b"<Claim xmlns='http://hl7.org/fhir'>", "application/fhir+xml", None, 400),
            ("/fhir", claim, "application/fhir+json", None, 400),
            ("/fhir/Claim", {"resourceType": "Patient"}, "application/fhir+json", None, 400),
        ]
        for path, body, ctype, method, want in cases:
            for fmt in ("json", "xml"):
                status, ct, out = curl(self.port, path, body, ctype or "application/fhir+json", method,
                                       extra=["-H", "Accept: application/fhir+" + fmt])
                self.assertEqual(status, want, (path, fmt, out))
                self.assertIn("application/fhir+" + fmt, ct, (path, fmt))
                self.assertValid(out, fmt, "OperationOutcome")

    def test_listener_errors_negotiated(self):
        # A 413 the listener answers itself, as soon as Content-Length is
        # over max-body-size, follows Accept like every other answer.
        for fmt in ("json", "xml"):
            s = socket.create_connection(("127.0.0.1", self.port))
            s.sendall(b"POST /fhir/Claim HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
                      b"Accept: application/fhir+" + fmt.encode() + b"\r\nContent-Length: 2000000\r\n\r\n")
            s.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                        re.search(rb"Content-Length: (\d+)", data, re.I).group(1)):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except (OSError, AttributeError):
                pass
            s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            self.assertIn(b" 413 ", head.split(b"\r\n")[0] + b" ")
            self.assertIn(b"Content-Type: application/fhir+" + fmt.encode(), head)
            self.assertValid(body, fmt, "OperationOutcome")

    def test_resent_claim_carries_one_pass_of_findings(self):
        # Billing sends back what the first pass forwarded: the second pass
        # forwards exactly the same bytes, one pass of findings, not two.
        for fmt in ("json", "xml"):
            cid = "twice-" + fmt
            if fmt == "json":
                claim = with_dx(load("spine-m4304-mri.json"), ["M43.00"])
                claim["id"] = cid
                body, ctype, marker = json.dumps(claim).encode(), "application/fhir+json", b'"%s"' % cid.encode()
            else:
                body, ctype, marker = xml_claim("M43.00", cid), "application/fhir+xml", b'value="%s"' % cid.encode()
            got = lambda: [r[2] for r in self.sink.received if marker in r[2]]
            self.assertEqual(curl(self.port, "/fhir/Claim", body, ctype)[0], 201)
            h.wait_for(lambda: len(got()) == 1, 10, "first pass forwarded")
            first = got()[0]
            self.assertEqual(first.count(ANNOTATION.encode()), 1)
            self.assertEqual(curl(self.port, "/fhir/Claim", first, ctype)[0], 201)
            h.wait_for(lambda: len(got()) == 2, 10, "second pass forwarded")
            self.assertEqual(got()[1], first, fmt)

    def test_accepted_claim_loses_stale_findings(self):
        # Accepted (a thoracic code for a thoracic MRI), but carrying an earlier pass's findings:
        # forwarded without any spinegate extension (annotate-accepted = no).
        claim = with_dx(load("spine-m4304-mri.json"), ["M47.814"])
        claim["id"] = "stale-acc"
        status, _, out = curl(self.port, "/fhir/Claim/$validate", claim)
        self.assertEqual(issues(out), [("information", "informational")], out)
        claim["extension"] = [{"url": ANNOTATION, "extension": [
            {"url": "verdict", "valueCode": "reject"}, {"url": "findings", "valueUnsignedInt": 3}]}]
        claim["diagnosis"][0]["extension"] = [
            {"url": "https://spinegate.invalid/fhir/StructureDefinition/finding",
             "extension": [{"url": "rule", "valueCode": "old"}, {"url": "severity", "valueCode": "reject"}]},
            {"url": "http://example.org/keep", "valueString": "theirs"}]
        self.assertEqual(curl(self.port, "/fhir/Claim", claim)[0], 201)
        h.wait_for(lambda: self.sink_bodies("stale-acc"), 10, "forwarded")
        fwd = self.sink_bodies("stale-acc")[0]
        self.assertNotIn(b"spinegate.invalid", fwd)
        self.assertIn(b"http://example.org/keep", fwd)
        self.assertValidJson(fwd, "Claim")


class AnnotateAccepted(unittest.TestCase):
    """annotate-accepted = yes: an accepted Claim is forwarded with the
    header extension (verdict accept, 0 findings) and nothing else."""

    @classmethod
    def setUpClass(cls):
        cls.sink = h.HttpSink().start()
        cls.d = h.Daemon("--downstream-fhir", "http://127.0.0.1:%d/r4" % cls.sink.port,
                         "--annotate-accepted", mllp=False, http=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()
        cls.sink.stop()

    def test_accepted_claim_carries_the_header(self):
        claim = with_dx(load("spine-m4304-mri.json"), ["M47.814"])
        claim["id"] = "acc-head"
        self.assertEqual(curl(self.d.http_port, "/fhir/Claim", claim)[0], 201)
        h.wait_for(lambda: self.sink.received, 10, "forwarded")
        fwd = json.loads(self.sink.received[0][2])
        ok, why = h.fhir_json_valid(self.sink.received[0][2])
        self.assertTrue(ok, why)
        head = [x for x in fwd["extension"] if x["url"] == ANNOTATION]
        self.assertEqual(len(head), 1)
        subs = {x["url"]: x for x in head[0]["extension"]}
        self.assertEqual(subs["verdict"]["valueCode"], "accept")
        self.assertEqual(subs["findings"]["valueUnsignedInt"], 0)
        self.assertRegex(subs["rulePack"]["valueString"], r" v\d+$")
        self.assertRegex(subs["codeSet"]["valueString"], r"^FY20\d\d$")
        self.assertNotIn("finding", json.dumps(fwd).replace("findings", ""))


if __name__ == "__main__":
    h.run(__name__)
