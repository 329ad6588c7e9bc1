//go:build tools

// Package tools pins the InfluxDB server that tests/integration/test_influx_store.py runs,
// and influxdata/pkg-config, the pkg-config wrapper that builds libflux (Rust) for it.
package tools

import (
	_ "github.com/influxdata/influxdb/v2/cmd/influxd"
	_ "github.com/influxdata/pkg-config"
)
