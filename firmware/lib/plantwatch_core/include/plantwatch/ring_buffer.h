// A bounded FIFO for readings taken while the broker is unreachable: when full, the
// oldest reading is dropped (and counted), so the newest data survives an outage.
// No heap: the storage is a member array, sized at compile time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace plantwatch {

template <typename T, std::size_t Capacity>
class RingBuffer {
  static_assert(Capacity > 0, "a ring buffer needs room for one item");

 public:
  // Adds an item; returns false when the oldest item had to be dropped for it.
  bool push(const T& item) {
    bool dropped_one = false;
    if (size_ == Capacity) {
      head_ = (head_ + 1) % Capacity;
      --size_;
      if (dropped_ != UINT32_MAX) ++dropped_;
      dropped_one = true;
    }
    items_[(head_ + size_) % Capacity] = item;
    ++size_;
    return !dropped_one;
  }

  // Removes the oldest item into `out`; false when empty.
  bool pop(T& out) {
    if (size_ == 0) return false;
    out = items_[head_];
    drop_front();
    return true;
  }

  // Removes the oldest item (only when !empty()).
  void drop_front() {
    if (size_ == 0) return;
    head_ = (head_ + 1) % Capacity;
    --size_;
  }

  // The oldest item without removing it (only when !empty()).
  const T& front() const { return items_[head_]; }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  bool full() const { return size_ == Capacity; }
  // Items dropped to make room since construction (saturates, never wraps).
  std::uint32_t dropped() const { return dropped_; }
  static constexpr std::size_t capacity() { return Capacity; }

 private:
  std::array<T, Capacity> items_{};
  std::size_t head_ = 0;
  std::size_t size_ = 0;
  std::uint32_t dropped_ = 0;
};

// Sends buffered items oldest first with `send(item) -> bool`, removing each one only once
// it was sent; stops at the first failure so the rest are retried later, still in order,
// and after `limit` items so a long backlog drains across several passes of the main loop.
// Returns how many were sent.
template <typename T, std::size_t Capacity, typename Send>
std::size_t replay(RingBuffer<T, Capacity>& buffer, Send&& send, std::size_t limit = SIZE_MAX) {
  std::size_t sent = 0;
  while (sent < limit && !buffer.empty()) {
    if (!send(buffer.front())) break;
    buffer.drop_front();
    ++sent;
  }
  return sent;
}

}  // namespace plantwatch
