#include "plantwatch/outbox.h"

namespace plantwatch {

Outbox::Outbox(Journal& journal) : journal_(journal), entries_(journal.slots()) {}

Recovery Outbox::restore() {
  std::vector<JournalRecord> live;
  JournalHeader header;
  const Recovery recovery = journal_.recover(live, header);
  head_ = size_ = 0;
  dropped_ = header.dropped;
  next_seq_ = header.head;
  for (const JournalRecord& r : live) {
    OutboxEntry& e = slot(size_++);
    e = OutboxEntry{};
    e.seq = r.seq;
    e.reading = r.reading;
    e.journaled = true;
    next_seq_ = r.seq + 1;
  }
  return recovery;
}

bool Outbox::push(const Reading& reading, bool online) {
  const std::uint32_t seq = next_seq_;
  bool kept_all = true;
  // Room by sequence number, not count: a torn write can leave a gap after restore(), and
  // every waiting reading must stay within `capacity` of the newest to keep its own slot.
  bool released_journaled = false;
  while (size_ > 0 && seq - slot(0).seq >= entries_.size()) {
    released_journaled |= slot(0).journaled;
    head_ = (head_ + 1) % entries_.size();
    --size_;
    if (dropped_ != UINT32_MAX) ++dropped_;
    kept_all = false;
  }
  // Before the new reading overwrites a slot: a cut in between leaves the old one below head.
  if (released_journaled) save_head();
  ++next_seq_;
  OutboxEntry& e = slot(size_++);
  e = OutboxEntry{};
  e.seq = seq;
  e.reading = reading;
  if (!online) journal(e);
  return kept_all;
}

const OutboxEntry* Outbox::next() const {
  for (std::size_t i = 0; i < size_; ++i) {
    const OutboxEntry& e = at(i);
    if (!e.in_flight && !e.acked) return &e;
  }
  return nullptr;
}

bool Outbox::sent(std::uint32_t seq, std::uint16_t packet_id) {
  OutboxEntry* e = find_seq(seq);
  if (e == nullptr || packet_id == 0) return false;
  e->packet_id = packet_id;
  e->in_flight = true;
  return true;
}

bool Outbox::acked(std::uint16_t packet_id) {
  if (packet_id == 0) return false;
  bool found = false;
  for (std::size_t i = 0; i < size_ && !found; ++i) {
    OutboxEntry& e = slot(i);
    if (e.in_flight && e.packet_id == packet_id) {
      e.in_flight = false;
      e.acked = true;
      found = true;
    }
  }
  // Release the acknowledged front; one acknowledged behind a waiting one stays until then.
  bool released_journaled = false;
  while (size_ > 0 && slot(0).acked) {
    released_journaled |= slot(0).journaled;
    head_ = (head_ + 1) % entries_.size();
    --size_;
  }
  if (released_journaled) save_head();
  return found;
}

void Outbox::disconnected() {
  for (std::size_t i = 0; i < size_; ++i) {
    OutboxEntry& e = slot(i);
    e.in_flight = false;
    if (!e.acked && !e.journaled) journal(e);
  }
}

std::size_t Outbox::in_flight() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < size_; ++i) n += at(i).in_flight ? 1 : 0;
  return n;
}

OutboxEntry* Outbox::find_seq(std::uint32_t seq) {
  for (std::size_t i = 0; i < size_; ++i) {
    if (slot(i).seq == seq) return &slot(i);
  }
  return nullptr;
}

void Outbox::journal(OutboxEntry& entry) {
  entry.journaled = journal_.append({entry.seq, entry.reading});
  if (!entry.journaled && storage_errors_ != UINT32_MAX) ++storage_errors_;
}

void Outbox::save_head() {
  if (!journal_.save(size_ > 0 ? slot(0).seq : next_seq_, dropped_) && storage_errors_ != UINT32_MAX) ++storage_errors_;
}

}  // namespace plantwatch
