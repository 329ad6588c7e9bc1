#include <gtest/gtest.h>

#include <string>

#include "plantwatch/topics.h"

TEST(Topics, FollowTheSensorNodeConvention) {
  std::string prefix;
  ASSERT_TRUE(plantwatch::topic_prefix("hall-1", "esp32-press-01", prefix));
  EXPECT_EQ(prefix, "sensors/hall-1/esp32-press-01");
  EXPECT_EQ(plantwatch::data_topic(prefix), "sensors/hall-1/esp32-press-01/data");
  EXPECT_EQ(plantwatch::status_topic(prefix), "sensors/hall-1/esp32-press-01/status");
}

TEST(Topics, RejectWildcardsSlashesAndEmptySegments) {
  std::string prefix = "unchanged";
  for (const char* bad : {"", "hall/1", "hall+", "#", "a#b"}) {
    EXPECT_FALSE(plantwatch::topic_prefix(bad, "esp32-press-01", prefix)) << bad;
    EXPECT_FALSE(plantwatch::topic_prefix("hall-1", bad, prefix)) << bad;
  }
  EXPECT_EQ(prefix, "unchanged");
}
