#include <gtest/gtest.h>

#include "plantwatch/ring_buffer.h"

TEST(RingBuffer, FifoOrder) {
  plantwatch::RingBuffer<int, 3> rb;
  EXPECT_TRUE(rb.empty());
  rb.push(1);
  rb.push(2);
  int v = 0;
  ASSERT_TRUE(rb.pop(v));
  EXPECT_EQ(v, 1);
  ASSERT_TRUE(rb.pop(v));
  EXPECT_EQ(v, 2);
  EXPECT_FALSE(rb.pop(v));
}

TEST(RingBuffer, FullDropsTheOldestAndCountsIt) {
  plantwatch::RingBuffer<int, 3> rb;
  for (int i = 1; i <= 3; ++i) EXPECT_TRUE(rb.push(i));
  EXPECT_FALSE(rb.push(4));
  EXPECT_FALSE(rb.push(5));
  EXPECT_EQ(rb.size(), 3u);
  EXPECT_EQ(rb.dropped(), 2u);
  int v = 0;
  for (int want : {3, 4, 5}) {
    ASSERT_TRUE(rb.pop(v));
    EXPECT_EQ(v, want);
  }
}

TEST(RingBuffer, WrapsAroundManyTimes) {
  plantwatch::RingBuffer<int, 4> rb;
  int v = 0;
  for (int i = 0; i < 1000; ++i) {
    rb.push(i);
    if (i % 2 == 1) {
      ASSERT_TRUE(rb.pop(v));
    }
  }
  // full after a few rounds: each round adds two and removes one, the oldest going first
  EXPECT_EQ(rb.size(), 3u);
  EXPECT_EQ(rb.front(), 997);
}
