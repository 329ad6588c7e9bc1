#include "plantwatch/backoff.h"

#include <utility>

namespace plantwatch {

Backoff::Backoff(std::uint32_t base_ms, std::uint32_t cap_ms, Random random)
    : base_ms_(base_ms), cap_ms_(cap_ms < base_ms ? base_ms : cap_ms), random_(std::move(random)) {}

std::uint32_t Backoff::ceiling_ms() const {
  // base * 2^attempt without overflowing: stop doubling once at the cap.
  std::uint64_t ceiling = base_ms_;
  for (std::uint32_t i = 0; i < attempt_ && ceiling < cap_ms_; ++i) ceiling *= 2;
  return ceiling > cap_ms_ ? cap_ms_ : static_cast<std::uint32_t>(ceiling);
}

std::uint32_t Backoff::next_delay_ms() {
  const std::uint32_t ceiling = ceiling_ms();
  if (attempt_ != UINT32_MAX) ++attempt_;
  const std::uint32_t delay = random_ ? random_(ceiling) : ceiling;
  return delay > ceiling ? ceiling : delay;
}

}  // namespace plantwatch
