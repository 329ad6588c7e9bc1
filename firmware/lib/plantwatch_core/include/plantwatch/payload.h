// The node's payload: the flat JSON the gateway decodes as `esp32-json`.
// Portable C++17, no Arduino: the host tests build the exact bytes the board sends.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace plantwatch {

// One sensor's value for this message; `ok` is false when the sensor failed to read.
struct SensorValue {
  std::string field;  // payload key, e.g. "temperature_c" (SensorNode spec.sensors[].field)
  double value;
  bool ok;
};

// Unix seconds -> "2026-01-01T08:00:00Z".
std::string iso8601_utc(int64_t unix_seconds);

// {"device_id":..,"timestamp":..,<field>:<value>,...[,"sensor_errors":N]} with fields in the
// given order and `decimals` digits. Failed or non-finite values are left out and counted
// in sensor_errors, so the gateway never sees NaN and still learns a sensor is broken.
std::string build_payload(const std::string& device_id, int64_t unix_seconds,
                          const std::vector<SensorValue>& values, int decimals = 2);

// "sensors/<area>/<device>/data": the topic a SensorNode of format esp32-json publishes to.
std::string data_topic(const std::string& area, const std::string& device_id);

// "sensors/<area>/<device>/status": retained online/offline (the Last Will).
std::string status_topic(const std::string& area, const std::string& device_id);

}  // namespace plantwatch
