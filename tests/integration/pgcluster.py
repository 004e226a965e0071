"""pgcluster.py - a throwaway PostgreSQL 15 primary and synchronous standby
on loopback, from Debian's binaries (each server a pgserver.PgServer), for the
HA test and the benchmark.

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
import shutil
import signal
import sys
import tempfile
import time

from pgserver import PgServer

STANDBY_NAME = "sg_standby"
REPL_ROLE = "sg_replicator"


class PgNode(PgServer):
    """pgserver's server, plus what a failover test needs: rows from SQL, and
    the backends a SIGKILLed postmaster leaves behind reaped at stop()."""

    def __init__(self, base, extra_conf=()):
        super().__init__(base=base, extra_conf=extra_conf)
        self.name = os.path.basename(base)
        self.stray = set()

    def postmaster_pid(self):
        pid = self.pid()
        if pid is None:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def running(self):
        return self.postmaster_pid() is not None

    @staticmethod
    def children(pid):
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
        """SIGKILL to the postmaster only, as a dead machine: its backends
        notice and exit by themselves; stop() reaps any that did not."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("%s is not running" % self.name)
        self.stray |= self.children(pid)
        super().kill9()
        return pid

    def stop(self, mode="fast"):
        if self.running():
            super().stop(mode)
        for pid in self.stray:
            # Only if it still is one of ours (a server process works in its
            # data folder): a pid may have been reused since.
            try:
                if os.path.realpath(os.readlink("/proc/%d/cwd" % pid)) == \
                        os.path.realpath(self.datadir):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.stray = set()

    def sql(self, query, db="postgres", timeout=30):
        """Runs query with psql as the superuser over loopback TCP; the rows
        as lists of strings."""
        r = self.run_bin("psql", "-X", "-q", "-A", "-t", "-F", "\t", "-h", "127.0.0.1",
                         "-p", str(self.port), "-U", "postgres", "-d", db, "-v",
                         "ON_ERROR_STOP=1", "-c", query, check=False, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("psql on %s failed: %s" % (self.name, r.stdout[-1000:]))
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def logs(self, tail=3000):
        return "--- %s\n%s" % (self.name, self.log()[-tail:])


class PgCluster:
    """A primary, and with standby=True a synchronous standby of it."""

    def __init__(self, standby=True, fsync=True, root=None):
        self.own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="sg-pgc-")
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)  # the postgres user reaches its folders inside
        self.primary = PgNode(os.path.join(self.root, "primary"), extra_conf=[
            "wal_level = replica", "max_wal_senders = 4", "max_replication_slots = 4",
            "wal_keep_size = '64MB'", "hot_standby = on", "synchronous_commit = on",
            "fsync = %s" % ("on" if fsync else "off"),
            "log_min_messages = warning"])
        self.standby = PgNode(os.path.join(self.root, "standby")) if standby else None

    # -- set up
    def start(self):
        try:
            p = self.primary
            p.initdb()
            # Loopback only, trust: a throwaway cluster in a private folder;
            # streaming only for the replication role.
            with open(os.path.join(p.datadir, "pg_hba.conf"), "w") as f:
                f.write("host all all 127.0.0.1/32 trust\n"
                        "host replication %s 127.0.0.1/32 trust\n" % REPL_ROLE)
            p.start()
            p.sql("CREATE ROLE %s WITH REPLICATION LOGIN" % REPL_ROLE)
            p.sql("CREATE DATABASE %s" % p.dbname)
            if self.standby:
                self._init_standby()
                self.standby.start()
                # Synchronous only now: with it set before the standby
                # streams, the set-up's own commits would wait for it.
                p.sql("ALTER SYSTEM SET synchronous_standby_names = '%s'" % STANDBY_NAME)
                p.sql("SELECT pg_reload_conf()")
                self.wait_sync()
        except BaseException:
            self.stop()
            raise
        return self

    def _init_standby(self):
        s = self.standby
        # -R writes standby.signal and primary_conninfo from this connection,
        # application_name included: the name synchronous_standby_names lists.
        s.run_bin("pg_basebackup", "-D", s.datadir, "-R", "-X", "stream", "-c", "fast", "-d",
                  "host=127.0.0.1 port=%d user=%s application_name=%s"
                  % (self.primary.port, REPL_ROLE, STANDBY_NAME))
        # Its own port (the primary's is in the copied file; the later line
        # wins). Once promoted it stands alone, waiting for no standby of its
        # own (Patroni does the same when it has none).
        s.configure(["", "# pgcluster.py: the standby", "port = %d" % s.port,
                     "synchronous_standby_names = ''"])

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

    def queue_url(self, extra=""):
        """The libpq URI for spinegate: every host, the writable one chosen."""
        hosts = [self.primary] + ([self.standby] if self.standby else [])
        return ("postgresql://postgres@%s/%s?target_session_attrs=read-write&connect_timeout=2%s"
                % (",".join("127.0.0.1:%d" % n.port for n in hosts), self.primary.dbname, extra))

    # -- failures
    def kill9_primary(self):
        return self.primary.kill9()

    def promote_standby(self, timeout=30):
        self.standby.run_bin("pg_ctl", "-D", self.standby.datadir, "-w", "-t", str(timeout),
                             "promote", timeout=timeout + 10)
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
        return "\n".join(n.logs(tail) for n in (self.primary, self.standby) if n is not None)

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
    c.stop()
    shutil.rmtree(s["root"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
