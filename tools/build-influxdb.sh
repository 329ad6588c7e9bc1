#!/usr/bin/env bash
# Build influxd (InfluxDB 2.x OSS, pinned in tools/go/influxdb/go.mod) into .cache/bin for
# tests/integration/test_influx_store.py. Never committed.
#
# influxd links libflux, a Rust library inside the Flux Go module. influxdata/pkg-config (pinned
# in the same go.mod) is the pkg-config that cgo calls: it builds libflux with cargo from the
# module cache and hands cgo its flags. So this needs Go, a C compiler and cargo (crates.io).
#
# Rebuilt only when go.mod/go.sum change or the binary is missing. A cold build takes ~7 minutes
# on 2 cores (libflux in Rust, then ~1,400 Go packages, some in cgo).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/tools/go/influxdb"
bin="$root/.cache/bin"
work="$root/.cache/influxdb-build"
log="$root/.cache/go-logs/influxdb.log"
stamp="$bin/.influxdb.stamp"
mkdir -p "$bin" "$work" "$(dirname "$log")"

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
# libflux's rust-toolchain.toml asks for Rust 1.72, which rustup would download; use the installed one.
export RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-stable}"
# libflux says #![deny(warnings)], so lints added by newer Rust releases fail its build. RUSTFLAGS
# cannot cap them: cargo gets --target, and then RUSTFLAGS skip the build script that compiles
# flux-core for the host. A rustc wrapper caps them wherever cargo has not (it does for crates.io).
cat >"$work/rustc-cap-lints" <<'WRAPPER'
#!/bin/sh
rustc=$1; shift
case " $* " in *" --cap-lints "*|*" --cap-lints="*) exec "$rustc" "$@" ;; esac
exec "$rustc" "$@" --cap-lints=warn
WRAPPER
chmod +x "$work/rustc-cap-lints"
export RUSTC_WRAPPER="$work/rustc-cap-lints"

hash=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -d' ' -f1)
if [ -x "$bin/influxd" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  echo "influxdb: influxd is up to date ($("$bin/influxd" version 2>/dev/null | head -1))"
  exit 0
fi
for tool in go cargo cc; do
  command -v "$tool" >/dev/null || { echo "influxdb: '$tool' is not installed; influxd needs Go, cargo (Rust) and a C compiler" >&2; exit 1; }
done

fail() {
  echo "influxdb: $1 FAILED; the end of $log:" >&2
  tail -40 "$log" >&2
  exit 1
}

start=$SECONDS
echo "influxdb: building influxd from tools/go/influxdb (log: $log)"
: >"$log"
echo "influxdb: [1/2] influxdata/pkg-config (builds libflux with cargo when cgo asks for it)"
(cd "$dir" && go build -o "$work/pkg-config" github.com/influxdata/pkg-config) >>"$log" 2>&1 || fail "building pkg-config"
echo "influxdb: [2/2] influxd (libflux, then the Go packages)"
version=$(cd "$dir" && go list -m -f '{{.Version}}' github.com/influxdata/influxdb/v2)
(cd "$dir" && PKG_CONFIG="$work/pkg-config" go build -trimpath -ldflags="-s -w -X main.version=$version" \
  -o "$work/influxd" github.com/influxdata/influxdb/v2/cmd/influxd) >>"$log" 2>&1 || fail "building influxd"
mv "$work/influxd" "$bin/influxd"
echo "$hash" >"$stamp"
echo "influxdb: built $bin/influxd ($("$bin/influxd" version | head -1)) in $((SECONDS - start))s"
