//go:build tools

// Package tools pins telegraf, which bench/ingest.py and the log-shipping test run.
package tools

import _ "github.com/influxdata/telegraf/cmd/telegraf"
