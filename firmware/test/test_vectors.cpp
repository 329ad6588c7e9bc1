// The shared vectors (tests/vectors/esp32-json): the firmware must build each payload
// byte for byte from the vector's `input`; the gateway's tests decode the same bytes into
// the vector's `expected.readings`. One test per file (discovered when ctest runs).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "plantwatch/payload.h"
#include "plantwatch/topics.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using plantwatch::Field;

namespace {

// SensorNode esp32-press-01 (examples/plant/nodes.yaml): spec.sensors[].field -> name.
const std::map<std::string, std::string> kSensorOfField = {
    {"temperature_c", "temperature"},
    {"vibration_g", "vibration"},
    {"current_a", "current"},
    {"battery_voltage", "battery"},
};

std::vector<std::string> vector_files() {
  std::vector<std::string> files;
  if (!fs::is_directory(PLANTWATCH_VECTORS)) return files;
  for (const auto& entry : fs::directory_iterator(PLANTWATCH_VECTORS)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

json load(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// The Reading the node would have taken, from a vector's `input`.
plantwatch::Reading reading_of(const json& input) {
  plantwatch::Reading r;
  r.unix_time = input.at("unix_time").get<std::int64_t>();
  std::vector<bool> seen(plantwatch::kFieldCount, false);
  for (const auto& [name, value] : input.at("sensors").items()) {
    Field f;
    if (!plantwatch::field_from_name(name, f)) {
      ADD_FAILURE() << "input.sensors." << name << " is not a field of esp32-press-01";
      continue;
    }
    r[f] = {value.get<float>(), true};
    seen[static_cast<std::size_t>(f)] = true;
  }
  for (const auto& name : input.at("failed")) {
    Field f;
    if (!plantwatch::field_from_name(name.get<std::string>(), f)) {
      ADD_FAILURE() << "input.failed names " << name << ", not a field of esp32-press-01";
      continue;
    }
    r[f].ok = false;
    seen[static_cast<std::size_t>(f)] = true;
  }
  for (std::size_t i = 0; i < plantwatch::kFieldCount; ++i) {
    EXPECT_TRUE(seen[i]) << "input must give " << plantwatch::field_name(static_cast<Field>(i))
                         << " in sensors or list it in failed";
  }
  return r;
}

std::string test_name(const testing::TestParamInfo<std::string>& info) {
  std::string name = fs::path(info.param).stem().string();
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

class SharedVector : public testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(SharedVector, FirmwareBuildsThePayloadByteForByte) {
  const json vector = load(GetParam());
  const json& input = vector.at("input");
  const std::string device_id = input.at("device_id").get<std::string>();
  EXPECT_EQ(plantwatch::build_payload(device_id, reading_of(input)), vector.at("payload").get<std::string>());
}

TEST_P(SharedVector, TopicIsTheNodesDataTopic) {
  const json vector = load(GetParam());
  const std::string device_id = vector.at("input").at("device_id").get<std::string>();
  EXPECT_EQ(vector.at("node").get<std::string>(), device_id);
  // sensors/<area>/<device>/data: take the area from the topic, rebuild the topic from it.
  const std::string topic = vector.at("topic").get<std::string>();
  const std::string head = "sensors/", tail = "/" + device_id + "/data";
  ASSERT_GT(topic.size(), head.size() + tail.size());
  ASSERT_EQ(topic.compare(0, head.size(), head), 0) << topic;
  ASSERT_EQ(topic.compare(topic.size() - tail.size(), tail.size(), tail), 0) << topic;
  std::string prefix;
  ASSERT_TRUE(plantwatch::topic_prefix(topic.substr(head.size(), topic.size() - head.size() - tail.size()), device_id, prefix));
  EXPECT_EQ(plantwatch::data_topic(prefix), topic);
}

// The readings the vector promises the gateway: one per sensor that read, in payload
// order, at the reading's time, with the value the payload carries (2 decimals).
TEST_P(SharedVector, ExpectedReadingsMatchWhatThePayloadCarries) {
  const json vector = load(GetParam());
  const plantwatch::Reading r = reading_of(vector.at("input"));
  json want = json::array();
  for (std::size_t i = 0; i < plantwatch::kFieldCount; ++i) {
    const auto& m = r.values[i];
    if (!m.ok || !std::isfinite(m.value)) continue;
    const double sent = std::strtod(plantwatch::format_fixed(m.value, plantwatch::kDecimals).c_str(), nullptr);
    want.push_back({{"sensor", kSensorOfField.at(plantwatch::field_name(static_cast<Field>(i)))},
                    {"value", sent},
                    {"ts", static_cast<double>(r.unix_time)}});
  }
  const json& got = vector.at("expected").at("readings");
  ASSERT_EQ(got.size(), want.size()) << got.dump();
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].at("sensor"), want[i].at("sensor"));
    EXPECT_DOUBLE_EQ(got[i].at("value").get<double>(), want[i].at("value").get<double>()) << got[i].dump();
    EXPECT_DOUBLE_EQ(got[i].at("ts").get<double>(), want[i].at("ts").get<double>()) << got[i].dump();
  }
}

INSTANTIATE_TEST_SUITE_P(EspJson, SharedVector, testing::ValuesIn(vector_files()), test_name);

// The cases the contract must cover, whatever the files are called.
TEST(SharedVectors, CoverNormalOverheatingFailedAndBelowZero) {
  const auto files = vector_files();
  ASSERT_GE(files.size(), 4u) << "expected the esp32-json vectors in " << PLANTWATCH_VECTORS;
  bool normal = false, overheating = false, failed = false, below_zero = false;
  for (const auto& path : files) {
    const json input = load(path).at("input");
    const double t = input.at("sensors").value("temperature_c", 0.0);
    const bool none_failed = input.at("failed").empty();
    normal |= none_failed && t >= 0 && t < 80;
    overheating |= t >= 80;
    failed |= !none_failed;
    below_zero |= t < 0;
  }
  EXPECT_TRUE(normal);
  EXPECT_TRUE(overheating);
  EXPECT_TRUE(failed);
  EXPECT_TRUE(below_zero);
}
