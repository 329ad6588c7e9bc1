// Reconnect delays: exponential from `base_ms` up to `cap_ms`, with "full jitter"
// (a uniform delay in [0, ceiling]) so a hall full of nodes does not reconnect in
// lock-step after the broker restarts.
#pragma once

#include <cstdint>
#include <functional>

namespace plantwatch {

class Backoff {
 public:
  // `random(n)` returns a uniform integer in [0, n]; injected so tests are deterministic
  // (the board passes its hardware RNG). A result above n is clamped to n.
  using Random = std::function<std::uint32_t(std::uint32_t)>;

  Backoff(std::uint32_t base_ms, std::uint32_t cap_ms, Random random);

  // The upper bound of the next delay: min(cap, base * 2^attempt).
  std::uint32_t ceiling_ms() const;

  // The delay before the next attempt; the ceiling doubles with every call until reset().
  std::uint32_t next_delay_ms();

  // Call after a successful connection.
  void reset() { attempt_ = 0; }

  std::uint32_t attempt() const { return attempt_; }

 private:
  std::uint32_t base_ms_;
  std::uint32_t cap_ms_;
  Random random_;
  std::uint32_t attempt_ = 0;
};

}  // namespace plantwatch
