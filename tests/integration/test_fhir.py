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
    with tempfile.NamedTemporaryFile(delete=False) as out:
        pass
    args = ["curl", "-s", "-o", out.name, "-w", "%{http_code} %{content_type}", "--max-time", "30"]
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
    code, _, ct = r.stdout.partition(" ")
    return int(code or 0), ct, content


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

    def test_batch_bundle_one_verdict_per_claim(self):
        status, _, body = curl(self.port, "/fhir", load("spine-bundle-two.json"))
        self.assertEqual(status, 200, body)
        doc = self.assertValidJson(body, "Bundle")
        self.assertIn(doc["type"], ("batch-response", "transaction-response"))
        self.assertEqual(len(doc["entry"]), 2)

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
        self.assertEqual([e["response"]["status"] for e in doc["entry"]], ["201 Created"] * 3)
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
                         ["201 Created", "400 Bad Request", "201 Created"])
        bad = doc["entry"][1]["response"]["outcome"]["issue"][0]
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

    def test_code_set_by_date_and_counted(self):
        base = with_dx(load("spine-m4304-mri.json"), ["M43.04", "Q76.2"])
        before = curl(self.port, "/metrics")[2].decode()

        def count(text, labels, name="spinegate_code_set_total"):
            return metric(text, name, labels) or 0

        # 2026-11-15 is in FY2027: judged (the Excludes1 pair rejects), not
        # waved through with a table-coverage note.
        status, _, body = curl(self.port, "/fhir/Claim/$validate", dated(base, "2026-11-15", "fy27-pair"))
        self.assertEqual(status, 200, body)
        oo = self.assertValidJson(body, "OperationOutcome")
        self.assertTrue(any(i["severity"] == "error" for i in oo["issue"]), oo)
        self.assertNotIn(b"table-coverage", body)
        status, _, body = curl(self.port, "/fhir/Claim", dated(base, "2025-11-03", "fy26-pair"))
        self.assertEqual(status, 422, body)
        # After the newest table: the newest is applied and a warning names it.
        ok = with_dx(load("spine-m4304-mri.json"), ["M43.16"])
        status, _, body = curl(self.port, "/fhir/Claim/$validate", dated(ok, "2027-11-15", "fy28-ok"))
        self.assertEqual(status, 200, body)
        oo = self.assertValidJson(body, "OperationOutcome")
        self.assertTrue(any(i["severity"] == "warning" and "FY2027" in json.dumps(i) for i in oo["issue"]), oo)
        after = curl(self.port, "/metrics")[2].decode()
        self.assertEqual(count(after, 'code_set="FY2027"') - count(before, 'code_set="FY2027"'), 2, after)
        self.assertEqual(count(after, 'code_set="FY2026"') - count(before, 'code_set="FY2026"'), 1, after)
        self.assertEqual(count(after, 'fit="newer"', "spinegate_code_set_fallback_total")
                         - count(before, 'fit="newer"', "spinegate_code_set_fallback_total"), 1, after)

    def test_not_found_and_method(self):
        self.assertEqual(curl(self.port, "/fhir/Patient", load("spine-m4304-mri.json"))[0], 404)
        self.assertEqual(curl(self.port, "/fhir/Claim", method="GET")[0], 405)


if __name__ == "__main__":
    h.run(__name__)
