// The node's outbox: every reading waits here until the broker has acknowledged it.
//
// QoS 1 semantics: a reading is marked in flight with the packet id it was published under
// and leaves the outbox only when a PUBACK with that id arrives; a reading whose PUBACK did
// not come before the connection dropped is sent again after the reconnect, in order, with
// the same packet id and the DUP flag. At least once: the broker may see a reading twice
// (same payload, same timestamp), never zero times while it is in the outbox.
//
// Bounded: `capacity` readings (the journal's slot count). When full, the oldest reading is
// dropped, whatever its state (a late PUBACK for it is then ignored), and counted in
// dropped(), which the journal keeps across reboots.
//
// Flash: a reading taken while the node is offline is written to the journal at once; on
// a disconnect, every reading not yet acknowledged is written too. So flash is written only
// around outages, not once a second while the broker answers, and after a reboot restore()
// brings back everything that was waiting, with its original timestamp. A power cut while
// connected loses only the readings taken since the last disconnect that were not yet
// acknowledged (normally the one in flight).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "plantwatch/journal.h"
#include "plantwatch/payload.h"

namespace plantwatch {

struct OutboxEntry {
  std::uint32_t seq = 0;
  Reading reading;
  std::uint16_t packet_id = 0;  // 0: never published
  bool in_flight = false;       // published on the current connection, PUBACK pending
  bool acked = false;           // PUBACK came while an older reading still waits
  bool journaled = false;       // in a journal slot

  // Published before on an earlier connection: resend with this packet id and the DUP flag.
  bool dup() const { return packet_id != 0 && !in_flight; }
};

class Outbox {
 public:
  // The capacity is the journal's slot count; the storage is allocated here, once.
  explicit Outbox(Journal& journal);

  // Loads what the journal kept from before the reboot; call once, before the first push().
  Recovery restore();

  // Queues a reading; `online` says whether the node is connected to the broker now (when
  // not, the reading goes to flash at once). Returns false when the oldest had to be dropped.
  bool push(const Reading& reading, bool online);

  // The oldest reading to publish next (never published, or to resend after a reconnect);
  // nullptr when every waiting reading is in flight or the outbox is empty.
  const OutboxEntry* next() const;

  // The reading `seq` was published with `packet_id` (1..65535). False when `seq` is not
  // waiting (dropped meanwhile) or the id is 0.
  bool sent(std::uint32_t seq, std::uint16_t packet_id);

  // A PUBACK arrived: releases the in-flight reading with that id, and with it every
  // acknowledged reading at the front. False when no reading is in flight under that id
  // (a PUBACK for a reading dropped meanwhile, or a stray one).
  bool acked(std::uint16_t packet_id);

  // The connection is gone: in-flight readings will be resent (DUP), and every reading not
  // yet acknowledged is written to flash so that it survives a reboot.
  void disconnected();

  std::size_t size() const { return size_; }
  std::size_t capacity() const { return entries_.size(); }
  std::size_t in_flight() const;
  std::uint32_t dropped() const { return dropped_; }
  // Journal writes the flash refused (the reading then waits in RAM only).
  std::uint32_t storage_errors() const { return storage_errors_; }

  // The waiting readings oldest first (i < size()).
  const OutboxEntry& at(std::size_t i) const { return entries_[(head_ + i) % entries_.size()]; }

 private:
  OutboxEntry& slot(std::size_t i) { return entries_[(head_ + i) % entries_.size()]; }
  OutboxEntry* find_seq(std::uint32_t seq);
  void journal(OutboxEntry& entry);
  void save_head();

  Journal& journal_;
  std::vector<OutboxEntry> entries_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
  std::uint32_t next_seq_ = 0;
  std::uint32_t dropped_ = 0;
  std::uint32_t storage_errors_ = 0;
};

}  // namespace plantwatch
