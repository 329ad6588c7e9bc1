// The shared vectors (tests/vectors/esp32-json): the firmware must build each payload
// byte for byte; the gateway's tests decode the same bytes into the expected readings.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "plantwatch/payload.h"

namespace fs = std::filesystem;

TEST(SharedVectors, FirmwareBuildsEveryPayloadByteForByte) {
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(PLANTWATCH_VECTORS)) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    auto vector = nlohmann::ordered_json::parse(in);
    const auto& input = vector["input"];
    std::vector<std::string> failed = input["failed"].get<std::vector<std::string>>();
    std::vector<plantwatch::SensorValue> values;
    for (const auto& [field, value] : input["sensors"].items()) {
      bool ok = std::find(failed.begin(), failed.end(), field) == failed.end();
      values.push_back({field, value.get<double>(), ok});
    }
    EXPECT_EQ(plantwatch::build_payload(input["device_id"], input["unix_time"], values),
              vector["payload"].get<std::string>())
        << entry.path();
    ++checked;
  }
  EXPECT_GE(checked, 4) << "expected the esp32-json vectors in " << PLANTWATCH_VECTORS;
}
