//go:build tools

// Package tools pins prometheus-adapter, which serves the gateways' Prometheus metrics to the HPA
// through the custom metrics API in tests/e2e/test_gateway_hpa.py.
package tools

import (
	_ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
)
