// The outbox: QoS 1 release on PUBACK, resend after reconnect, and the flash journal
// underneath it across reboots (a real file: file_storage.h).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "file_storage.h"
#include "plantwatch/outbox.h"

using plantwatch::Journal;
using plantwatch::Outbox;
using plantwatch::OutboxEntry;
using plantwatch::Reading;
using plantwatch::Recovery;
using plantwatch::test::FileStorage;
using plantwatch::test::TempPath;

namespace {

Reading at(std::int64_t t) {
  Reading r;
  r.unix_time = t;
  r[plantwatch::Field::TemperatureC] = {20.0f, true};
  return r;
}

// A node: the flash file, the journal and the outbox on it. A new Node on the same path
// is the board after a reboot.
struct Node {
  explicit Node(const std::string& path, std::uint16_t slots = 8)
      : storage(path), journal(storage, slots), outbox(journal), recovery(outbox.restore()) {}
  FileStorage storage;
  Journal journal;
  Outbox outbox;
  Recovery recovery;
};

// What a broker that acknowledges everything would see, publishing until next() is empty;
// packet ids from `next_id`, the way the MQTT client hands them out.
struct Wire {
  std::vector<std::int64_t> times;
  std::vector<bool> dups;
  std::uint16_t next_id = 1;

  // Publishes up to `n` readings; with `ack` false the PUBACKs never come.
  void publish(Outbox& outbox, std::size_t n, bool ack = true) {
    for (std::size_t i = 0; i < n; ++i) {
      const OutboxEntry* e = outbox.next();
      if (e == nullptr) return;
      const std::uint16_t id = e->dup() ? e->packet_id : next_id++;
      times.push_back(e->reading.unix_time);
      dups.push_back(e->dup());
      ASSERT_TRUE(outbox.sent(e->seq, id));
      if (ack) {
        ASSERT_TRUE(outbox.acked(id));
      }
    }
  }
};

}  // namespace

TEST(Outbox, AReadingLeavesOnlyWhenItsPubackArrives) {
  TempPath path("puback");
  Node node(path.str());
  node.outbox.push(at(100), true);
  node.outbox.push(at(101), true);
  const OutboxEntry* e = node.outbox.next();
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->reading.unix_time, 100);
  EXPECT_FALSE(e->dup());
  ASSERT_TRUE(node.outbox.sent(e->seq, 7));
  EXPECT_EQ(node.outbox.size(), 2u);  // published is not released
  EXPECT_EQ(node.outbox.in_flight(), 1u);
  EXPECT_EQ(node.outbox.next()->reading.unix_time, 101);  // the next one may go meanwhile

  EXPECT_FALSE(node.outbox.acked(8));  // someone else's PUBACK releases nothing
  EXPECT_FALSE(node.outbox.acked(0));
  EXPECT_EQ(node.outbox.size(), 2u);
  EXPECT_TRUE(node.outbox.acked(7));
  EXPECT_EQ(node.outbox.size(), 1u);
  EXPECT_EQ(node.outbox.at(0).reading.unix_time, 101);
  EXPECT_FALSE(node.outbox.acked(7));  // a second PUBACK for the same id is stray
}

TEST(Outbox, AnOutOfOrderPubackWaitsForTheOlderOne) {
  TempPath path("order");
  Node node(path.str());
  for (int t = 0; t < 3; ++t) node.outbox.push(at(t), true);
  node.outbox.sent(node.outbox.next()->seq, 1);
  node.outbox.sent(node.outbox.next()->seq, 2);
  EXPECT_TRUE(node.outbox.acked(2));
  EXPECT_EQ(node.outbox.size(), 3u);  // 1 still waits in front of it
  EXPECT_EQ(node.outbox.next()->reading.unix_time, 2);  // the acknowledged one is not sent again
  EXPECT_TRUE(node.outbox.acked(1));
  EXPECT_EQ(node.outbox.size(), 1u);
}

TEST(Outbox, UnacknowledgedReadingsAreResentInOrderWithDupAfterAReconnect) {
  TempPath path("dup");
  Node node(path.str());
  for (int t = 0; t < 4; ++t) node.outbox.push(at(t), true);
  Wire wire;
  wire.publish(node.outbox, 1);          // 0 acknowledged
  wire.publish(node.outbox, 2, false);   // 1 and 2 sent, PUBACKs lost with the connection
  node.outbox.disconnected();
  node.outbox.push(at(4), false);
  ASSERT_EQ(node.outbox.in_flight(), 0u);
  const std::uint16_t first_dup_id = node.outbox.next()->packet_id;
  EXPECT_EQ(first_dup_id, 2);  // the id it went out with the first time
  wire.publish(node.outbox, 10);
  EXPECT_EQ(wire.times, (std::vector<std::int64_t>{0, 1, 2, 1, 2, 3, 4}));
  EXPECT_EQ(wire.dups, (std::vector<bool>{false, false, false, true, true, false, false}));
  EXPECT_EQ(node.outbox.size(), 0u);
}

TEST(Outbox, WhileConnectedAndAcknowledgedNothingIsWrittenToFlash) {
  TempPath path("no-wear");
  Node node(path.str());
  const std::size_t writes_at_boot = node.storage.writes();  // a new file's header
  Wire wire;
  for (int t = 0; t < 50; ++t) {
    node.outbox.push(at(t), true);
    wire.publish(node.outbox, 1);
  }
  EXPECT_EQ(wire.times.size(), 50u);
  EXPECT_EQ(node.storage.writes(), writes_at_boot);
}

TEST(Outbox, AnOutageSurvivesARebootAndIsReplayedWithTheOriginalTimestamps) {
  TempPath path("reboot");
  {
    Node node(path.str());
    EXPECT_EQ(node.recovery, Recovery::Fresh);
    node.outbox.push(at(1000), true);
    Wire wire;
    wire.publish(node.outbox, 1);
    node.outbox.push(at(1001), true);  // taken while connected, then the broker goes away
    node.outbox.disconnected();
    for (int t = 1002; t < 1006; ++t) node.outbox.push(at(t), false);
  }  // power off
  Node node(path.str());
  EXPECT_EQ(node.recovery, Recovery::Recovered);
  ASSERT_EQ(node.outbox.size(), 5u);
  node.outbox.push(at(2000), false);  // the first reading after the reboot comes after them
  Wire wire;
  wire.publish(node.outbox, 3);
  EXPECT_EQ(wire.times, (std::vector<std::int64_t>{1001, 1002, 1003}));
  EXPECT_EQ(wire.dups, (std::vector<bool>{false, false, false}));
  {
    Node again(path.str());  // rebooted mid-replay: only what was not acknowledged comes back
    Wire rest;
    rest.publish(again.outbox, 10);
    EXPECT_EQ(rest.times, (std::vector<std::int64_t>{1004, 1005, 2000}));
  }
}

TEST(Outbox, ARebootMidPublishResendsTheUnacknowledgedReading) {
  TempPath path("mid-publish");
  {
    Node node(path.str());
    node.outbox.push(at(5), false);
    Wire wire;
    wire.publish(node.outbox, 1, false);  // sent, the board resets before the PUBACK
  }
  Node node(path.str());
  Wire wire;
  wire.publish(node.outbox, 10);
  EXPECT_EQ(wire.times, (std::vector<std::int64_t>{5}));
}

TEST(Outbox, AFullBufferDropsTheOldestAndTheCountSurvivesAReboot) {
  TempPath path("full");
  {
    Node node(path.str(), 4);
    for (int t = 0; t < 10; ++t) EXPECT_EQ(node.outbox.push(at(t), false), t < 4) << t;
    EXPECT_EQ(node.outbox.dropped(), 6u);
    EXPECT_EQ(node.outbox.size(), 4u);
  }
  Node node(path.str(), 4);
  EXPECT_EQ(node.outbox.dropped(), 6u);
  Wire wire;
  wire.publish(node.outbox, 10);
  EXPECT_EQ(wire.times, (std::vector<std::int64_t>{6, 7, 8, 9}));  // the newest, in order
}

TEST(Outbox, ALatePubackForADroppedReadingReleasesNothing) {
  TempPath path("late");
  Node node(path.str(), 2);
  node.outbox.push(at(0), true);
  node.outbox.sent(node.outbox.next()->seq, 9);
  node.outbox.push(at(1), true);
  node.outbox.push(at(2), true);  // drops 0, in flight
  EXPECT_FALSE(node.outbox.acked(9));
  EXPECT_EQ(node.outbox.size(), 2u);
  EXPECT_EQ(node.outbox.next()->reading.unix_time, 1);
}

TEST(Outbox, APowerCutWhileWritingLosesOnlyTheReadingBeingWritten) {
  TempPath path("cut");
  {
    Node node(path.str());
    for (int t = 0; t < 3; ++t) node.outbox.push(at(t), false);
    node.storage.cut_after(9);
    node.outbox.push(at(3), false);
    EXPECT_EQ(node.outbox.storage_errors(), 1u);
  }
  Node node(path.str());
  Wire wire;
  wire.publish(node.outbox, 10);
  EXPECT_EQ(wire.times, (std::vector<std::int64_t>{0, 1, 2}));
}

TEST(Outbox, AfterAGapNewReadingsNeverOverwriteAWaitingOne) {
  // Slots 4: 0 1 2 3 on flash, 1 rotted. After the reboot 0, 2, 3 wait; reading 4 belongs
  // in slot 0, so 0 is dropped and counted, not overwritten while it still waits.
  TempPath path("gap");
  {
    Node node(path.str(), 4);
    for (int t = 0; t < 4; ++t) node.outbox.push(at(t), false);
  }
  plantwatch::test::flip_bit(path.str(), 48 + 1 * 36 + 9);
  Node node(path.str(), 4);
  ASSERT_EQ(node.outbox.size(), 3u);
  EXPECT_FALSE(node.outbox.push(at(4), false));
  EXPECT_EQ(node.outbox.dropped(), 1u);
  Wire wire;
  wire.publish(node.outbox, 10);
  EXPECT_EQ(wire.times, (std::vector<std::int64_t>{2, 3, 4}));
}
