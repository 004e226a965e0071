#!/bin/sh
# quickstart.sh - the README's two commands.
#   ./quickstart.sh demo   install, build, run spinegate on its embedded default
#   ./quickstart.sh test   install, build, run the whole test suite (what CI runs)
# Run as root on Debian 12: both install the Debian packages they need.
set -eu
cd "$(dirname "$0")"

PACKAGES="build-essential autoconf automake pkg-config libuv1-dev libcjson-dev libxml2-dev
  libxml2-utils libsqlite3-dev libpq-dev postgresql libcmocka-dev libhttp-parser-dev libcurl4-openssl-dev libssl-dev openssl
  libsodium-dev chromium python3-websocket
  python3 python3-hl7 python3-jsonschema clang libclang-rt-14-dev curl wrk
  libsystemd-dev debhelper lintian mmdebstrap systemd systemd-container"

install_packages() {
    missing=""
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "== installing:$missing"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
    fi
}

build() { # build DIR CONFIGURE-ARGS...
    dir=$1; shift
    [ -x configure ] || autoreconf -fi
    mkdir -p "$dir"
    (cd "$dir" && { [ -f Makefile ] || ../configure -q "$@"; } && make -j"$(nproc)" -s)
}

case "${1:-}" in
demo)
    install_packages
    build build
    exec sh tools/demo.sh build
    ;;
test)
    install_packages
    exec sh tools/run-tests.sh
    ;;
*)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac
