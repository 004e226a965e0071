"""test_notify.py - the daemon's sd_notify messages, as systemd's Type=notify
unit receives them (issue 12): READY=1 once the queue is open and the MLLP
port is bound, WATCHDOG=1 from the loop at half of WATCHDOG_USEC, STOPPING=1
when SIGTERM starts the drain. The test plays systemd: a datagram socket in
NOTIFY_SOCKET. Built without libsystemd (SG_HAVE_SYSTEMD=no) the daemon
must send nothing at all."""
import os
import shutil
import signal
import socket
import tempfile
import time
import unittest

import harness as h

HAVE_SYSTEMD = os.environ.get("SG_HAVE_SYSTEMD", "yes") == "yes"


class Manager:
    """The service manager's end of NOTIFY_SOCKET."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sg-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def receive(self, timeout):
        """Every message that arrives within timeout seconds, as lists of lines."""
        got = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                got.append(self.sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                break
        return got

    def wait_for(self, line, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for msg in self.receive(min(0.2, deadline - time.time())):
                if line in msg:
                    return True
        return False

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class TestNotify(unittest.TestCase):
    def start(self, watchdog_usec=None):
        self.manager = Manager()
        saved = dict(os.environ)
        os.environ["NOTIFY_SOCKET"] = self.manager.path
        if watchdog_usec:
            os.environ["WATCHDOG_USEC"] = str(watchdog_usec)
        try:
            self.daemon = h.Daemon().start()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def tearDown(self):
        self.daemon.cleanup()
        self.manager.close()

    @unittest.skipUnless(HAVE_SYSTEMD, "built without libsystemd")
    def test_ready_after_bind_then_stopping_on_sigterm(self):
        self.start()
        self.assertTrue(self.manager.wait_for("READY=1"), "no READY=1")
        # Ready means bound: a connection is taken at once.
        socket.create_connection(("127.0.0.1", self.daemon.mllp_port), timeout=1).close()
        # No watchdog was asked for, so none is fed.
        self.assertEqual([m for m in self.manager.receive(0.5) if "WATCHDOG=1" in m], [])
        self.daemon.send_signal(signal.SIGTERM)
        self.assertTrue(self.manager.wait_for("STOPPING=1"), "no STOPPING=1 on SIGTERM")
        self.assertEqual(self.daemon.stop(), 0)

    @unittest.skipUnless(HAVE_SYSTEMD, "built without libsystemd")
    def test_watchdog_fed_at_half_the_interval(self):
        self.start(watchdog_usec=200000)
        self.assertTrue(self.manager.wait_for("READY=1"), "no READY=1")
        fed = [m for m in self.manager.receive(1.0) if "WATCHDOG=1" in m]
        # Every 100 ms for a second: about 10; a loop that stalls feeds fewer.
        self.assertGreaterEqual(len(fed), 6, "watchdog fed %d times in 1 s" % len(fed))
        self.assertLessEqual(len(fed), 14, "watchdog fed %d times in 1 s" % len(fed))
        # The watchdog timer is closed on stop, or the loop would never end.
        self.assertEqual(self.daemon.stop(timeout=10), 0)

    @unittest.skipIf(HAVE_SYSTEMD, "built with libsystemd")
    def test_nothing_sent_without_libsystemd(self):
        self.start(watchdog_usec=200000)
        self.assertEqual(self.manager.receive(1.0), [])
        self.assertEqual(self.daemon.stop(), 0)


if __name__ == "__main__":
    h.run(__name__)
