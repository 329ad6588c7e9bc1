#include "plantwatch/backoff.h"

#include <utility>

namespace plantwatch {

Backoff::Backoff(std::uint32_t base_ms, std::uint32_t cap_ms, std::function<std::uint32_t(std::uint32_t)> random)
    : base_ms_(base_ms), cap_ms_(cap_ms < base_ms ? base_ms : cap_ms), random_(std::move(random)) {}

std::uint32_t Backoff::next_delay_ms() {
  // base * 2^attempt, computed without overflowing: stop doubling once past the cap.
  std::uint64_t ceiling = base_ms_;
  for (std::uint32_t i = 0; i < attempt_ && ceiling < cap_ms_; ++i) ceiling *= 2;
  if (ceiling > cap_ms_) ceiling = cap_ms_;
  ++attempt_;
  return random_(static_cast<std::uint32_t>(ceiling));
}

}  // namespace plantwatch
