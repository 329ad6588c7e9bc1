#include "plantwatch/journal.h"

#include <algorithm>
#include <cstring>

namespace plantwatch {
namespace {

constexpr std::uint8_t kMagic[4] = {'P', 'W', 'O', 'B'};
constexpr std::uint32_t kSlotsOffset = 2 * kHeaderSize;

void put16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
}
void put32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint16_t get16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | p[1] << 8); }
std::uint32_t get32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
std::uint64_t get64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// Generations wrap after 2^32 saves; the newer copy is the one at most 2^31 ahead.
bool newer(std::uint32_t a, std::uint32_t b) { return static_cast<std::int32_t>(a - b) > 0; }

std::uint32_t slot_offset(std::uint32_t slot) { return kSlotsOffset + slot * static_cast<std::uint32_t>(kRecordSize); }

}  // namespace

std::uint32_t crc32(const std::uint8_t* data, std::size_t size) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < size; ++i) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::array<std::uint8_t, kRecordSize> encode_record(const JournalRecord& record) {
  std::array<std::uint8_t, kRecordSize> out{};
  std::uint8_t ok_bits = 0;
  for (std::size_t i = 0; i < kFieldCount; ++i) {
    if (record.reading.values[i].ok) ok_bits = static_cast<std::uint8_t>(ok_bits | 1u << i);
    std::uint32_t bits;
    std::memcpy(&bits, &record.reading.values[i].value, sizeof bits);
    put32(&out[16 + 4 * i], bits);
  }
  out[0] = static_cast<std::uint8_t>(kJournalVersion);
  out[1] = ok_bits;
  put32(&out[4], record.seq);
  put64(&out[8], static_cast<std::uint64_t>(record.reading.unix_time));
  put32(&out[32], crc32(out.data(), 32));
  return out;
}

bool decode_record(const std::uint8_t* bytes, JournalRecord& out) {
  if (bytes[0] != kJournalVersion || get32(&bytes[32]) != crc32(bytes, 32)) return false;
  out.seq = get32(&bytes[4]);
  out.reading.unix_time = static_cast<std::int64_t>(get64(&bytes[8]));
  for (std::size_t i = 0; i < kFieldCount; ++i) {
    const std::uint32_t bits = get32(&bytes[16 + 4 * i]);
    std::memcpy(&out.reading.values[i].value, &bits, sizeof bits);
    out.reading.values[i].ok = (bytes[1] >> i & 1u) != 0;
  }
  return true;
}

std::array<std::uint8_t, kHeaderSize> encode_header(const JournalHeader& header) {
  std::array<std::uint8_t, kHeaderSize> out{};
  std::memcpy(&out[0], kMagic, 4);
  put16(&out[4], header.version);
  put16(&out[6], header.slots);
  put32(&out[8], header.head);
  put32(&out[12], header.dropped);
  put32(&out[16], header.generation);
  put32(&out[20], crc32(out.data(), 20));
  return out;
}

bool decode_header(const std::uint8_t* bytes, JournalHeader& out) {
  if (std::memcmp(bytes, kMagic, 4) != 0 || get32(&bytes[20]) != crc32(bytes, 20)) return false;
  out.version = get16(&bytes[4]);
  out.slots = get16(&bytes[6]);
  out.head = get32(&bytes[8]);
  out.dropped = get32(&bytes[12]);
  out.generation = get32(&bytes[16]);
  return true;
}

const char* recovery_name(Recovery recovery) {
  switch (recovery) {
    case Recovery::Fresh: return "fresh";
    case Recovery::Recovered: return "recovered";
    case Recovery::Discarded: return "discarded";
  }
  return "?";
}

Recovery Journal::recover(std::vector<JournalRecord>& live, JournalHeader& header) {
  live.clear();
  header = JournalHeader{};
  bool found = false, other_format = false;
  for (std::uint32_t copy = 0; copy < 2; ++copy) {
    std::array<std::uint8_t, kHeaderSize> bytes;
    JournalHeader h;
    if (!storage_.read(copy * static_cast<std::uint32_t>(kHeaderSize), bytes.data(), bytes.size()) ||
        !decode_header(bytes.data(), h)) {
      continue;
    }
    if (!found || newer(h.generation, header.generation)) {
      header = h;
      other_format = h.version != kJournalVersion || h.slots != slots_;
      found = true;
    }
  }
  generation_ = header.generation;

  std::uint32_t max_seq = 0;
  bool any = false;
  for (std::uint32_t slot = 0; slot < slots_; ++slot) {
    std::array<std::uint8_t, kRecordSize> bytes;
    JournalRecord r;
    if (!storage_.read(slot_offset(slot), bytes.data(), bytes.size()) || !decode_record(bytes.data(), r)) continue;
    if (!any || r.seq > max_seq) max_seq = r.seq;
    any = true;
    // A reading outside its own slot belongs to a layout of another slot count.
    if (!other_format && r.seq % slots_ == slot && r.seq >= header.head) live.push_back(r);
  }
  if (other_format) {
    // Whatever lies in the slots is unreadable in this layout: start above every sequence
    // number in them, so none of it can ever look live.
    live.clear();
    header = JournalHeader{};
    header.head = any ? max_seq + 1 : 0;
    save(header.head, 0);
  }
  // A new file gets its header now, so the next boot tells "recovered" from "new".
  if (!found) save(header.head, header.dropped);
  header.slots = slots_;
  std::sort(live.begin(), live.end(), [](const JournalRecord& a, const JournalRecord& b) { return a.seq < b.seq; });
  if (!found) return Recovery::Fresh;
  return other_format ? Recovery::Discarded : Recovery::Recovered;
}

bool Journal::append(const JournalRecord& record) {
  const auto bytes = encode_record(record);
  return storage_.write(slot_offset(record.seq % slots_), bytes.data(), bytes.size());
}

bool Journal::save(std::uint32_t head, std::uint32_t dropped) {
  JournalHeader h;
  h.slots = slots_;
  h.head = head;
  h.dropped = dropped;
  h.generation = generation_ + 1;
  const auto bytes = encode_header(h);
  if (!storage_.write((h.generation % 2) * static_cast<std::uint32_t>(kHeaderSize), bytes.data(), bytes.size())) {
    return false;
  }
  generation_ = h.generation;
  return true;
}

}  // namespace plantwatch
