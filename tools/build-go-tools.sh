#!/usr/bin/env bash
# Build the real programs the tests run into .cache/bin (ignored; never committed):
#   tools/go/cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#   tools/go/kwok:    kwok (fake edge nodes and kubelets)
#   tools/go/helm:    helm
#   tools/go/telegraf: telegraf with only the plugins bench/ingest.py and the log-shipping test use
#   tools/go/argocd-health: argocd-health (deploy/argocd's health checks run by Argo CD's own Lua code)
#   tools/go/prometheus-adapter: prometheus-adapter (the custom metrics API the gateway HPA test scales on)
# A module is rebuilt only when its go.mod/go.sum (or its own Go source, beside tools.go) change or a
# binary is missing.
# The modules build in parallel; a failure names the module and shows its log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.cache/bin"
logs="$root/.cache/go-logs"
mkdir -p "$bin" "$logs"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

declare -A packages=(
  [cluster]="go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
  [kwok]="sigs.k8s.io/kwok/cmd/kwok"
  [helm]="helm.sh/helm/v3/cmd/helm"
  [telegraf]="github.com/influxdata/telegraf/cmd/telegraf"
  [argocd-health]="plantwatch.io/tools/argocd-health"
  [prometheus-adapter]="sigs.k8s.io/prometheus-adapter/cmd/adapter"
)
declare -A binaries=(
  [cluster]="etcd kube-apiserver kube-controller-manager kube-scheduler kubectl"
  [kwok]="kwok"
  [helm]="helm"
  [telegraf]="telegraf"
  [argocd-health]="argocd-health"
  [prometheus-adapter]="prometheus-adapter"
)
# Build tags per module. Telegraf's `custom` tag drops every plugin not named (docs/CUSTOMIZATION.md):
# a full build compiles hundreds of plugins, far longer on two cores.
declare -A tags=(
  [telegraf]="custom,inputs.mqtt_consumer,inputs.tail,parsers.json,outputs.file,outputs.influxdb_v2,serializers.influx"
)

# The Kubernetes binaries carry the version go.mod pins, as the release build stamps it: without it they
# say v0.0.0-master, and anything that checks the cluster's version (helm's kubeVersion) refuses them.
ldflags() {
  local flags='-s -w' version
  if [ "$1" = cluster ]; then
    version=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$root/tools/go/cluster/go.mod")
    local major=${version#v} minor
    minor=${major#*.}
    minor=${minor%%.*}
    major=${major%%.*}
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
  fi
  echo "$flags"
}

build() {
  local module=$1 dir="$root/tools/go/$1" stamp="$bin/.$1.stamp" hash out flags
  flags=$(ldflags "$module")
  hash=$( (cat "$dir/go.mod" "$dir/go.sum"; find "$dir" -maxdepth 1 -name '*.go' ! -name tools.go -print0 | sort -z | xargs -0r cat; echo "$flags"; [ -z "${tags[$module]:-}" ] || echo "${tags[$module]}") | sha256sum | cut -d' ' -f1)
  local missing=0
  for b in ${binaries[$module]}; do [ -x "$bin/$b" ] || missing=1; done
  if [ "$missing" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
    echo "go tools: $module is up to date"
    return 0
  fi
  echo "go tools: building $module (${binaries[$module]})"
  out=$(mktemp -d "$bin/.build-$module.XXXX")
  if ! (cd "$dir" && go build -trimpath -tags="${tags[$module]:-}" -ldflags="$flags" -o "$out/" ${packages[$module]}) >"$logs/$module.log" 2>&1; then
    rm -rf "$out"
    return 1
  fi
  # `go build -o dir/` names the etcd main package after its module path's last element before /v3.
  [ -f "$out/server" ] && mv "$out/server" "$out/etcd"
  # prometheus-adapter's main package is cmd/adapter: too generic a name for .cache/bin.
  [ -f "$out/adapter" ] && mv "$out/adapter" "$out/prometheus-adapter"
  for b in ${binaries[$module]}; do mv "$out/$b" "$bin/$b"; done
  rm -rf "$out"
  echo "$hash" >"$stamp"
  echo "go tools: built $module"
}

declare -A pids=()
for module in "${!packages[@]}"; do
  build "$module" & pids[$module]=$!
done
# Failures are reported once all builds are done, so that their logs do not interleave.
failed=()
for module in "${!pids[@]}"; do
  if ! wait "${pids[$module]}"; then
    failed+=("$module")
    echo "go tools: building $module FAILED; the end of $logs/$module.log:" >&2
    tail -30 "$logs/$module.log" >&2
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "go tools: FAILED to build: ${failed[*]}" >&2
  exit 1
fi
