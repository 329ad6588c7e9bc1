#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "plantwatch/payload.h"
#include "plantwatch/ring_buffer.h"

using plantwatch::RingBuffer;

TEST(RingBuffer, FifoOrder) {
  RingBuffer<int, 3> rb;
  EXPECT_TRUE(rb.empty());
  rb.push(1);
  rb.push(2);
  int v = 0;
  ASSERT_TRUE(rb.pop(v));
  EXPECT_EQ(v, 1);
  ASSERT_TRUE(rb.pop(v));
  EXPECT_EQ(v, 2);
  EXPECT_FALSE(rb.pop(v));
  EXPECT_EQ(rb.dropped(), 0u);
}

TEST(RingBuffer, FullDropsTheOldestAndCountsIt) {
  RingBuffer<int, 3> rb;
  for (int i = 1; i <= 3; ++i) EXPECT_TRUE(rb.push(i));
  EXPECT_TRUE(rb.full());
  EXPECT_FALSE(rb.push(4));
  EXPECT_FALSE(rb.push(5));
  EXPECT_EQ(rb.size(), 3u);
  EXPECT_EQ(rb.dropped(), 2u);
  int v = 0;
  for (int want : {3, 4, 5}) {
    ASSERT_TRUE(rb.pop(v));
    EXPECT_EQ(v, want);
  }
  EXPECT_EQ(rb.dropped(), 2u);  // the count survives draining
}

TEST(RingBuffer, CapacityOne) {
  RingBuffer<int, 1> rb;
  EXPECT_TRUE(rb.push(1));
  EXPECT_FALSE(rb.push(2));
  EXPECT_EQ(rb.front(), 2);
  EXPECT_EQ(rb.dropped(), 1u);
}

TEST(RingBuffer, WrapsAroundManyTimes) {
  RingBuffer<int, 4> rb;
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

TEST(Replay, SendsOldestFirstAndKeepsWhatFailed) {
  RingBuffer<int, 8> rb;
  for (int i = 1; i <= 5; ++i) rb.push(i);
  std::vector<int> sent;
  // the link drops after two messages: the third stays, first in line for the next replay
  EXPECT_EQ(plantwatch::replay(rb, [&](int x) { if (sent.size() == 2) return false; sent.push_back(x); return true; }), 2u);
  EXPECT_EQ(sent, (std::vector<int>{1, 2}));
  EXPECT_EQ(rb.size(), 3u);
  EXPECT_EQ(rb.front(), 3);
  EXPECT_EQ(plantwatch::replay(rb, [&](int x) { sent.push_back(x); return true; }), 3u);
  EXPECT_EQ(sent, (std::vector<int>{1, 2, 3, 4, 5}));
  EXPECT_TRUE(rb.empty());
}

TEST(Replay, StopsAfterTheLimitAndResumesInOrder) {
  RingBuffer<int, 8> rb;
  for (int i = 1; i <= 5; ++i) rb.push(i);
  std::vector<int> sent;
  auto send = [&](int x) { sent.push_back(x); return true; };
  EXPECT_EQ(plantwatch::replay(rb, send, 2), 2u);
  EXPECT_EQ(plantwatch::replay(rb, send, 2), 2u);
  EXPECT_EQ(plantwatch::replay(rb, send, 2), 1u);
  EXPECT_EQ(plantwatch::replay(rb, send, 2), 0u);
  EXPECT_EQ(sent, (std::vector<int>{1, 2, 3, 4, 5}));
}

TEST(Replay, AnOutageLongerThanTheBufferKeepsTheNewestReadingsInOrder) {
  // What the node does: a reading a second into the backlog, published once the broker is back.
  RingBuffer<plantwatch::Reading, 4> backlog;
  for (std::int64_t t = 100; t < 110; ++t) {
    plantwatch::Reading r;
    r.unix_time = t;
    r[plantwatch::Field::TemperatureC] = {20.0f, true};
    backlog.push(r);
  }
  EXPECT_EQ(backlog.dropped(), 6u);
  std::vector<std::string> published;
  plantwatch::replay(backlog, [&](const plantwatch::Reading& r) {
    published.push_back(plantwatch::build_payload("n1", r));
    return true;
  });
  ASSERT_EQ(published.size(), 4u);
  for (std::size_t i = 0; i < published.size(); ++i) {
    EXPECT_NE(published[i].find(plantwatch::iso8601_utc(106 + static_cast<std::int64_t>(i))), std::string::npos)
        << published[i];
  }
}
