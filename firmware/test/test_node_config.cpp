// Provisioning over the serial console: what it accepts, what it refuses, and that it
// never prints a secret back.
#include <gtest/gtest.h>

#include <string>

#include "plantwatch/node_config.h"

using plantwatch::Console;
using plantwatch::NodeConfig;

namespace {

const char* kCa[] = {"-----BEGIN CERTIFICATE-----", "MIIBszCCAVmgAwIBAgIUQm9ndXNDQQ==", "-----END CERTIFICATE-----"};

// A console session: each line in turn, the replies joined.
std::string run(Console& console, NodeConfig& config, std::initializer_list<const char*> lines,
                Console::Action* last_action = nullptr) {
  std::string out;
  for (const char* line : lines) {
    const Console::Reply reply = console.line(line, config);
    out += reply.text + "\n";
    if (last_action != nullptr) *last_action = reply.action;
  }
  return out;
}

void provision(Console& console, NodeConfig& config) {
  run(console, config,
      {"set device_id esp32-press-01", "set area hall-1", "set wifi_ssid Plant WiFi 2.4", "set wifi_password s3cret-wifi-pw",
       "set mqtt_host broker.plant.example", "set mqtt_username esp32-press-01", "set mqtt_password n0de-Pa55word", "ca",
       kCa[0], kCa[1], kCa[2], "end"});
}

}  // namespace

TEST(Console, AProvisionedNodeSavesAndKeepsSpacesInValues) {
  Console console;
  NodeConfig config;
  provision(console, config);
  EXPECT_EQ(config.wifi_ssid, "Plant WiFi 2.4");
  EXPECT_EQ(config.mqtt_port, 8883);  // TLS unless told otherwise
  EXPECT_EQ(config.ca_pem, std::string(kCa[0]) + "\n" + kCa[1] + "\n" + kCa[2] + "\n");
  EXPECT_TRUE(plantwatch::config_problems(config).empty());
  Console::Action action = Console::Action::None;
  run(console, config, {"save"}, &action);
  EXPECT_EQ(action, Console::Action::Save);
}

TEST(Console, SecretsAreNeverPrintedBack) {
  Console console;
  NodeConfig config;
  provision(console, config);
  const std::string shown = run(console, config, {"show", "set mqtt_password other-secret", "set wifi_password 12345678"});
  for (const char* secret : {"s3cret-wifi-pw", "n0de-Pa55word", "other-secret", "12345678", "MIIBszCCAVmgAwIBAgIUQm9ndXNDQQ"}) {
    EXPECT_EQ(shown.find(secret), std::string::npos) << secret << " in:\n" << shown;
  }
  EXPECT_NE(shown.find("mqtt_password: (set)"), std::string::npos) << shown;
  EXPECT_NE(shown.find("ca_pem: 1 certificate(s)"), std::string::npos) << shown;
  EXPECT_NE(shown.find("mqtt_host: broker.plant.example"), std::string::npos) << shown;
}

TEST(Console, SaveRefusesWhatIsMissingAndSaysWhat) {
  Console console;
  NodeConfig config;
  Console::Action action = Console::Action::None;
  const std::string out = run(console, config, {"set device_id esp32-press-01", "save"}, &action);
  EXPECT_EQ(action, Console::Action::None);
  for (const char* what : {"not saved", "area:", "wifi_ssid:", "mqtt_host:", "mqtt_password", "ca_pem:"}) {
    EXPECT_NE(out.find(what), std::string::npos) << what << " in:\n" << out;
  }
}

TEST(Console, BadValuesAreRefusedWithWhatIsAccepted) {
  Console console;
  NodeConfig config;
  const std::string out = run(console, config,
                              {"set mqtt_port 0", "set mqtt_port 70000", "set mqtt_port 88x3", "set interval_ms 5",
                               "set colour blue", "set ca_pem x", "frobnicate"});
  EXPECT_EQ(config.mqtt_port, 8883);
  EXPECT_EQ(config.interval_ms, 1000u);
  EXPECT_NE(out.find("mqtt_port: expected a port, 1..65535"), std::string::npos) << out;
  EXPECT_NE(out.find("interval_ms: expected milliseconds"), std::string::npos) << out;
  EXPECT_NE(out.find("unknown key 'colour'"), std::string::npos) << out;
  EXPECT_NE(out.find("ca_pem: use the ca command"), std::string::npos) << out;
  EXPECT_NE(out.find("unknown command 'frobnicate'"), std::string::npos) << out;
  run(console, config, {"set mqtt_port 1883"});
  EXPECT_EQ(config.mqtt_port, 1883);
}

TEST(Console, TopicSegmentsAndPemAreChecked) {
  Console console;
  NodeConfig config;
  provision(console, config);
  for (const char* bad : {"set device_id a/b", "set device_id +", "set area #"}) {
    NodeConfig c = config;
    run(console, c, {bad});
    EXPECT_FALSE(plantwatch::config_problems(c).empty()) << bad;
  }
  const std::string out = run(console, config, {"ca", "not a certificate", "end"});
  EXPECT_NE(out.find("expected one or more PEM certificates"), std::string::npos) << out;
  EXPECT_EQ(config.ca_pem.find("not a certificate"), std::string::npos);  // the good CA stays
  std::string error;
  EXPECT_FALSE(plantwatch::set_config(config, "mqtt_host", std::string("broker\n.evil"), error));
}

TEST(Console, CarriageReturnsFromATerminalAreIgnored) {
  Console console;
  NodeConfig config;
  Console::Action action = Console::Action::None;
  run(console, config, {"set area hall-1\r", "reboot\r"}, &action);
  EXPECT_EQ(config.area, "hall-1");
  EXPECT_EQ(action, Console::Action::Reboot);
}

TEST(Console, AWifiPasswordIsWpa2LengthOrNone) {
  Console console;
  NodeConfig config;
  provision(console, config);
  config.wifi_password = "short";
  EXPECT_FALSE(plantwatch::config_problems(config).empty());
  config.wifi_password = "";
  EXPECT_TRUE(plantwatch::config_problems(config).empty());
}
