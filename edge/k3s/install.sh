#!/usr/bin/env sh
# Install k3s on one edge device with its config from edge/k3s/nodes/<name>.yaml.
#   on the Jetson:  ./install.sh jetson-01
#   on each Pi:     K3S_URL=https://jetson-01:6443 K3S_TOKEN=<token from the Jetson> ./install.sh rpi-01
# The Jetson's token is in /var/lib/rancher/k3s/server/node-token after its install.
set -eu
name=${1:?usage: install.sh <node-name>   (one of: $(ls "$(dirname "$0")/nodes" | sed 's/\.yaml$//' | tr '\n' ' '))}
config="$(dirname "$0")/nodes/$name.yaml"
[ -f "$config" ] || { echo "no k3s config for $name: $config" >&2; exit 1; }
install -D -m 0600 "$config" /etc/rancher/k3s/config.yaml
if [ -n "${K3S_URL:-}" ]; then
  : "${K3S_TOKEN:?K3S_TOKEN is required to join an agent}"
  curl -sfL https://get.k3s.io | K3S_URL="$K3S_URL" K3S_TOKEN="$K3S_TOKEN" sh -s - agent
else
  curl -sfL https://get.k3s.io | sh -s - server
fi
