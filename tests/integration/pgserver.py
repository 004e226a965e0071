"""pgserver.py - a throwaway PostgreSQL 15 server for the tests: Debian's own
binaries (initdb, pg_ctl), a data folder in a temp directory, a free loopback
port, trust authentication on loopback, run as the `postgres` user when the
tests run as root (initdb refuses root).

    srv = PgServer(extra_conf=["synchronous_commit = on"]); srv.start()
    srv.url           # a libpq URI for the database "spinegate"
    srv.stop(); srv.start()   # the same data again
    srv.kill9()       # the postmaster with SIGKILL (a crash)
    srv.cleanup()     # stop and remove the folder

From a shell (the C unit tests' wrapper):
    python3 pgserver.py start DIR     # prints the URL; DIR must not exist
    python3 pgserver.py stop DIR      # stops it and removes DIR
    python3 pgserver.py pause DIR / resume DIR   # pg_ctl stop / start
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PG_BIN = os.environ.get("SG_PG_BIN", "/usr/lib/postgresql/15/bin")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One postmaster. base: the folder holding data/ and the log (made here
    when None); port: a free one when None; extra_conf: lines appended to
    postgresql.conf (e.g. synchronous_standby_names for a primary)."""

    def __init__(self, base=None, port=None, extra_conf=(), dbname="spinegate"):
        self.base = base or tempfile.mkdtemp(prefix="sg-pg-")
        os.makedirs(self.base, exist_ok=True)
        self.port = port or _free_port()
        self.extra_conf = list(extra_conf)
        self.dbname = dbname
        self.datadir = os.path.join(self.base, "data")
        self.logfile = os.path.join(self.base, "postgres.log")
        self.run_as = None
        if os.geteuid() == 0:
            self.run_as = pwd.getpwnam("postgres")
            # The postgres user must be able to reach and own its folder.
            os.chmod(self.base, 0o755)
            os.chown(self.base, self.run_as.pw_uid, self.run_as.pw_gid)

    @property
    def url(self):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, self.dbname)

    def _run(self, *args, check=True, timeout=120):
        cmd = list(args)
        if self.run_as is not None:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, check=check, timeout=timeout, cwd=self.base,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def run_bin(self, name, *args, check=True, timeout=120):
        """Runs one of PG_BIN's programs (pg_basebackup, pg_ctl, ...) as the
        server's user, in the base folder; returns the CompletedProcess."""
        return self._run(os.path.join(PG_BIN, name), *args, check=check, timeout=timeout)

    def configure(self, lines):
        """Appends lines to postgresql.conf (the later of two settings wins);
        they apply at the next start (or reload)."""
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            for line in lines:
                f.write(line + "\n")

    def initdb(self):
        """Makes the data folder, set to listen on this port on loopback
        only, with extra_conf. (A standby's folder comes from pg_basebackup
        instead: make it, then configure(), then start().)"""
        r = self._run(os.path.join(PG_BIN, "initdb"), "-D", self.datadir, "-A", "trust",
                      "-U", "postgres", "-E", "UTF8", "--no-sync", check=False)
        if r.returncode != 0:
            raise RuntimeError("initdb failed:\n" + r.stdout)
        self.configure(["", "# pgserver.py", "listen_addresses = '127.0.0.1'",
                        "port = %d" % self.port, "unix_socket_directories = ''", "fsync = on",
                        "max_connections = 100", "shared_buffers = 32MB"] + self.extra_conf)

    def start(self, timeout=60):
        """Starts the server (after initdb and creating the database, the
        first time) and waits until it accepts connections."""
        first = not os.path.exists(os.path.join(self.datadir, "PG_VERSION"))
        if first:
            self.initdb()
        r = self._run(os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                      "-w", "-t", str(timeout), "start", check=False, timeout=timeout + 30)
        if r.returncode != 0:
            raise RuntimeError("pg_ctl start failed:\n" + r.stdout + self.log())
        if first:
            r = self._run(os.path.join(PG_BIN, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                          "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc",
                          "CREATE DATABASE %s" % self.dbname, check=False)
            if r.returncode != 0:
                raise RuntimeError("CREATE DATABASE failed:\n" + r.stdout)
        return self

    def stop(self, mode="fast"):
        """Stops the server (mode: smart, fast or immediate); keeps the data."""
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            self._run(os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-m", mode, "-w",
                      "stop", check=False)

    def pid(self):
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def kill9(self):
        """Kills the postmaster with SIGKILL, as a machine dying would (its
        backends notice and exit); `start` runs crash recovery."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            # Backends left behind hold the port and the shared memory.
            time.sleep(0.5)

    def psql(self, sql, db=None):
        """Runs sql; returns psql's unaligned, tuples-only output."""
        r = self._run(os.path.join(PG_BIN, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                      "-U", "postgres", "-d", db or self.dbname, "-v", "ON_ERROR_STOP=1",
                      "-XAtqc", sql, check=False)
        if r.returncode != 0:
            raise RuntimeError("psql failed: " + r.stdout)
        return r.stdout

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def cleanup(self):
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def _load(base):
    with open(os.path.join(base, "port")) as f:
        port = int(f.read())
    return PgServer(base=base, port=port)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop", "pause", "resume"):
        sys.stderr.write("usage: pgserver.py start|stop|pause|resume DIR\n")
        return 2
    cmd, base = argv[1], os.path.abspath(argv[2])
    if cmd == "start":
        if os.path.exists(base):
            sys.stderr.write("pgserver.py: %s exists\n" % base)
            return 2
        srv = PgServer(base=base).start()
        with open(os.path.join(base, "port"), "w") as f:
            f.write(str(srv.port))
        print(srv.url)
        return 0
    if cmd == "stop" and not os.path.exists(os.path.join(base, "port")):
        shutil.rmtree(base, ignore_errors=True)  # it never started
        return 0
    srv = _load(base)
    if cmd == "stop":
        srv.cleanup()
    elif cmd == "pause":
        srv.stop()
    else:
        srv.start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
