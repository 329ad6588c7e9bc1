#include "plantwatch/payload.h"

#include <cmath>
#include <cstdio>

namespace plantwatch {
namespace {

// Days since 1970-01-01 -> civil date (proleptic Gregorian), valid for any int64 day.
void civil_from_days(int64_t days, int& year, unsigned& month, unsigned& day) {
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  day = doy - (153 * mp + 2) / 5 + 1;
  month = mp < 10 ? mp + 3 : mp - 9;
  year = static_cast<int>(yoe + era * 400 + (month <= 2 ? 1 : 0));
}

void append_json_string(std::string& out, const std::string& text) {
  out += '"';
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

}  // namespace

std::string iso8601_utc(int64_t unix_seconds) {
  int64_t days = unix_seconds / 86400;
  int64_t rest = unix_seconds % 86400;
  if (rest < 0) {
    rest += 86400;
    --days;
  }
  int year;
  unsigned month, day;
  civil_from_days(days, year, month, day);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", year, month, day,
                static_cast<int>(rest / 3600), static_cast<int>(rest % 3600 / 60), static_cast<int>(rest % 60));
  return buf;
}

std::string build_payload(const std::string& device_id, int64_t unix_seconds,
                          const std::vector<SensorValue>& values, int decimals) {
  std::string out = "{\"device_id\":";
  append_json_string(out, device_id);
  out += ",\"timestamp\":\"" + iso8601_utc(unix_seconds) + "\"";
  int errors = 0;
  char number[48];
  for (const SensorValue& v : values) {
    if (!v.ok || !std::isfinite(v.value)) {
      ++errors;
      continue;
    }
    out += ',';
    append_json_string(out, v.field);
    std::snprintf(number, sizeof number, ":%.*f", decimals, v.value);
    out += number;
  }
  if (errors > 0) out += ",\"sensor_errors\":" + std::to_string(errors);
  out += '}';
  return out;
}

std::string data_topic(const std::string& area, const std::string& device_id) {
  return "sensors/" + area + "/" + device_id + "/data";
}

std::string status_topic(const std::string& area, const std::string& device_id) {
  return "sensors/" + area + "/" + device_id + "/status";
}

}  // namespace plantwatch
