// MQTT topics of a node: everything hangs off one prefix, sensors/<area>/<device>
// (the SensorNode's spec.payload.topic is <prefix>/data, e.g. sensors/hall-1/esp32-press-01/data).
#pragma once

#include <string>

namespace plantwatch {

// True when `segment` can be one level of a topic the node publishes to: not empty,
// no '/', none of the wildcards '+' '#' that a publish topic must not contain, and no
// control characters (the gateway refuses those topics).
bool valid_topic_segment(const std::string& segment);

// "sensors/<area>/<device_id>"; false (and `out` untouched) when either is not a valid segment.
bool topic_prefix(const std::string& area, const std::string& device_id, std::string& out);

// "<prefix>/data": the readings (the SensorNode's spec.payload.topic).
std::string data_topic(const std::string& prefix);

// "<prefix>/status": kStatusOnline (the birth, retained, QoS 1) right after connecting,
// kStatusOffline as the Last Will (retained, QoS 1) that the broker publishes when the node
// vanishes. Plain text; the gateway turns them into the SensorNode's Online condition
// (the contract: tests/vectors/status.json).
std::string status_topic(const std::string& prefix);

constexpr const char* kStatusOnline = "online";
constexpr const char* kStatusOffline = "offline";

}  // namespace plantwatch
