#include "plantwatch/payload.h"

#include <cmath>
#include <cstdio>
#include <cstring>

namespace plantwatch {
namespace {

constexpr const char* kFieldNames[kFieldCount] = {"temperature_c", "vibration_g", "current_a", "battery_voltage"};

// Days since 1970-01-01 -> civil date (proleptic Gregorian), H. Hinnant's algorithm.
void civil_from_days(std::int64_t days, std::int64_t& year, unsigned& month, unsigned& day) {
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  day = doy - (153 * mp + 2) / 5 + 1;
  month = mp < 10 ? mp + 3 : mp - 9;
  year = static_cast<std::int64_t>(yoe) + era * 400 + (month <= 2 ? 1 : 0);
}

// A JSON string literal: quotes, backslashes and control characters escaped.
void append_json_string(std::string& out, const std::string& text) {
  out += '"';
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", u);
      out += esc;
    } else {
      out += c;
    }
  }
  out += '"';
}

}  // namespace

const char* field_name(Field field) { return kFieldNames[static_cast<std::size_t>(field)]; }

bool field_from_name(const std::string& name, Field& out) {
  for (std::size_t i = 0; i < kFieldCount; ++i) {
    if (name == kFieldNames[i]) {
      out = static_cast<Field>(i);
      return true;
    }
  }
  return false;
}

std::string iso8601_utc(std::int64_t unix_seconds) {
  std::int64_t days = unix_seconds / 86400;
  std::int64_t rest = unix_seconds % 86400;
  if (rest < 0) {
    rest += 86400;
    --days;
  }
  std::int64_t year;
  unsigned month, day;
  civil_from_days(days, year, month, day);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02d:%02d:%02dZ", static_cast<long long>(year), month, day,
                static_cast<int>(rest / 3600), static_cast<int>(rest % 3600 / 60), static_cast<int>(rest % 60));
  return buf;
}

std::string format_fixed(double value, int decimals) {
  if (decimals < 0) decimals = 0;
  if (decimals > 9) decimals = 9;
  // Sized by a first pass, so 1e300 is written in full rather than cut off mid-number.
  const int length = std::snprintf(nullptr, 0, "%.*f", decimals, value);
  if (length <= 0) return "0";
  std::string out(static_cast<std::size_t>(length) + 1, '\0');
  std::snprintf(&out[0], out.size(), "%.*f", decimals, value);
  out.resize(static_cast<std::size_t>(length));
  // -0.001 rounds to "-0.00": send "0.00", the same number without a sign to trip over.
  if (out[0] == '-' && out.find_first_not_of("0.", 1) == std::string::npos) out.erase(0, 1);
  return out;
}

int sensor_errors(const Reading& reading) {
  int errors = 0;
  for (const Measurement& m : reading.values) {
    if (!m.ok || !std::isfinite(m.value)) ++errors;
  }
  return errors;
}

std::string build_payload(const std::string& device_id, const Reading& reading) {
  std::string out;
  out.reserve(192);
  out += "{\"device_id\":";
  append_json_string(out, device_id);
  out += ",\"timestamp\":\"";
  out += iso8601_utc(reading.unix_time);
  out += '"';
  for (std::size_t i = 0; i < kFieldCount; ++i) {
    const Measurement& m = reading.values[i];
    if (!m.ok || !std::isfinite(m.value)) continue;  // counted in sensor_errors
    out += ",\"";
    out += kFieldNames[i];
    out += "\":";
    out += format_fixed(m.value, kDecimals);
  }
  const int errors = sensor_errors(reading);
  if (errors > 0) {
    out += ",\"sensor_errors\":";
    out += std::to_string(errors);
  }
  out += '}';
  return out;
}

}  // namespace plantwatch
