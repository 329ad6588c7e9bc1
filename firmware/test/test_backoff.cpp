#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "plantwatch/backoff.h"

using plantwatch::Backoff;

TEST(Backoff, DoublesUpToTheCapWithTheCeilingAsJitterBound) {
  std::vector<std::uint32_t> bounds;
  Backoff b(500, 8000, [&](std::uint32_t n) { bounds.push_back(n); return n; });
  for (int i = 0; i < 7; ++i) b.next_delay_ms();
  EXPECT_EQ(bounds, (std::vector<std::uint32_t>{500, 1000, 2000, 4000, 8000, 8000, 8000}));
}

TEST(Backoff, TheDelayIsWhatTheRandomSourceChose) {
  std::vector<std::uint32_t> picks = {0, 700, 1234};
  std::size_t i = 0;
  Backoff b(500, 30000, [&](std::uint32_t) { return picks[i++]; });
  EXPECT_EQ(b.next_delay_ms(), 0u);     // full jitter: [0, 500]
  EXPECT_EQ(b.next_delay_ms(), 700u);   // [0, 1000]
  EXPECT_EQ(b.next_delay_ms(), 1234u);  // [0, 2000]
}

TEST(Backoff, ARandomSourceOutOfRangeIsClampedToTheCeiling) {
  Backoff b(100, 1000, [](std::uint32_t) { return 999999u; });
  EXPECT_EQ(b.next_delay_ms(), 100u);
  EXPECT_EQ(b.next_delay_ms(), 200u);
}

TEST(Backoff, ResetStartsOver) {
  Backoff b(100, 1000, [](std::uint32_t n) { return n; });
  b.next_delay_ms();
  b.next_delay_ms();
  EXPECT_EQ(b.attempt(), 2u);
  b.reset();
  EXPECT_EQ(b.attempt(), 0u);
  EXPECT_EQ(b.next_delay_ms(), 100u);
}

TEST(Backoff, FullJitterStaysWithinBounds) {
  std::uint32_t seed = 1;
  Backoff b(100, 60000, [&](std::uint32_t n) {
    seed = seed * 1103515245u + 12345u;
    return seed % (n + 1);
  });
  for (int i = 0; i < 100; ++i) {
    const std::uint32_t ceiling = b.ceiling_ms();
    EXPECT_LE(b.next_delay_ms(), ceiling);
    EXPECT_LE(ceiling, 60000u);
  }
}

TEST(Backoff, NoOverflowAfterManyAttempts) {
  Backoff b(1000, 30000, [](std::uint32_t n) { return n; });
  for (int i = 0; i < 200; ++i) b.next_delay_ms();
  EXPECT_EQ(b.next_delay_ms(), 30000u);
}

TEST(Backoff, ACapBelowTheBaseIsTheBase) {
  Backoff b(5000, 10, [](std::uint32_t n) { return n; });
  EXPECT_EQ(b.next_delay_ms(), 5000u);
  EXPECT_EQ(b.next_delay_ms(), 5000u);
}
