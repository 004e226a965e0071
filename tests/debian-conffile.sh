#!/bin/sh
# debian-conffile.sh - the package's spinegate.conf against this build's
# daemon, under `make check`: the package build runs the same check, so a new
# setting left out of debian/spinegate.conf fails here first.
set -eu
exec sh "$top_srcdir/debian/check-conffile.sh" "$top_builddir/spinegate" \
    "$top_srcdir/debian/spinegate.conf"
