#include <gtest/gtest.h>

#include <cmath>

#include "plantwatch/payload.h"

using plantwatch::build_payload;
using plantwatch::iso8601_utc;

TEST(Iso8601, EpochAndLeapDays) {
  EXPECT_EQ(iso8601_utc(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(iso8601_utc(951782400), "2000-02-29T00:00:00Z");
  EXPECT_EQ(iso8601_utc(1767225599), "2025-12-31T23:59:59Z");
  EXPECT_EQ(iso8601_utc(-1), "1969-12-31T23:59:59Z");
}

TEST(Payload, FieldsInOrderWithFixedDecimals) {
  EXPECT_EQ(build_payload("n1", 0, {{"temperature_c", 21.456, true}, {"vibration_g", 1, true}}),
            R"({"device_id":"n1","timestamp":"1970-01-01T00:00:00Z","temperature_c":21.46,"vibration_g":1.00})");
}

TEST(Payload, NeverEmitsNanOrInfinity) {
  std::string p = build_payload("n1", 0, {{"a", NAN, true}, {"b", INFINITY, true}, {"c", 2.0, false}, {"d", 3.0, true}});
  EXPECT_EQ(p, R"({"device_id":"n1","timestamp":"1970-01-01T00:00:00Z","d":3.00,"sensor_errors":3})");
}

TEST(Payload, EscapesTheDeviceId) {
  EXPECT_EQ(build_payload("a\"b", 0, {}), R"({"device_id":"a\"b","timestamp":"1970-01-01T00:00:00Z"})");
}

TEST(Topics, FollowTheSensorNodeConvention) {
  EXPECT_EQ(plantwatch::data_topic("hall-1", "esp32-press-01"), "sensors/hall-1/esp32-press-01/data");
  EXPECT_EQ(plantwatch::status_topic("hall-1", "esp32-press-01"), "sensors/hall-1/esp32-press-01/status");
}
