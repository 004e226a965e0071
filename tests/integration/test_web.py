"""test_web.py - the worklist web page (listen-admin) in a real browser:
headless Chromium (Debian's chromium), driven over its DevTools protocol
(python3-websocket), against the real daemon with a real MLLP billing sink.
A coder logs in (a wrong password first), filters by rule, opens a rejected
message, fixes a diagnosis code in place, sees the verdict, resends it and
sees it delivered and the item resent; requeues a dead letter. A POST
without the session's CSRF token (curl) is refused. Each step's screenshot
is saved under tests/artifacts/web/ in the build tree.

Skips, saying why, when chromium or python3-websocket is missing or the
browser does not start.
"""
import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import harness as h
from test_fhir import curl, load, with_dx
from test_mllp import dft

ADMIN = os.path.join(h.TOP_BUILDDIR, "spinegate-admin")
ARTIFACTS = os.path.join(h.TOP_BUILDDIR, "tests", "artifacts", "web")
PASSWORD = "correct horse battery"

try:
    import websocket
except ImportError:  # the test skips below
    websocket = None


class Browser:
    """One headless Chromium and a DevTools session on its first page."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="sg-chromium-")
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            raise unittest.SkipTest("chromium is not installed (apt-get install chromium)")
        if websocket is None:
            raise unittest.SkipTest("python3-websocket is not installed")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--user-data-dir=" + self.profile, "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = None
        # Chromium names its DevTools port on stderr once it listens.
        for _ in range(200):
            line = self.proc.stderr.readline().decode(errors="replace")
            if not line:
                break
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://")[1].split("/")[0].rsplit(":", 1)[1])
                break
        if port is None:
            self.close()
            raise unittest.SkipTest("chromium did not start its DevTools endpoint")
        with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.events = []
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError("%s: %s" % (method, msg["error"]))
                return msg["result"]

    def js(self, expr):
        """The value of expr (awaited when a promise) in the page."""
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            raise AssertionError("%s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait(self, expr, what):
        """Polls expr until true; a page still loading (no body yet, context
        replaced by a navigation) counts as not yet."""
        guarded = "(() => { try { return !!(%s); } catch (e) { return false; } })()" % expr

        def poll():
            try:
                return self.js(guarded)
            except AssertionError:
                return False
        return h.wait_for(poll, 20, what)

    def go(self, url):
        self.call("Page.navigate", url=url)

    def shot(self, name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        # The whole page, not only the window: the verdict sits below the message.
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000),
                "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)["data"]
        with open(os.path.join(ARTIFACTS, name + ".png"), "wb") as f:
            f.write(base64.b64decode(data))

    def page_errors(self):
        """Script exceptions, and what the browser refused (Content-Security-Policy)
        or reported as a script error, so far."""
        bad = []
        for e in self.events:
            if e["method"] == "Runtime.exceptionThrown":
                bad.append(e["params"]["exceptionDetails"])
            elif e["method"] == "Log.entryAdded":
                entry = e["params"]["entry"]
                if entry["source"] in ("security", "violation", "javascript") or \
                        "Content Security Policy" in entry.get("text", ""):
                    bad.append(entry)
        return bad

    def cookies(self):
        return self.call("Network.getCookies")["cookies"]

    def close(self):
        if getattr(self, "ws", None):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def curl_post(url, body, cookie=None, headers=()):
    """(status, headers and body) of a plain POST with curl."""
    cmd = ["curl", "-s", "-i", "-X", "POST", "--data-binary", body, url]
    if cookie:
        cmd += ["-H", "Cookie: " + cookie]
    for hd in headers:
        cmd += ["-H", hd]
    out = subprocess.run(cmd, capture_output=True, timeout=30).stdout.decode(errors="replace")
    return int(out.split(" ", 2)[1]), out


def items(d):
    p = subprocess.run([ADMIN, "--data-dir", d.data_dir, "list", "--json"], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return {i["control_id"]: i for i in map(json.loads, p.stdout.decode().splitlines())}


class WebPageTest(unittest.TestCase):

    def setUp(self):
        self.refuse = True
        self.billing = h.MllpSink(mode=lambda m: ("AE", "Guarantor account closed")
                                  if "POISON" in m and self.refuse else "AA").start()
        self.admin_port = h.free_port()
        self.d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % self.billing.port,
                          "--listen-admin", "127.0.0.1:%d" % self.admin_port, http=True)
        os.makedirs(self.d.data_dir, exist_ok=True)
        p = subprocess.run([ADMIN, "--data-dir", self.d.data_dir, "user", "add", "coder1"],
                           input=(PASSWORD + "\n").encode(), capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.d.start()
        h.wait_port(self.admin_port, proc=self.d.proc)
        self.base = "http://127.0.0.1:%d" % self.admin_port
        self.browser = None

    def tearDown(self):
        if self.browser:
            self.browser.close()
        self.d.cleanup()  # fails on a sanitizer report in the daemon's log
        self.billing.stop()

    def login(self, b, password):
        b.go(self.base + "/")
        b.wait("document.querySelector('#login') !== null", "the login page")
        b.js("document.querySelector('#user').value = 'coder1';"
             "document.querySelector('#password').value = %s;"
             "document.querySelector('#login-button').click(); true" % json.dumps(password))

    def test_coder_workflow(self):
        d = self.d
        self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, h.demo("04-reject-excludes1.hl7"))),
                         "AE")
        self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, dft("POISON01", ["J20.9"]))), "AA")
        h.wait_for(lambda: "POISON01" in items(d), 10, "the dead letter item")

        # Refused without a session, and with a wrong password.
        status, out = curl_post(self.base + "/api/items/1/resolve", '{"note":"x"}')
        self.assertEqual(status, 401, out)
        status, out = curl_post(self.base + "/login", "user=coder1&password=wrong")
        self.assertEqual(status, 401, out)
        self.assertNotIn("Set-Cookie", out)
        # The right password from another site's page (login CSRF): refused.
        status, out = curl_post(self.base + "/login", "user=coder1&password=" +
                                PASSWORD.replace(" ", "+"),
                                headers=["Origin: http://attacker.example"])
        self.assertEqual(status, 403, out)
        self.assertNotIn("Set-Cookie", out)

        self.browser = b = Browser()
        self.login(b, "not the password")
        b.wait("!document.querySelector('#error')?.hidden && document.readyState === 'complete'",
               "the refusal shown")
        self.assertEqual(b.js("location.pathname"), "/login")
        b.shot("01-login-refused")

        self.login(b, PASSWORD)
        b.wait("document.body.dataset.shown === '#/list'", "the worklist")
        self.assertEqual(b.js("document.querySelector('#who').textContent"), "coder1")
        self.assertEqual(b.js("document.querySelectorAll('#items tbody tr').length"), 2)
        b.shot("02-worklist")

        # The session cookie as the brief asks: HttpOnly, SameSite=Strict.
        cookie = [c for c in b.cookies() if c["name"] == "sg_session"][0]
        self.assertTrue(cookie["httpOnly"])
        self.assertEqual(cookie["sameSite"], "Strict")
        self.assertEqual(b.js("document.cookie"), "")

        # Filter by rule: the chip counts, then the form.
        counts = b.js("[...document.querySelectorAll('#rule-counts .chip')]"
                      ".map(c => c.textContent)")
        self.assertIn("excludes1-pair 1", counts)
        b.js("document.querySelector('#f-rule').value = 'excludes1-pair';"
             "document.querySelector('#filters').requestSubmit(); true")
        b.wait("document.body.dataset.shown.includes('rule=excludes1-pair')", "the filtered list")
        rows = b.js("[...document.querySelectorAll('#items tbody tr')]"
                    ".map(r => r.cells[5].textContent)")
        self.assertEqual(rows, ["DEMO0004"])
        b.shot("03-filtered-by-rule")

        # "To" a date includes that day.
        day = items(d)["DEMO0004"]["received"][:10]
        total = "fetch('/api/items?until=%s').then(r => r.json()).then(j => j.total)"
        self.assertEqual(b.js(total % day), 2)
        self.assertEqual(b.js(total % "2020-01-01"), 0)

        # Open it: the finding beside DG1(1), its field 3 marked.
        b.js("document.querySelector('#items tbody a').click(); true")
        b.wait("document.body.dataset.shown.startsWith('#/item/')", "the message view")
        rows = b.js("[...document.querySelectorAll('#message tbody tr')].map(r => "
                    "[r.cells[0].textContent, r.cells[2].textContent])")
        dg1 = dict(rows)
        self.assertIn("excludes1-pair", dg1["DG1(1)"])
        self.assertIn("Reference: ICD-10-CM Official Guidelines", dg1["DG1(1)"])
        self.assertEqual(dg1["DG1(2)"], "")
        self.assertEqual(b.js("[...document.querySelectorAll('#message .cell.marked')]"
                              ".map(c => c.title)"), ["DG1-3"])
        self.assertIn("MRN00123", b.js("document.querySelector('#item-facts').textContent"))
        b.shot("04-message-view")

        # A code that is still wrong: the verdict says so, no resend offered.
        set_code = ("(() => { const i = document.querySelector('#message input[data-occ=\"2\"]');"
                    " i.value = %s; i.dispatchEvent(new Event('input')); return true; })()")
        self.assertEqual(b.js("document.querySelector('#message input[data-occ=\"2\"]').value"),
                         "Q76.2")
        b.js(set_code % json.dumps("M48.06"))
        b.js("document.querySelector('#check').click(); true")
        b.wait("document.querySelector('#verdict').textContent.includes('Still refused')",
               "the refusal of M48.06")
        self.assertIn("code-not-billable", b.js("document.querySelector('#verdict').textContent"))
        self.assertTrue(b.js("document.querySelector('#resend').disabled"))

        # The fix: passes, then confirmed.
        b.js(set_code % json.dumps("M54.16"))
        b.js("document.querySelector('#resend-note').value = 'Q76.2 not documented'; true")
        b.js("document.querySelector('#check').click(); true")
        b.wait("document.querySelector('#verdict').textContent.includes('Passes')",
               "the verdict on M54.16")
        self.assertFalse(b.js("document.querySelector('#resend').disabled"))
        b.shot("05-verdict-before-resend")
        b.js("document.querySelector('#resend').click(); true")
        b.wait("document.querySelector('#action-result').textContent.startsWith('Resent')",
               "the resend")
        self.assertIn("resent", b.js("document.querySelector('#item-title').textContent"))
        b.shot("06-resent")
        h.wait_for(lambda: "DEMO0004" in self.billing.control_ids(), 10, "the fixed message")
        got = [m for m in self.billing.messages() if "DEMO0004" in m][-1]
        self.assertIn("M54.16", got)
        self.assertNotIn("Q76.2", got)
        self.assertNotIn("ZSG|", got)  # accepted: the old findings are not carried on
        it = items(d)["DEMO0004"]
        self.assertEqual((it["state"], it["changed_by"], it["note"]),
                         ("resent", "coder1", "Q76.2 not documented"))

        # CSRF: the session's cookie without its token, or a wrong one, is refused.
        dead_id = items(d)["POISON01"]["id"]
        jar = "sg_session=" + cookie["value"]
        url = "%s/api/items/%d/requeue" % (self.base, dead_id)
        status, out = curl_post(url, "{}", cookie=jar)
        self.assertEqual(status, 403, out)
        status, out = curl_post(url, "{}", cookie=jar, headers=["X-CSRF-Token: " + "0" * 64])
        self.assertEqual(status, 403, out)
        self.assertEqual(items(d)["POISON01"]["state"], "open")

        # Requeue the dead letter once billing takes it.
        self.refuse = False
        b.js("location.hash = '#/item/%d'; true" % dead_id)
        b.wait("document.body.dataset.shown === '#/item/%d'" % dead_id, "the dead letter")
        self.assertFalse(b.js("document.querySelector('#requeue-actions').hidden"))
        self.assertTrue(b.js("document.querySelector('#edit-actions').hidden"))
        b.js("document.querySelector('#requeue').click(); true")
        b.wait("document.querySelector('#action-result').textContent.startsWith('Requeued')",
               "the requeue")
        b.shot("07-requeued")
        h.wait_for(lambda: "POISON01" in self.billing.control_ids(), 10, "the requeued message")
        self.assertEqual(items(d)["POISON01"]["state"], "requeued")

        # A rejected FHIR Claim: its diagnoses one a row, codes editable, the finding beside.
        claim = with_dx(load("spine-m4304-mri.json"), ["M43.04", "Q76.2"])
        claim["id"] = "wl-web-fhir"
        status, _, body = curl(d.http_port, "/fhir/Claim", claim)
        self.assertEqual(status, 422, body)
        fhir_id = items(d)["wl-web-fhir"]["id"]
        b.js("location.hash = '#/item/%d'; true" % fhir_id)
        b.wait("document.body.dataset.shown === '#/item/%d'" % fhir_id, "the FHIR Claim")
        rows = b.js("[...document.querySelectorAll('#message tbody tr')].map(r => "
                    "[r.cells[0].textContent, r.cells[2].textContent])")
        self.assertEqual([r[0] for r in rows][:2], ["diagnosis 1", "diagnosis 2"])
        self.assertIn("excludes1-pair", rows[0][1])  # Claim.diagnosis[0]
        self.assertEqual(rows[1][1], "")
        self.assertEqual(b.js("[...document.querySelectorAll('#message input.code')]"
                              ".map(i => i.value)"), ["M43.04", "Q76.2"])
        self.assertIn('"wl-web-fhir"', b.js("document.querySelector('#message-raw').textContent"))
        b.shot("10-fhir-claim")

        # Trends and destinations.
        b.js("location.hash = '#/trends'; true")
        b.wait("document.body.dataset.shown === '#/trends'", "the trends")
        self.assertIn("excludes1-pair",
                      b.js("document.querySelector('#chart-rules').textContent"))
        self.assertGreater(b.js("document.querySelectorAll('#chart-rules svg rect').length"), 0)
        self.assertGreater(b.js("document.querySelectorAll('#chart-sources svg rect').length"), 0)
        b.shot("08-trends")
        b.js("location.hash = '#/destinations'; true")
        b.wait("document.body.dataset.shown === '#/destinations'", "the destinations")
        dests = b.js("[...document.querySelectorAll('#dests tbody tr')].map(r => r.cells[0]"
                     ".textContent)")
        self.assertIn("hl7", dests)
        b.shot("09-destinations")

        # Log out: the page's own form (its hidden CSRF field); the cookie is dead after.
        b.js("document.querySelector('#logout button').click(); true")
        b.wait("location.pathname === '/login' && document.querySelector('#login')",
               "the login page after logging out")
        status, out = curl_post(self.base + "/api/items/%d/resolve" % dead_id, '{"note":"x"}',
                                cookie=jar)
        self.assertEqual(status, 401, out)

        # The page ran within its Content-Security-Policy, without a script error.
        self.assertEqual(b.page_errors(), [])

        # Who saw and changed what.
        with open(os.path.join(d.data_dir, "admin-audit.log")) as f:
            audit = f.read()
        self.assertEqual(os.stat(os.path.join(d.data_dir, "admin-audit.log")).st_mode & 0o777,
                         0o600)
        for want in ("user=coder1 action=login-refused", "user=coder1 action=login ",
                     "action=view item=%d" % it["id"], "action=resend item=%d" % it["id"],
                     "action=csrf-refused", "action=requeue item=%d" % dead_id,
                     "user=coder1 action=logout"):
            self.assertIn(want, audit)
        # The page's patient data never reaches the daemon's log.
        self.assertNotIn("MRN00123", d.logtext())
        self.assertNotIn(PASSWORD, d.logtext())


def curl_get(url):
    out = subprocess.run(["curl", "-s", "-i", url], capture_output=True,
                         timeout=30).stdout.decode(errors="replace")
    return int(out.split(" ", 2)[1]), out


class SessionTest(unittest.TestCase):
    """Sessions and what the page is served with (curl only)."""

    def test_files_types_and_policy(self):
        port = h.free_port()
        d = h.Daemon("--listen-admin", "127.0.0.1:%d" % port).start()
        try:
            h.wait_port(port, proc=d.proc)
            base = "http://127.0.0.1:%d" % port
            for path, ctype in (("/login", "text/html"), ("/app.js", "text/javascript"),
                                ("/style.css", "text/css")):
                status, out = curl_get(base + path)
                self.assertEqual(status, 200, out)
                head = out.split("\r\n\r\n")[0]
                self.assertIn("Content-Type: " + ctype, head)
                self.assertIn("Content-Security-Policy: default-src 'none'; script-src 'self'",
                              head)
                self.assertIn("X-Content-Type-Options: nosniff", head)
            # Without a session: the page sends to the login, the API says 401.
            status, out = curl_get(base + "/")
            self.assertEqual(status, 303, out)
            self.assertIn("Location: /login", out)
            status, out = curl_get(base + "/api/items")
            self.assertEqual(status, 401, out)
            self.assertIn("no accounts in", d.logtext())
        finally:
            d.cleanup()

    def test_user_passwd_and_remove(self):
        port = h.free_port()
        d = h.Daemon("--listen-admin", "127.0.0.1:%d" % port)
        try:
            os.makedirs(d.data_dir, exist_ok=True)

            def user(*args, password=None):
                return subprocess.run([ADMIN, "--data-dir", d.data_dir, "user"] + list(args),
                                      input=(password + "\n").encode() if password else b"",
                                      capture_output=True, timeout=60)

            def login(password):
                return curl_post("http://127.0.0.1:%d/login" % port,
                                 "user=ann&password=" + password.replace(" ", "+"))[0]

            self.assertEqual(user("add", "ann", password="first password").returncode, 0)
            self.assertEqual(user("add", "ann", password="first password").returncode, 1)
            self.assertEqual(user("add", "ann:x", password="first password").returncode, 2)
            self.assertEqual(user("add", "bob", password="short").returncode, 2)
            with open(os.path.join(d.data_dir, "admin-users")) as f:
                text = f.read()
            self.assertTrue(text.startswith("ann:$argon2id$"), text)
            self.assertNotIn("first password", text)
            d.start()
            h.wait_port(port, proc=d.proc)
            self.assertEqual(login("first password"), 303)
            self.assertEqual(user("passwd", "ann", password="second password").returncode, 0)
            self.assertEqual(login("first password"), 401)
            self.assertEqual(login("second password"), 303)
            self.assertEqual(user("remove", "ann").returncode, 0)
            self.assertEqual(login("second password"), 401)
            self.assertEqual(user("remove", "ann").returncode, 1)
        finally:
            d.cleanup()

    def test_non_loopback_warns(self):
        p = subprocess.run([h.DAEMON, "--listen-admin", "0.0.0.0:8081", "--check-config"],
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"listen-admin is not on loopback and has no TLS", p.stderr)
        p = subprocess.run([h.DAEMON, "--listen-admin", "0.0.0.0:8081",
                            "--admin-secure-cookie", "--check-config"],
                           capture_output=True, timeout=60)
        self.assertNotIn(b"listen-admin", p.stderr)

    def test_session_expires(self):
        port = h.free_port()
        d = h.Daemon("--listen-admin", "127.0.0.1:%d" % port, "--admin-session-ttl", "1s")
        try:
            os.makedirs(d.data_dir, exist_ok=True)
            p = subprocess.run([ADMIN, "--data-dir", d.data_dir, "user", "add", "coder2"],
                               input=(PASSWORD + "\n").encode(), capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            d.start()
            h.wait_port(port, proc=d.proc)
            base = "http://127.0.0.1:%d" % port
            status, out = curl_post(base + "/login", "user=coder2&password=" +
                                    PASSWORD.replace(" ", "+"))
            self.assertEqual(status, 303, out)
            cookie = [l for l in out.splitlines() if l.startswith("Set-Cookie: sg_session=")][0]
            jar = cookie.split(": ", 1)[1].split(";")[0]
            time.sleep(2)  # past the ttl: whatever the machine's speed, it is over
            status, out = curl_post(base + "/api/items/1/resolve", '{"note":"x"}', cookie=jar)
            self.assertEqual(status, 401, out)
        finally:
            d.cleanup()


def add_user(d, name, password=PASSWORD):
    os.makedirs(d.data_dir, exist_ok=True)
    p = subprocess.run([ADMIN, "--data-dir", d.data_dir, "user", "add", name],
                       input=(password + "\n").encode(), capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr


def body_of(out):
    return out.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in out else ""


class LockoutTest(unittest.TestCase):
    """Failed logins lock the account (and, many more, the address); a
    locked login looks like a wrong password; spinegate-admin user unlock
    ends it through the daemon's socket."""

    def test_lockout_and_unlock(self):
        port = h.free_port()
        d = h.Daemon("--listen-admin", "127.0.0.1:%d" % port, "--admin-lockout-attempts", "3",
                     "--admin-lockout-minutes", "10")
        try:
            add_user(d, "ann")
            add_user(d, "bob")
            d.start()
            h.wait_port(port, proc=d.proc)
            url = "http://127.0.0.1:%d/login" % port

            def login(user, password):
                return curl_post(url, "user=%s&password=%s" % (user, password.replace(" ", "+")))

            status, wrong = login("ann", "not the password")
            self.assertEqual(status, 401)
            for _ in range(2):
                self.assertEqual(login("ann", "not the password")[0], 401)
            # Locked: the right password gets the wrong password's page.
            status, locked = login("ann", PASSWORD)
            self.assertEqual(status, 401)
            self.assertEqual(body_of(locked), body_of(wrong))
            self.assertNotIn("sg_session=", locked)
            # A name without an account locks the same way: nothing to tell them apart.
            for _ in range(3):
                status, ghost = login("ghost", "not the password")
            status, ghost = login("ghost", PASSWORD)
            self.assertEqual((status, body_of(ghost)), (401, body_of(wrong)))
            with open(os.path.join(d.data_dir, "admin-audit.log")) as f:
                audit = f.read()
            self.assertIn("user=ann action=login-locked", audit)
            self.assertIn("user=ghost action=login-locked", audit)
            self.assertIn("account ann locked for 10 minutes after 3 failed logins", d.logtext())
            self.assertNotIn(PASSWORD, d.logtext())

            # unlock goes to the daemon, which holds the locks.
            p = subprocess.run([ADMIN, "--data-dir", d.data_dir, "user", "unlock", "ann"],
                               capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(b"account ann unlocked", p.stdout)
            status, out = login("ann", PASSWORD)
            self.assertEqual(status, 303, out)
            self.assertIn("Set-Cookie: sg_session=", out)
            self.assertNotIn("Secure", out)  # plain http: no Secure cookie
            p = subprocess.run([ADMIN, "--data-dir", d.data_dir, "user", "unlock", "ann"],
                               capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(b"was not locked", p.stdout)
            with open(os.path.join(d.data_dir, "admin-audit.log")) as f:
                self.assertIn("action=unlock item=0 peer= account=ann", f.read())

            # The address: 4 x 3 failures from it, whatever the names, and
            # even bob, who never failed, is refused from there.
            for i in range(6):  # 6 so far (ann 3, ghost 3)
                self.assertEqual(login("user%d" % i, "not the password")[0], 401)
            status, out = login("bob", PASSWORD)
            self.assertEqual((status, body_of(out)), (401, body_of(wrong)))
            with open(os.path.join(d.data_dir, "admin-audit.log")) as f:
                self.assertIn("user=bob action=login-locked item=0 peer=127.0.0.1", f.read())
        finally:
            d.cleanup()


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def self_signed(folder, name):
    cert, key = os.path.join(folder, name + ".pem"), os.path.join(folder, name + ".key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    return cert, key


class AdminTlsTest(unittest.TestCase):
    """admin-tls-cert: the page over HTTPS (curl), Secure cookies, plain
    HTTP refused cleanly, new certificates on SIGHUP."""

    def test_https(self):
        port = h.free_port()
        certs = tempfile.mkdtemp(prefix="sg-admin-tls-")
        cert, key = self_signed(certs, "one")
        d = h.Daemon("--listen-admin", "127.0.0.1:%d" % port, "--admin-tls-cert", cert,
                     "--admin-tls-key", key, http=True)
        try:
            add_user(d, "ann")
            d.start()
            h.wait_port(port, proc=d.proc)
            base = "https://127.0.0.1:%d" % port

            def curl_tls(*args, cacert=cert):
                return subprocess.run(["curl", "-s", "-i", "--cacert", cacert] + list(args),
                                      capture_output=True, timeout=30)

            p = curl_tls(base + "/login")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout.startswith(b"HTTP/1.1 200"), p.stdout[:100])
            p = curl_tls("-X", "POST", "--data-binary",
                         "user=ann&password=" + PASSWORD.replace(" ", "+"), base + "/login")
            self.assertTrue(p.stdout.startswith(b"HTTP/1.1 303"), p.stdout[:200])
            cookie = [l for l in p.stdout.decode().splitlines()
                      if l.startswith("Set-Cookie: sg_session=")][0]
            self.assertIn("; Secure", cookie)
            jar = cookie.split(": ", 1)[1].split(";")[0]
            p = curl_tls("-H", "Cookie: " + jar, base + "/api/session")
            self.assertTrue(p.stdout.startswith(b"HTTP/1.1 200"), p.stdout[:200])

            # Plain HTTP to the TLS port: a 400 that says so, no page, and
            # the daemon goes on.
            status, out = curl_get("http://127.0.0.1:%d/login" % port)
            self.assertEqual(status, 400, out)
            self.assertIn("speaks HTTPS", out)
            self.assertNotIn("<form", out)
            self.assertIn("plaintext sent to the TLS port", d.logtext())
            status, metrics = curl_get("http://127.0.0.1:%d/metrics" % d.http_port)
            self.assertEqual(status, 200, metrics)
            self.assertIn('spinegate_tls_handshakes_total{listener="admin",result="plaintext"} 1',
                          metrics)
            self.assertRegex(metrics, r'spinegate_tls_handshakes_total\{listener="admin",'
                                      r'result="ok"\} [1-9]')
            self.assertIn('spinegate_tls_cert_expiry_seconds{use="admin"}', metrics)
            self.assertIsNone(d.proc.poll())
            self.assertEqual(curl_tls(base + "/login").returncode, 0)
            self.assertIn("https://127.0.0.1", d.logtext())

            # SIGHUP: a new certificate in the same files, served at once.
            two_cert, two_key = self_signed(certs, "two")
            shutil.copy(two_cert, cert)
            shutil.copy(two_key, key)
            d.send_signal(signal.SIGHUP)
            h.wait_for(lambda: "admin: TLS certificates reloaded" in d.logtext(), 10,
                       "the reload")
            with open(two_cert) as f:
                want = ssl.PEM_cert_to_DER_cert(f.read())
            got = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))
            self.assertEqual(got, want)
        finally:
            d.cleanup()
            shutil.rmtree(certs, ignore_errors=True)

    def test_warnings(self):
        certs = tempfile.mkdtemp(prefix="sg-admin-tls-")
        try:
            cert, key = self_signed(certs, "one")
            p = subprocess.run([h.DAEMON, "--listen-admin", "0.0.0.0:8081", "--admin-tls-cert",
                                cert, "--admin-tls-key", key, "--check-config"],
                               capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertNotIn(b"listen-admin", p.stderr)
            p = subprocess.run([h.DAEMON, "--listen-admin", "0.0.0.0:8081", "--admin-tls-cert",
                                cert, "--check-config"], capture_output=True, timeout=60)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(b"admin-tls-cert and admin-tls-key go together", p.stderr)
        finally:
            shutil.rmtree(certs, ignore_errors=True)


if __name__ == "__main__":
    h.run(__name__)
