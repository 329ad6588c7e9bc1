"""A plant engineer's own bench plant, as they would write it from the docs: two nodes, no
`plantwatch.io/line` label, a Threshold rule `Above` with `for` and one `Below`, levels on the
far side of the sensors' usual values (a chiller is colder than the simulator's 45 °C, a
compressor's pressure is in bar)."""

from __future__ import annotations

BENCH_PLANT = """\
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata:
  name: chiller-1
  labels: {site: bench}
spec:
  hardware: esp32
  payload: {format: esp32-json, topic: bench/chiller-1/data}
  heartbeat: {interval: 1s}
  sensors:
    - {name: water-temperature, type: temperature, unit: celsius, field: water_c, range: {min: "-20", max: "60"}}
---
apiVersion: plantwatch.io/v1alpha1
kind: SensorNode
metadata:
  name: compressor-1
  labels: {site: bench}
spec:
  hardware: generic
  payload: {format: sensor-event, topic: bench/compressor-1/events}
  heartbeat: {interval: 1s}
  sensors:
    - {name: line-pressure, type: pressure, unit: bar, range: {min: "0", max: "16"}}
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata:
  name: chiller-warm
spec:
  selector: {sensor: water-temperature}
  condition:
    type: Threshold
    threshold: {direction: Above, warning: "8", critical: "12", hysteresis: "0.5"}
  for: 3s
  receivers: [console]
---
apiVersion: plantwatch.io/v1alpha1
kind: AlertRule
metadata:
  name: air-pressure-low
spec:
  selector: {sensorType: pressure, nodeSelector: {matchLabels: {site: bench}}}
  condition:
    type: Threshold
    threshold: {direction: Below, warning: "6", critical: "4"}
  receivers: [console]
"""
