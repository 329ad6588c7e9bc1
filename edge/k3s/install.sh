#!/usr/bin/env sh
# Install k3s on one edge device (see README.md; needs root and internet on the device).
#   on the Jetson:  ./install.sh server jetson-01
#   on each Pi:     K3S_URL=https://jetson-01:6443 K3S_TOKEN=<token> ./install.sh agent rpi-01
# The token is in /var/lib/rancher/k3s/server/node-token on the Jetson after its install.
# k3s comes from the release channel of the Kubernetes minor version the e2e tests run.
set -eu
usage="usage: install.sh server|agent <node-name from nodes.yaml>"
role=${1:?$usage}
name=${2:?$usage}
case $role in
  server) ;;
  agent) : "${K3S_URL:?an agent needs K3S_URL}" "${K3S_TOKEN:?an agent needs K3S_TOKEN}" ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
install -D -m 0600 "$(dirname "$0")/$role-config.yaml" /etc/rancher/k3s/config.yaml
curl -sfL https://get.k3s.io |
  INSTALL_K3S_CHANNEL="${INSTALL_K3S_CHANNEL:-v1.36}" sh -s - "$role" --node-name "$name"
