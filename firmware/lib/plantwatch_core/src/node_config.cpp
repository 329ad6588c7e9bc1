#include "plantwatch/node_config.h"

#include <cstdlib>

#include "plantwatch/topics.h"

namespace plantwatch {
namespace {

constexpr const char* kBeginCert = "-----BEGIN CERTIFICATE-----";
constexpr const char* kEndCert = "-----END CERTIFICATE-----";
constexpr std::size_t kMaxText = 256;   // any setting but the CA
constexpr std::size_t kMaxCaPem = 8192;  // a root and an intermediate, with room

bool printable(const std::string& text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}

bool parse_uint(const std::string& text, std::uint64_t max, std::uint64_t& out) {
  if (text.empty() || text.size() > 10 || text.find_first_not_of("0123456789") != std::string::npos) return false;
  out = std::strtoull(text.c_str(), nullptr, 10);
  return out <= max;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

std::string trim(const std::string& text) {
  const std::size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1);
}

const char* kHelp =
    "commands: set <key> <value> | ca (then PEM lines, then: end) | show | save | erase | status | reboot\n"
    "keys: device_id area wifi_ssid wifi_password mqtt_host mqtt_port mqtt_username mqtt_password "
    "interval_ms ntp_server (ca_pem: use the ca command)";

}  // namespace

const char* const kConfigKeys[11] = {"device_id",     "area",          "wifi_ssid",   "wifi_password",
                                     "mqtt_host",     "mqtt_port",     "mqtt_username", "mqtt_password",
                                     "ca_pem",        "interval_ms",   "ntp_server"};

bool set_config(NodeConfig& c, const std::string& key, const std::string& value, std::string& error) {
  if (key == "ca_pem") {
    if (value.size() > kMaxCaPem || count(value, kBeginCert) == 0 || count(value, kBeginCert) != count(value, kEndCert)) {
      error = "ca_pem: expected one or more PEM certificates (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----), at most 8192 bytes";
      return false;
    }
    c.ca_pem = value;
    return true;
  }
  if (value.size() > kMaxText || !printable(value)) {
    error = key + ": expected printable text of at most 256 bytes";
    return false;
  }
  std::uint64_t n = 0;
  if (key == "mqtt_port" || key == "interval_ms") {
    const bool port = key == "mqtt_port";
    if (!parse_uint(value, port ? 65535 : 86400000, n) || n < (port ? 1u : 100u)) {
      error = key + (port ? ": expected a port, 1..65535 (8883 is MQTT over TLS)" : ": expected milliseconds, 100..86400000");
      return false;
    }
    if (port) c.mqtt_port = static_cast<std::uint16_t>(n);
    else c.interval_ms = static_cast<std::uint32_t>(n);
    return true;
  }
  std::string* target = key == "device_id"       ? &c.device_id
                        : key == "area"          ? &c.area
                        : key == "wifi_ssid"     ? &c.wifi_ssid
                        : key == "wifi_password" ? &c.wifi_password
                        : key == "mqtt_host"     ? &c.mqtt_host
                        : key == "mqtt_username" ? &c.mqtt_username
                        : key == "mqtt_password" ? &c.mqtt_password
                        : key == "ntp_server"    ? &c.ntp_server
                                                 : nullptr;
  if (target == nullptr) {
    error = "unknown key '" + key + "'; " + kHelp;
    return false;
  }
  *target = value;
  return true;
}

std::string show_config(const NodeConfig& c, const std::string& key) {
  if (key == "wifi_password") return c.wifi_password.empty() ? "(none)" : "(set)";
  if (key == "mqtt_password") return c.mqtt_password.empty() ? "(not set)" : "(set)";
  if (key == "ca_pem") {
    return c.ca_pem.empty() ? "(not set)" : std::to_string(count(c.ca_pem, kBeginCert)) + " certificate(s), " +
                                                std::to_string(c.ca_pem.size()) + " bytes";
  }
  if (key == "mqtt_port") return std::to_string(c.mqtt_port);
  if (key == "interval_ms") return std::to_string(c.interval_ms);
  if (key == "device_id") return c.device_id;
  if (key == "area") return c.area;
  if (key == "wifi_ssid") return c.wifi_ssid;
  if (key == "mqtt_host") return c.mqtt_host;
  if (key == "mqtt_username") return c.mqtt_username;
  if (key == "ntp_server") return c.ntp_server;
  return "";
}

std::vector<std::string> config_problems(const NodeConfig& c) {
  std::vector<std::string> problems;
  if (!valid_topic_segment(c.device_id)) problems.push_back("device_id: the SensorNode's name, not empty, without / + #");
  if (!valid_topic_segment(c.area)) problems.push_back("area: the topic's area (hall-1), not empty, without / + #");
  if (c.wifi_ssid.empty() || c.wifi_ssid.size() > 32) problems.push_back("wifi_ssid: 1..32 bytes");
  if (!c.wifi_password.empty() && (c.wifi_password.size() < 8 || c.wifi_password.size() > 63)) {
    problems.push_back("wifi_password: 8..63 characters (WPA2), or none for an open network");
  }
  if (c.mqtt_host.empty()) problems.push_back("mqtt_host: the broker's DNS name as in its certificate");
  if (c.mqtt_username.empty() || c.mqtt_password.empty()) {
    problems.push_back("mqtt_username, mqtt_password: from the SensorNode's credentials Secret (the broker refuses anonymous clients)");
  }
  if (c.ca_pem.empty()) problems.push_back("ca_pem: the CA certificate that signed the broker's (use the ca command)");
  if (c.ntp_server.empty()) problems.push_back("ntp_server: needed to time readings and to check certificate dates");
  return problems;
}

Console::Reply Console::line(std::string text, NodeConfig& config) {
  Reply reply;
  if (!text.empty() && text.back() == '\r') text.pop_back();
  if (reading_ca_) {
    if (trim(text) != "end") {
      ca_ += trim(text);
      ca_ += '\n';
      return reply;
    }
    reading_ca_ = false;
    std::string error;
    reply.text = set_config(config, "ca_pem", ca_, error) ? "ca_pem: " + show_config(config, "ca_pem") : error;
    ca_.clear();
    return reply;
  }
  text = trim(text);
  const std::size_t space = text.find(' ');
  const std::string command = text.substr(0, space);
  if (command.empty()) return reply;
  if (command == "set") {
    const std::string rest = space == std::string::npos ? "" : trim(text.substr(space + 1));
    const std::size_t gap = rest.find(' ');
    const std::string key = rest.substr(0, gap);
    const std::string value = gap == std::string::npos ? "" : trim(rest.substr(gap + 1));
    std::string error;
    if (key == "ca_pem") reply.text = "ca_pem: use the ca command (PEM lines, then: end)";
    else reply.text = set_config(config, key, value, error) ? key + ": " + show_config(config, key) : error;
  } else if (command == "ca") {
    reading_ca_ = true;
    reply.text = "paste the CA certificate(s) in PEM, then a line: end";
  } else if (command == "show") {
    for (const char* key : kConfigKeys) reply.text += std::string(key) + ": " + show_config(config, key) + "\n";
    for (const std::string& p : config_problems(config)) reply.text += "missing or invalid: " + p + "\n";
  } else if (command == "save") {
    const auto problems = config_problems(config);
    if (problems.empty()) {
      reply.action = Action::Save;
    } else {
      reply.text = "not saved:";
      for (const std::string& p : problems) reply.text += "\n  " + p;
    }
  } else if (command == "erase") {
    reply.action = Action::Erase;
  } else if (command == "status") {
    reply.action = Action::Status;
  } else if (command == "reboot") {
    reply.action = Action::Reboot;
  } else {
    reply.text = command == "help" ? kHelp : "unknown command '" + command + "'; " + kHelp;
  }
  return reply;
}

}  // namespace plantwatch
