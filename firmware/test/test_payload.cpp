#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "plantwatch/payload.h"

using plantwatch::build_payload;
using plantwatch::Field;
using plantwatch::format_fixed;
using plantwatch::iso8601_utc;
using plantwatch::Reading;

namespace {

Reading all_ok(std::int64_t t, float temperature, float vibration, float current, float battery) {
  Reading r;
  r.unix_time = t;
  r[Field::TemperatureC] = {temperature, true};
  r[Field::VibrationG] = {vibration, true};
  r[Field::CurrentA] = {current, true};
  r[Field::BatteryVoltage] = {battery, true};
  return r;
}

}  // namespace

TEST(Iso8601, EpochLeapDaysAndNegativeTimes) {
  EXPECT_EQ(iso8601_utc(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(iso8601_utc(951782400), "2000-02-29T00:00:00Z");
  EXPECT_EQ(iso8601_utc(1767225599), "2025-12-31T23:59:59Z");
  EXPECT_EQ(iso8601_utc(1767254400), "2026-01-01T08:00:00Z");
  EXPECT_EQ(iso8601_utc(4107542400), "2100-03-01T00:00:00Z");  // 2100 is not a leap year
  EXPECT_EQ(iso8601_utc(-1), "1969-12-31T23:59:59Z");
  EXPECT_EQ(iso8601_utc(2147483648), "2038-01-19T03:14:08Z");  // past the 32-bit time_t edge
}

TEST(FormatFixed, FixedDecimalsRoundingAndNoNegativeZero) {
  EXPECT_EQ(format_fixed(1.0, 2), "1.00");
  EXPECT_EQ(format_fixed(21.456, 2), "21.46");
  EXPECT_EQ(format_fixed(-12.5, 2), "-12.50");
  EXPECT_EQ(format_fixed(-0.001, 2), "0.00");
  EXPECT_EQ(format_fixed(-0.0, 2), "0.00");
  EXPECT_EQ(format_fixed(-0.006, 2), "-0.01");
  EXPECT_EQ(format_fixed(7.0, 0), "7");
  EXPECT_EQ(format_fixed(1.5, -3), "2");  // decimals clamped to 0..9
}

TEST(FormatFixed, HugeValuesAreWrittenInFullNotCutOff) {
  const std::string s = format_fixed(1e300, 2);
  EXPECT_EQ(s.size(), 301u + 3u);
  EXPECT_EQ(s.substr(0, 2), "10");
  EXPECT_EQ(s.substr(s.size() - 3), ".00");
}

TEST(Payload, FixedOrderAndTwoDecimals) {
  EXPECT_EQ(build_payload("esp32-press-01", all_ok(1767254400, 45.25f, 1.5f, 12.1f, 3.71f)),
            R"({"device_id":"esp32-press-01","timestamp":"2026-01-01T08:00:00Z",)"
            R"("temperature_c":45.25,"vibration_g":1.50,"current_a":12.10,"battery_voltage":3.71})");
}

TEST(Payload, OrderDoesNotDependOnTheOrderValuesWereSet) {
  Reading a, b;
  a.unix_time = b.unix_time = 0;
  a[Field::BatteryVoltage] = {3.7f, true};
  a[Field::TemperatureC] = {20.0f, true};
  b[Field::TemperatureC] = {20.0f, true};
  b[Field::BatteryVoltage] = {3.7f, true};
  EXPECT_EQ(build_payload("n1", a), build_payload("n1", b));
  EXPECT_EQ(build_payload("n1", a).find("temperature_c") < build_payload("n1", a).find("battery_voltage"), true);
}

TEST(Payload, FailedNanAndInfinityAreLeftOutAndCounted) {
  Reading r = all_ok(0, 0.0f, 0.0f, 0.0f, 3.0f);
  r[Field::TemperatureC] = {std::numeric_limits<float>::quiet_NaN(), true};
  r[Field::VibrationG] = {std::numeric_limits<float>::infinity(), true};
  r[Field::CurrentA] = {2.0f, false};
  EXPECT_EQ(plantwatch::sensor_errors(r), 3);
  const std::string p = build_payload("n1", r);
  EXPECT_EQ(p, R"({"device_id":"n1","timestamp":"1970-01-01T00:00:00Z","battery_voltage":3.00,"sensor_errors":3})");
  EXPECT_EQ(p.find("nan"), std::string::npos);
  EXPECT_EQ(p.find("inf"), std::string::npos);
}

TEST(Payload, EverySensorFailed) {
  Reading r;  // Measurement defaults to not ok
  r.unix_time = 60;
  EXPECT_EQ(build_payload("n1", r), R"({"device_id":"n1","timestamp":"1970-01-01T00:01:00Z","sensor_errors":4})");
}

TEST(Payload, NoSensorErrorsFieldWhenAllRead) {
  EXPECT_EQ(build_payload("n1", all_ok(0, 1, 1, 1, 1)).find("sensor_errors"), std::string::npos);
}

TEST(Payload, EscapesTheDeviceId) {
  Reading r;
  r.unix_time = 0;
  r[Field::TemperatureC] = {1.0f, true};
  EXPECT_EQ(build_payload("a\"b\\c\n", r),
            R"({"device_id":"a\"b\\c\u000a","timestamp":"1970-01-01T00:00:00Z","temperature_c":1.00,"sensor_errors":3})");
}

TEST(Fields, NamesAreTheSensorNodeFields) {
  const char* names[] = {"temperature_c", "vibration_g", "current_a", "battery_voltage"};
  for (std::size_t i = 0; i < plantwatch::kFieldCount; ++i) {
    EXPECT_STREQ(plantwatch::field_name(static_cast<Field>(i)), names[i]);
    Field f;
    ASSERT_TRUE(plantwatch::field_from_name(names[i], f));
    EXPECT_EQ(static_cast<std::size_t>(f), i);
  }
  Field f;
  EXPECT_FALSE(plantwatch::field_from_name("humidity_percent", f));
}
