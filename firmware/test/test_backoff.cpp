#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "plantwatch/backoff.h"

TEST(Backoff, DoublesUpToTheCapWithTheCeilingAsJitterBound) {
  std::vector<std::uint32_t> bounds;
  plantwatch::Backoff b(500, 8000, [&](std::uint32_t n) { bounds.push_back(n); return n; });
  for (int i = 0; i < 7; ++i) b.next_delay_ms();
  EXPECT_EQ(bounds, (std::vector<std::uint32_t>{500, 1000, 2000, 4000, 8000, 8000, 8000}));
}

TEST(Backoff, ResetStartsOver) {
  plantwatch::Backoff b(100, 1000, [](std::uint32_t n) { return n; });
  b.next_delay_ms();
  b.next_delay_ms();
  b.reset();
  EXPECT_EQ(b.next_delay_ms(), 100u);
}

TEST(Backoff, FullJitterStaysWithinBounds) {
  std::uint32_t seed = 1;
  plantwatch::Backoff b(100, 60000, [&](std::uint32_t n) {
    seed = seed * 1103515245u + 12345u;
    return n == 0 ? 0 : seed % (n + 1);
  });
  for (int i = 0; i < 100; ++i) EXPECT_LE(b.next_delay_ms(), 60000u);
}

TEST(Backoff, NoOverflowAfterManyAttempts) {
  plantwatch::Backoff b(1000, 30000, [](std::uint32_t n) { return n; });
  for (int i = 0; i < 200; ++i) b.next_delay_ms();
  EXPECT_EQ(b.next_delay_ms(), 30000u);
}
