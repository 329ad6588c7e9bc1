// The node's payload: the flat JSON the gateway decodes as `esp32-json`.
// Portable C++17, no Arduino: the host tests build the exact bytes the board sends.
//
//   {"device_id":"esp32-press-01","timestamp":"2026-01-01T08:00:00Z","temperature_c":45.25,
//    "vibration_g":1.50,"current_a":12.10,"battery_voltage":3.71[,"sensor_errors":N]}
//
// Fields always come in this order, every number has kDecimals decimals, and a sensor that
// failed (or returned NaN/Inf) is left out and counted in `sensor_errors`, which appears
// only when it is not zero. The bytes are the contract in tests/vectors/esp32-json/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace plantwatch {

constexpr int kDecimals = 2;

// One sensor's value in one reading; `ok` is false when the sensor failed to read.
// float keeps the outage buffer small; 7 significant digits are plenty at 2 decimals.
struct Measurement {
  float value = 0.0f;
  bool ok = false;
};

// The sensors of an esp32-press node, in payload order. The names are the SensorNode's
// spec.sensors[].field (examples/plant/nodes.yaml: temperature, vibration, current, battery).
enum class Field : std::uint8_t { TemperatureC, VibrationG, CurrentA, BatteryVoltage };
constexpr std::size_t kFieldCount = 4;

// "temperature_c", "vibration_g", "current_a", "battery_voltage".
const char* field_name(Field field);

// The field whose payload key is `name`; false when there is none.
bool field_from_name(const std::string& name, Field& out);

// One sample of every sensor, taken at `unix_time` (UTC seconds from NTP).
struct Reading {
  std::int64_t unix_time = 0;
  Measurement values[kFieldCount];

  Measurement& operator[](Field f) { return values[static_cast<std::size_t>(f)]; }
  const Measurement& operator[](Field f) const { return values[static_cast<std::size_t>(f)]; }
};

// Unix seconds -> "2026-01-01T08:00:00Z" (proleptic Gregorian, any int64 that fits a year).
std::string iso8601_utc(std::int64_t unix_seconds);

// `value` with exactly `decimals` decimals (0..9), never "-0.00", never truncated.
// Only finite values: the caller decides what a NaN means (build_payload drops it).
std::string format_fixed(double value, int decimals);

// The exact payload text for one reading.
std::string build_payload(const std::string& device_id, const Reading& reading);

// How many sensors build_payload leaves out of this reading (failed or non-finite).
int sensor_errors(const Reading& reading);

}  // namespace plantwatch
