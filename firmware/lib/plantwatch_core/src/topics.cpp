#include "plantwatch/topics.h"

namespace plantwatch {

bool valid_topic_segment(const std::string& segment) {
  if (segment.empty()) return false;
  for (char c : segment) {
    if (c == '/' || c == '+' || c == '#' || c == '\0') return false;
  }
  return true;
}

bool topic_prefix(const std::string& area, const std::string& device_id, std::string& out) {
  if (!valid_topic_segment(area) || !valid_topic_segment(device_id)) return false;
  out = "sensors/" + area + "/" + device_id;
  return true;
}

std::string data_topic(const std::string& prefix) { return prefix + "/data"; }

std::string status_topic(const std::string& prefix) { return prefix + "/status"; }

}  // namespace plantwatch
