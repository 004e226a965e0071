"""pgcluster.py - a throwaway PostgreSQL 15 primary and synchronous standby
on loopback, from Debian's binaries, for the HA test and the benchmark.

The primary is made by initdb with wal_level=replica, a replication role
and pg_hba lines for loopback only; the standby is a pg_basebackup -R copy
of it that streams WAL back under the application_name the primary lists
in synchronous_standby_names, so that with synchronous_commit=on a commit
returns only once the standby has it. Everything runs as the `postgres`
user (as root; as ourselves otherwise) in temp folders, on free loopback
ports. kill9_primary() and promote_standby() are the failover, done as a
dead machine and Patroni would do it. stop() stops what is still running,
even after a failed test; use the cluster as a context manager.

Also usable from the shell (bench/bench_pg.sh):
    python3 pgcluster.py start STATEDIR [--standby]   prints the queue-url
    python3 pgcluster.py stop STATEDIR
"""
import json
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
STANDBY_NAME = "sg_standby"
REPL_ROLE = "sg_replicator"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_user():
    """The user the servers run as: `postgres` when we are root (the server
    refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("postgres")


def _as_pg(argv):
    user = _pg_user()
    return (["runuser", "-u", user.pw_name, "--"] + argv) if user else argv


def _run(argv, timeout=60, check=True):
    r = subprocess.run(_as_pg(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (" ".join(argv), r.returncode, r.stdout[-3000:]))
    return r


def _make_dir(path):
    os.makedirs(path, mode=0o700, exist_ok=True)
    user = _pg_user()
    if user:
        os.chown(path, user.pw_uid, user.pw_gid)


class PgNode:
    """One server: a data folder, a port, a log, a postmaster."""

    def __init__(self, root, name, port=None):
        self.root = root
        self.name = name
        self.data = os.path.join(root, name)
        self.port = port or _free_port()
        self.log = os.path.join(root, name + ".log")
        self.sock_dir = os.path.join(root, name + "-sock")
        self.stray = set()  # backends of a postmaster killed with SIGKILL

    def start(self, timeout=60):
        _make_dir(self.sock_dir)
        _run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log, "-w",
              "-t", str(timeout), "-o", "-p %d -k %s" % (self.port, self.sock_dir), "start"],
             timeout=timeout + 10)

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def running(self):
        return self.postmaster_pid() is not None

    def children(self, pid):
        """The processes whose parent is pid (from /proc: no procps needed)."""
        kids = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces and parentheses
            fields = stat[stat.rindex(")") + 2:].split()
            if len(fields) > 1 and int(fields[1]) == pid:
                kids.add(int(entry))
        return kids

    def kill9(self):
        """SIGKILL to the postmaster only, as the brief of a dead machine:
        its backends notice and exit by themselves; stop() reaps stragglers."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("%s is not running" % self.name)
        self.stray |= self.children(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        return pid

    def stop(self, mode="fast"):
        if self.running():
            _run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "-t", "30",
                  "stop"], timeout=40, check=False)
        for pid in self.stray:
            # Only if it still is one of ours (a server process works in its
            # data folder): a pid may have been reused since.
            try:
                if os.path.realpath(os.readlink("/proc/%d/cwd" % pid)) == os.path.realpath(self.data):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.stray = set()

    def sql(self, query, db="postgres", timeout=30):
        """Runs query with psql as the superuser over loopback TCP; the rows
        as lists of strings."""
        r = _run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t", "-F", "\t",
                  "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                  "-v", "ON_ERROR_STOP=1", "-c", query], timeout=timeout)
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def add_conf(self, **settings):
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            for k, v in settings.items():
                f.write("%s = %s\n" % (k, v))


class PgCluster:
    """A primary, and with standby=True a synchronous standby of it."""

    def __init__(self, standby=True, fsync=True, root=None):
        self.want_standby = standby
        self.fsync = fsync
        self.own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="sg-pg-")
        _make_dir(self.root)
        self.primary = PgNode(self.root, "primary")
        self.standby = PgNode(self.root, "standby") if standby else None

    # -- set up
    def start(self):
        try:
            self._init_primary()
            self.primary.start()
            self.primary.sql("CREATE ROLE %s WITH REPLICATION LOGIN" % REPL_ROLE)
            self.primary.sql("CREATE DATABASE spinegate")
            if self.standby:
                self._init_standby()
                self.standby.start()
                # Synchronous only now: with it set before the standby
                # streams, the set-up's own commits would wait for it.
                self.primary.sql("ALTER SYSTEM SET synchronous_standby_names = '%s'" %
                                 STANDBY_NAME)
                self.primary.sql("SELECT pg_reload_conf()")
                self.wait_sync()
        except BaseException:
            self.stop()
            raise
        return self

    def _init_primary(self):
        p = self.primary
        _run([os.path.join(PG_BIN, "initdb"), "-D", p.data, "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--locale=C", "-N"], timeout=120)
        p.add_conf(listen_addresses="'127.0.0.1'", port=p.port,
                   unix_socket_directories="'%s'" % p.sock_dir,
                   wal_level="replica", max_wal_senders=4, max_replication_slots=4,
                   wal_keep_size="'64MB'", hot_standby="on",
                   synchronous_commit="on",
                   fsync="on" if self.fsync else "off",
                   max_connections=100, shared_buffers="'64MB'",
                   log_min_messages="warning", log_connections="off")
        # Loopback only, trust: a throwaway cluster in a private folder.
        with open(os.path.join(p.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all all 127.0.0.1/32 trust\n"
                    "host replication %s 127.0.0.1/32 trust\n" % REPL_ROLE)

    def _init_standby(self):
        s = self.standby
        # -R writes standby.signal and primary_conninfo from this connection,
        # application_name included: the name synchronous_standby_names lists.
        _run([os.path.join(PG_BIN, "pg_basebackup"), "-D", s.data, "-R", "-X", "stream",
              "-c", "fast", "-d", "host=127.0.0.1 port=%d user=%s application_name=%s" %
              (self.primary.port, REPL_ROLE, STANDBY_NAME)], timeout=120)
        # Its own port and socket; once promoted it stands alone, so it waits
        # for no standby of its own (Patroni does the same when it has none).
        s.add_conf(port=s.port, unix_socket_directories="'%s'" % s.sock_dir,
                   synchronous_standby_names="''")

    # -- state
    def replication(self):
        """(application_name, state, sync_state) of each standby the primary
        streams to."""
        return [tuple(r) for r in self.primary.sql(
            "SELECT application_name, state, sync_state FROM pg_stat_replication")]

    def wait_sync(self, timeout=30):
        deadline = time.time() + timeout
        rows = []
        while time.time() < deadline:
            rows = self.replication()
            if (STANDBY_NAME, "streaming", "sync") in rows:
                return rows
            time.sleep(0.1)
        raise RuntimeError("the standby did not become sync: %s" % rows)

    def queue_url(self, db="spinegate", extra=""):
        """The libpq URI for spinegate: every host, the writable one chosen."""
        hosts = [self.primary] + ([self.standby] if self.standby else [])
        url = "postgresql://postgres@%s/%s?target_session_attrs=read-write&connect_timeout=2" % (
            ",".join("127.0.0.1:%d" % n.port for n in hosts), db)
        return url + extra

    # -- failures
    def kill9_primary(self):
        return self.primary.kill9()

    def promote_standby(self, timeout=30):
        _run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.standby.data, "-w", "-t", str(timeout),
              "promote"], timeout=timeout + 10)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.standby.sql("SELECT pg_is_in_recovery()") == [["f"]]:
                return
            time.sleep(0.05)
        raise RuntimeError("the standby did not leave recovery")

    def stop(self):
        """Stops every server and removes the folder; safe to call twice and
        after any failure."""
        for n in (self.standby, self.primary):
            if n is not None:
                try:
                    n.stop()
                except Exception as e:  # keep stopping the others
                    sys.stderr.write("pgcluster: stopping %s: %s\n" % (n.name, e))
        if self.own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def logs(self, tail=3000):
        out = []
        for n in (self.primary, self.standby):
            if n is not None and os.path.exists(n.log):
                with open(n.log, errors="replace") as f:
                    out.append("--- %s\n%s" % (n.name, f.read()[-tail:]))
        return "\n".join(out)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def _main(argv):
    """start STATEDIR [--standby] [--no-fsync] | stop STATEDIR: for shell
    scripts; the state (folders and ports) is kept in STATEDIR/cluster.json."""
    if len(argv) < 3 or argv[1] not in ("start", "stop"):
        sys.stderr.write(__doc__)
        return 2
    state = os.path.join(argv[2], "cluster.json")
    if argv[1] == "start":
        c = PgCluster(standby="--standby" in argv, fsync="--no-fsync" not in argv,
                      root=os.path.join(argv[2], "pg"))
        c.start()
        with open(state, "w") as f:
            json.dump({"root": c.root, "primary": c.primary.port,
                       "standby": c.standby.port if c.standby else None}, f)
        print(c.queue_url())
        return 0
    with open(state) as f:
        s = json.load(f)
    c = PgCluster(standby=s["standby"] is not None, root=s["root"])
    c.primary.port = s["primary"]
    if c.standby:
        c.standby.port = s["standby"]
    c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
