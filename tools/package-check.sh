#!/bin/sh
# package-check.sh DISTDIR WORKDIR - the Debian package, end to end, as root
# on Debian 12 (what `make package-check` runs):
#   1. dpkg-buildpackage -us -uc -b in DISTDIR (moved under WORKDIR), then
#      lintian --fail-on error;
#   2. a clean Debian 12 root from mmdebstrap (the base tarball is cached in
#      PACKAGE_CHECK_CACHE and rebuilt when older than a week), the .deb
#      installed there with apt-get, which pulls its dependencies from Debian;
#   3. the installed files, user and data folder checked, and the unit
#      checked by systemd-analyze verify against that root;
#   3b. when systemd-nspawn is there, the root booted with systemd and the
#      service started, reloaded and stopped by it;
#   4. the daemon started without systemd, as the spinegate user, with the
#      installed config (only the MLLP port moved to a free one: a chroot
#      shares the network), one HL7 message sent over MLLP from outside, its
#      ACK and its outbox file checked, then SIGTERM;
#   5. a reinstall over the user and the data, then apt-get purge, after
#      which only /var/lib/spinegate may be left.
# Prints how long each step took. WORKDIR/root is kept when a step fails.
set -eu

distdir=$1
work=$2
cache=${PACKAGE_CHECK_CACHE:-/var/cache/spinegate-package-check}
python3=${PYTHON3:-/usr/bin/python3}
src=$(cd "$(dirname "$0")/.." && pwd)
mirror=${PACKAGE_CHECK_MIRROR:-http://deb.debian.org/debian}
security=${PACKAGE_CHECK_SECURITY:-http://deb.debian.org/debian-security}

fail() {
    echo "package-check: FAIL: $*" >&2
    exit 1
}
mkdir -p "$work" # a fresh clone has no build/package-check yet
[ "$(id -u)" = 0 ] || fail "run as root (dpkg in a chroot, mmdebstrap)"
for tool in dpkg-buildpackage lintian mmdebstrap systemd-analyze chroot; do
    command -v $tool >/dev/null ||
        fail "$tool missing: apt-get install dpkg-dev debhelper lintian mmdebstrap systemd"
done

now() { date +%s; }
started=$(now)
step_start=$started
timings=""
step_done() { # NAME
    t=$(now)
    timings="$timings$(printf '  %-28s %4ss' "$1" $((t - step_start)))
"
    step_start=$t
}

# One HL7 message over MLLP: mllp_send.py PORT FILE CODE waits for the port,
# sends FILE, and fails unless the ACK's MSA-1 is CODE.
cat >"$work/mllp_send.py" <<'PY'
import socket, sys, time
port, path, want = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
deadline = time.time() + 15
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the daemon did not open its port")
        time.sleep(0.1)
s.sendall(b"\x0b" + open(path, "rb").read() + b"\x1c\x0d")
ack = b""
while not ack.endswith(b"\x1c\x0d"):
    more = s.recv(65536)
    if not more:
        break
    ack += more
segments = ack.strip(b"\x0b\x1c\x0d").split(b"\r")
msa = [seg for seg in segments if seg.startswith(b"MSA|")]
print("   ACK:", msa[0].decode() if msa else ack[:80])
sys.exit(0 if msa and msa[0].startswith(b"MSA|" + want + b"|") else "no MSA|%s in the ACK" % want.decode())
PY
demo="$src/tests/data/demo"

# ---- 1. build the package from the distribution files
rm -rf "$work/src"
mkdir -p "$work/src"
mv "$distdir" "$work/src/"
tree="$work/src/$(basename "$distdir")"
echo "== dpkg-buildpackage -us -uc -b (log: $work/build.log)"
(cd "$tree" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 ||
    { tail -30 "$work/build.log"; fail "dpkg-buildpackage"; }
deb=$(ls "$work"/src/spinegate_*.deb)
changes=$(ls "$work"/src/spinegate_*.changes)
step_done "dpkg-buildpackage"

echo "== lintian --fail-on error $(basename "$changes")"
lintian --fail-on error "$changes" >"$work/lintian.log" 2>&1 ||
    { cat "$work/lintian.log"; fail "lintian found errors"; }
grep -v 'root privileges' "$work/lintian.log" || true
step_done "lintian"

# ---- 2. a clean Debian 12 root
mkdir -p "$cache"
# The apt variant (essential packages and apt) plus systemd, as on a server:
# the unit is verified against this root's systemd.
base="$cache/bookworm-apt-systemd.tar"
if [ ! -s "$base" ] || [ -n "$(find "$base" -mtime +7)" ]; then
    echo "== mmdebstrap bookworm -> $base"
    mmdebstrap --quiet --format=tar --variant=apt --include=systemd bookworm "$base.new" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $security bookworm-security main" || fail "mmdebstrap"
    mv "$base.new" "$base"
    step_done "mmdebstrap (cache was cold)"
fi
root="$work/root"
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$base"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The maintainer scripts start no service in the chroot (a policy-rc.d says
# so, as in any chroot); step 3b boots the root to have systemd start it.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
step_done "clean root"

echo "== apt-get install ./$(basename "$deb") in the clean root"
cp "$deb" "$root/tmp/"
in_root apt-get -q update >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get update"; }
in_root apt-get -q install -y --no-install-recommends "/tmp/$(basename "$deb")" \
    >>"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; fail "apt-get install"; }
rm -f "$root/tmp/$(basename "$deb")"
step_done "install with dependencies"

# ---- 3. what the package put there
for f in /usr/sbin/spinegate /usr/bin/spinegate-check /etc/spinegate/spinegate.conf \
    /lib/systemd/system/spinegate.service /usr/share/man/man8/spinegate.8.gz \
    /usr/share/man/man5/spinegate.conf.5.gz /usr/share/man/man1/spinegate-check.1.gz; do
    [ -f "$root$f" ] || fail "$f not installed"
done
in_root dpkg-query -W -f='${Conffiles}\n' spinegate | grep -q '^ /etc/spinegate/spinegate.conf ' ||
    fail "/etc/spinegate/spinegate.conf is not a conffile"
uid=$(in_root getent passwd spinegate | cut -d: -f3)
[ -n "$uid" ] && [ "$uid" -lt 1000 ] || fail "no system user spinegate (uid '$uid')"
set -- $(in_root stat -c '%a %U %G' /var/lib/spinegate)
[ "$1 $2 $3" = "700 spinegate spinegate" ] ||
    fail "/var/lib/spinegate is $1 $2:$3, not 700 spinegate:spinegate"
# The root has no man, so the man pages were checked as files above.
echo "== systemd-analyze verify --root (the unit, its commands, its user)"
systemd-analyze verify --man=no --root="$root" /lib/systemd/system/spinegate.service ||
    fail "systemd-analyze verify"
step_done "files, user, unit"

# ---- 3b. the unit under a real systemd, when systemd-nspawn can boot the
# root (systemd-container; PACKAGE_CHECK_NSPAWN=no skips it, =yes fails when
# it cannot boot, the default skips then with a note): the service
# must come up as enabled (Type=notify: "active" only after READY=1), run
# as its user with no capability, answer on its own 127.0.0.1:2575 (the
# container's network is private), reload, and stop cleanly.
if [ "${PACKAGE_CHECK_NSPAWN:-auto}" != no ] && command -v systemd-nspawn >/dev/null; then
    echo "== systemd-nspawn --boot: the unit under systemd"
    systemd-nspawn -q -D "$root" --register=no --keep-unit --private-network --console=passive -b \
        >"$work/nspawn.log" 2>&1 </dev/null &
    nspawn=$!
    trap 'kill $nspawn 2>/dev/null || true' EXIT
    init=""
    for _ in $(seq 100); do
        init=$(pgrep -x systemd -P $nspawn 2>/dev/null || true)
        [ -n "$init" ] && break
        sleep 0.2
    done
    if [ -z "$init" ] && [ "${PACKAGE_CHECK_NSPAWN:-auto}" = auto ]; then
        # Where containers cannot be nested (no privileges), say so and go on.
        kill $nspawn 2>/dev/null || true
        wait $nspawn || true
        trap - EXIT
        echo "   SKIPPED: systemd-nspawn cannot boot here (see $work/nspawn.log);" \
            "PACKAGE_CHECK_NSPAWN=yes makes that a failure"
    elif [ -z "$init" ]; then
        cat "$work/nspawn.log"
        fail "systemd did not boot in the container"
    fi
elif [ "${PACKAGE_CHECK_NSPAWN:-auto}" = yes ]; then
    fail "PACKAGE_CHECK_NSPAWN=yes but no systemd-nspawn: apt-get install systemd-container"
fi
if [ -n "${init:-}" ]; then
    in_box() { nsenter -t "$init" -a "$@"; }
    state=""
    for _ in $(seq 150); do
        state=$(in_box systemctl is-active spinegate 2>/dev/null || true)
        [ "$state" = active ] || [ "$state" = failed ] && break
        sleep 0.2
    done
    in_box journalctl -u spinegate --no-pager -o cat >"$work/unit.log" 2>&1 || true
    [ "$state" = active ] || { cat "$work/unit.log"; fail "spinegate.service is $state under systemd"; }
    main=$(in_box systemctl show -P MainPID spinegate)
    in_box grep -q "^Uid:[[:space:]]*$uid[[:space:]]" "/proc/$main/status" ||
        fail "the service does not run as spinegate"
    in_box grep -q '^CapEff:[[:space:]]*0*$' "/proc/$main/status" ||
        fail "the service holds capabilities"
    nsenter -t "$init" -n "$python3" "$work/mllp_send.py" 2575 "$demo/09-annotate-adt-working-diagnosis.hl7" AA ||
        fail "the service did not answer AA"
    in_box systemctl reload spinegate || fail "systemctl reload"
    # ExecReload only sends SIGHUP: wait for the daemon to say it reloaded.
    for _ in $(seq 50); do
        in_box journalctl -u spinegate --no-pager -o cat 2>/dev/null | grep -q 'reloaded:' && break
        sleep 0.1
    done
    in_box systemctl stop spinegate || fail "systemctl stop"
    in_box journalctl -u spinegate --no-pager -o cat >"$work/unit.log" 2>&1 || true
    grep -q 'reloaded:' "$work/unit.log" || fail "no reload in the unit's log"
    grep -q 'SIGTERM: draining' "$work/unit.log" || fail "no drain in the unit's log"
    grep -q 'Deactivated successfully' "$work/unit.log" || fail "the unit did not stop cleanly"
    in_box systemctl poweroff 2>/dev/null || true
    wait $nspawn || true
    trap - EXIT
    step_done "under systemd (nspawn)"
fi

# ---- 4. the daemon, as the service would run it, without systemd
port=$("$python3" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "== spinegate as user spinegate, installed config, MLLP on 127.0.0.1:$port"
chroot "$root" setpriv --reuid=spinegate --regid=spinegate --init-groups \
    /usr/sbin/spinegate --config /etc/spinegate/spinegate.conf --listen-mllp "127.0.0.1:$port" \
    2>"$work/daemon.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
"$python3" "$work/mllp_send.py" "$port" "$demo/01-accept-no-spine-codes.hl7" AA ||
    { cat "$work/daemon.log"; fail "message not acknowledged with AA"; }
# The uid, not the name: the host may have no user of that name.
running_uid=$(ps -o uid= -p $pid | tr -d ' ') || fail "the daemon is gone"
[ "$running_uid" = "$uid" ] || fail "the daemon runs as uid $running_uid, not spinegate ($uid)"
for _ in $(seq 50); do
    ls "$root/var/lib/spinegate/outbox" 2>/dev/null | grep -q DEMO0001 && break
    sleep 0.1
done
out=$(ls "$root/var/lib/spinegate/outbox" | grep DEMO0001 | head -1)
[ -n "$out" ] || fail "nothing delivered to the outbox"
set -- $(in_root stat -c '%a %U' "/var/lib/spinegate/outbox/$out")
[ "$1 $2" = "600 spinegate" ] || fail "outbox file is $1 $2, not 600 spinegate"
kill -TERM $pid
status=0
wait $pid || status=$?
trap - EXIT
[ $status = 0 ] || { cat "$work/daemon.log"; fail "the daemon exited $status after SIGTERM"; }
echo "   delivered: outbox/$out; stopped cleanly"
step_done "run, send, stop"

# ---- 5. reinstall (the postinst again, with the user and the data there),
# then purge: only the data folder stays
echo "== apt-get install --reinstall, then purge"
cp "$deb" "$root/tmp/"
in_root apt-get -q install -y --reinstall "/tmp/$(basename "$deb")" >>"$work/apt.log" 2>&1 ||
    { tail -30 "$work/apt.log"; fail "reinstall"; }
rm -f "$root/tmp/$(basename "$deb")"
[ -f "$root/var/lib/spinegate/outbox/$out" ] || fail "the reinstall lost the outbox file"
set -- $(in_root stat -c '%a %U' /var/lib/spinegate)
[ "$1 $2" = "700 spinegate" ] || fail "after the reinstall /var/lib/spinegate is $1 $2"
in_root apt-get -q purge -y spinegate >>"$work/apt.log" 2>&1 || fail "apt-get purge"
left=$(cd "$root" && find . -xdev -name '*spinegate*' ! -path './var/lib/spinegate' \
    ! -path './var/lib/spinegate/*' | sed 's#^\.##')
[ -z "$left" ] || fail "left after purge: $left"
[ -d "$root/var/lib/spinegate/outbox" ] || fail "purge removed the data folder"
step_done "reinstall, purge"

rm -rf "$root"
printf 'package-check: PASS in %ss\n%s' $(($(now) - started)) "$timings"
