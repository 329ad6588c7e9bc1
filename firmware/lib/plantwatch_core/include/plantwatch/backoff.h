// Reconnect delays: exponential from `base_ms` up to `cap_ms`, with "full jitter" so a
// hall full of nodes does not reconnect in lock-step after the broker restarts.
#pragma once

#include <cstdint>
#include <functional>

namespace plantwatch {

class Backoff {
 public:
  // `random(n)` returns a uniform integer in [0, n]; injected so tests are deterministic.
  Backoff(std::uint32_t base_ms, std::uint32_t cap_ms, std::function<std::uint32_t(std::uint32_t)> random);

  // The delay before the next attempt; grows with every call until reset().
  std::uint32_t next_delay_ms();

  // Call after a successful connection.
  void reset() { attempt_ = 0; }

  std::uint32_t attempt() const { return attempt_; }

 private:
  std::uint32_t base_ms_;
  std::uint32_t cap_ms_;
  std::function<std::uint32_t(std::uint32_t)> random_;
  std::uint32_t attempt_ = 0;
};

}  // namespace plantwatch
