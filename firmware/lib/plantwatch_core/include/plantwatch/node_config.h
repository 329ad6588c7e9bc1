// The node's own settings, provisioned per board into NVS over the serial console (never
// compiled in): identity, Wi-Fi, broker, the MQTT credentials from the SensorNode's Secret
// and the CA that signed the broker's certificate. Portable: the board glue only moves
// these strings between the console, NVS and the network stack.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace plantwatch {

struct NodeConfig {
  std::string device_id;      // the SensorNode's name; the MQTT client id and user name's owner
  std::string area;           // topics: sensors/<area>/<device_id>/...
  std::string wifi_ssid;
  std::string wifi_password;  // secret; empty for an open network (TLS still protects MQTT)
  std::string mqtt_host;      // must be a DNS name in the broker certificate (hostname checked)
  std::uint16_t mqtt_port = 8883;
  std::string mqtt_username;
  std::string mqtt_password;  // secret
  std::string ca_pem;         // the CA certificate(s) the broker's chain must end in
  std::uint32_t interval_ms = 1000;
  std::string ntp_server = "pool.ntp.org";
};

// The settings, in the order `show` lists them; also their NVS keys (at most 15 characters).
extern const char* const kConfigKeys[11];

// Sets `key` from console text; false with `error` saying what is accepted.
bool set_config(NodeConfig& config, const std::string& key, const std::string& value, std::string& error);

// The reads back of `key` for the console: secrets and the CA are summarised, never shown.
std::string show_config(const NodeConfig& config, const std::string& key);

// Why the node cannot start with these settings, one line each; empty when it can.
std::vector<std::string> config_problems(const NodeConfig& config);

// The serial console's line protocol (115200 baud, one command per line):
//   set <key> <value>     value = the rest of the line, spaces included
//   ca                    then the PEM lines of the CA certificate(s), then a line "end"
//   show | save | erase | status | reboot | help
// save refuses settings with problems (and lists them).
class Console {
 public:
  enum class Action : std::uint8_t { None, Save, Erase, Status, Reboot };
  struct Reply {
    Action action = Action::None;
    std::string text;
  };

  Reply line(std::string text, NodeConfig& config);

 private:
  bool reading_ca_ = false;
  std::string ca_;
};

}  // namespace plantwatch
