#include "plantwatch/topics.h"

namespace plantwatch {

bool valid_topic_segment(const std::string& segment) {
  if (segment.empty()) return false;
  for (char c : segment) {
    // Control characters too: a topic with a newline would forge lines in every log it reaches.
    if (c == '/' || c == '+' || c == '#' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
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
