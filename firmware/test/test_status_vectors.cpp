// The status topic's contract with the gateway (tests/vectors/status.json, shared with the
// gateway's tests): what the node sends as its birth and its Last Will is what the gateway
// reads as online and offline, and nothing the gateway refuses is something the node sends.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "plantwatch/topics.h"

using json = nlohmann::ordered_json;

namespace {

json vectors() {
  std::ifstream in(PLANTWATCH_STATUS_VECTORS);
  if (!in) {
    ADD_FAILURE() << "cannot read " << PLANTWATCH_STATUS_VECTORS;
    return json::array();
  }
  return json::parse(in);
}

// sensors/<area>/<device>/status -> area and device, split at '/' without judging them.
bool split_status_topic(const std::string& topic, std::string& area, std::string& device) {
  std::vector<std::string> levels(1);
  for (char c : topic) {
    if (c == '/') levels.emplace_back();
    else levels.back() += c;
  }
  if (levels.size() != 4 || levels[0] != "sensors" || levels[3] != "status") return false;
  area = levels[1];
  device = levels[2];
  return true;
}

// The topic the firmware would publish its status on for this area and device, if any.
bool firmware_status_topic(const std::string& area, const std::string& device, std::string& out) {
  std::string prefix;
  if (!plantwatch::topic_prefix(area, device, prefix)) return false;
  out = plantwatch::status_topic(prefix);
  return true;
}

bool firmware_payload(const std::string& payload) {
  return payload == plantwatch::kStatusOnline || payload == plantwatch::kStatusOffline;
}

}  // namespace

TEST(StatusVectors, TheBirthReadsAsOnlineAndTheLastWillAsOffline) {
  std::string topic;
  ASSERT_TRUE(firmware_status_topic("hall-1", "esp32-press-01", topic));
  bool birth = false, will = false;
  for (const json& v : vectors()) {
    if (v.at("topic") != topic || v.at("online").is_null()) continue;
    birth |= v.at("payload") == plantwatch::kStatusOnline && v.at("online") == true;
    will |= v.at("payload") == plantwatch::kStatusOffline && v.at("online") == false;
  }
  EXPECT_TRUE(birth) << "no vector reads the birth '" << plantwatch::kStatusOnline << "' on " << topic << " as online";
  EXPECT_TRUE(will) << "no vector reads the Last Will '" << plantwatch::kStatusOffline << "' on " << topic << " as offline";
}

TEST(StatusVectors, EveryAcceptedStatusIsOneTheFirmwareSendsForThatNode) {
  for (const json& v : vectors()) {
    if (v.at("online").is_null()) continue;
    const std::string topic = v.at("topic").get<std::string>(), payload = v.at("payload").get<std::string>();
    std::string area, device, built;
    ASSERT_TRUE(split_status_topic(topic, area, device)) << topic;
    ASSERT_TRUE(firmware_status_topic(area, device, built)) << topic;
    EXPECT_EQ(built, topic);
    EXPECT_EQ(payload, v.at("online").get<bool>() ? plantwatch::kStatusOnline : plantwatch::kStatusOffline) << v.dump();
  }
}

TEST(StatusVectors, NothingTheGatewayRefusesIsSomethingTheFirmwareSends) {
  std::size_t refused = 0;
  for (const json& v : vectors()) {
    if (!v.at("online").is_null()) continue;
    const std::string reason = v.value("reason", "");
    if (reason == "unknown_node") continue;  // a well-formed status of a node the plant does not have
    ++refused;
    const std::string topic = v.at("topic").get<std::string>(), payload = v.at("payload").get<std::string>();
    std::string area, device, built;
    const bool topic_sendable = split_status_topic(topic, area, device) && firmware_status_topic(area, device, built);
    EXPECT_FALSE(topic_sendable && firmware_payload(payload))
        << "the gateway refuses (" << reason << ") what the firmware sends: " << v.dump();
  }
  EXPECT_GT(refused, 0u) << "the vectors should include statuses the gateway refuses";
}
