// The outage buffer on flash: readings that wait for the broker survive a reboot and are
// replayed with the timestamps they were taken at.
//
// Layout (version 1, every integer little-endian, floats as IEEE-754 bits), one file:
//
//   offset 0, 24        two header copies, written alternately (a torn header write leaves
//                       the other copy): magic "PWOB", u16 version, u16 slot count,
//                       u32 head, u32 dropped, u32 generation, u32 CRC-32 of the 20 bytes before
//   offset 48 + i*36    slot i of a ring of `slots` fixed-size records: u8 version,
//                       u8 ok-bits (bit f: sensor f read), u16 zero, u32 seq, i64 unix time,
//                       4 x f32 value, u32 CRC-32 of the 32 bytes before
//
// Reading `seq` always lives in slot seq % slots. The outbox holds at most `slots` readings
// with consecutive sequence numbers, so a live reading's slot is its own; writing a new one
// overwrites only a reading that was released or dropped. Every reading with seq >= head
// and a good CRC is live; released ones are below head. A write torn by a power cut fails
// its CRC and is skipped on recovery; nothing else is lost with it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "plantwatch/payload.h"

namespace plantwatch {

// What the journal is written to: one file (LittleFS on the board, a real file in the host
// tests). Offsets are from the start of the file.
class Storage {
 public:
  virtual ~Storage() = default;
  // Reads exactly `size` bytes at `offset`; false when they were never written or cannot be read.
  virtual bool read(std::uint32_t offset, std::uint8_t* data, std::size_t size) = 0;
  // Writes `size` bytes at `offset` (growing the file as needed) and makes them durable
  // before returning; false when they may not have reached the flash.
  virtual bool write(std::uint32_t offset, const std::uint8_t* data, std::size_t size) = 0;
};

constexpr std::uint16_t kJournalVersion = 1;
constexpr std::size_t kHeaderSize = 24;
constexpr std::size_t kRecordSize = 36;

// CRC-32 (IEEE 802.3, the zlib one): crc32("123456789") == 0xCBF43926.
std::uint32_t crc32(const std::uint8_t* data, std::size_t size);

struct JournalRecord {
  std::uint32_t seq = 0;
  Reading reading;
};

struct JournalHeader {
  std::uint16_t version = kJournalVersion;
  std::uint16_t slots = 0;
  std::uint32_t head = 0;     // every reading below this sequence number was released
  std::uint32_t dropped = 0;  // readings dropped oldest-first because the buffer was full, ever
  std::uint32_t generation = 0;
};

std::array<std::uint8_t, kRecordSize> encode_record(const JournalRecord& record);
// False for a blank, torn or corrupted slot, or one of another format version.
bool decode_record(const std::uint8_t* bytes, JournalRecord& out);

std::array<std::uint8_t, kHeaderSize> encode_header(const JournalHeader& header);
// False for a blank, torn or corrupted copy; a good copy of another version decodes (and
// says its version) so that recovery can tell "another format" from "nothing there".
bool decode_header(const std::uint8_t* bytes, JournalHeader& out);

// What recover() found.
enum class Recovery : std::uint8_t {
  Fresh,      // no header: a new file (or one whose both header copies were torn); one is written
  Recovered,  // a header of this format and size: the live readings were read back
  Discarded,  // a header of another version or slot count: its readings were not read, and
              // head now lies above every sequence number in the slots, so none ever looks live
};
const char* recovery_name(Recovery recovery);

class Journal {
 public:
  Journal(Storage& storage, std::uint16_t slots) : storage_(storage), slots_(slots == 0 ? 1 : slots) {}

  std::uint16_t slots() const { return slots_; }

  // Reads what the last run left: the live readings oldest first into `live`, and the
  // header's head and drop count into `header` (zeros when Fresh).
  Recovery recover(std::vector<JournalRecord>& live, JournalHeader& header);

  // Writes one reading into its slot; false when the flash refused it.
  bool append(const JournalRecord& record);

  // Records that every reading below `head` is released and the drop count; alternates
  // between the two header copies so a torn write leaves the previous one.
  bool save(std::uint32_t head, std::uint32_t dropped);

 private:
  Storage& storage_;
  std::uint16_t slots_;
  std::uint32_t generation_ = 0;
};

}  // namespace plantwatch
