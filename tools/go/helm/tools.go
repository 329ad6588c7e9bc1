//go:build tools

// Package tools pins the Go programs that the chart tests run.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
