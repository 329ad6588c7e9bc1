// The flash record format and recovery, on a real file (file_storage.h).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "file_storage.h"
#include "plantwatch/journal.h"

using plantwatch::Journal;
using plantwatch::JournalHeader;
using plantwatch::JournalRecord;
using plantwatch::Recovery;
using plantwatch::test::FileStorage;
using plantwatch::test::TempPath;

namespace {

JournalRecord record(std::uint32_t seq) {
  JournalRecord r;
  r.seq = seq;
  r.reading.unix_time = 1767254400 + seq;
  r.reading.values[0] = {45.25f + static_cast<float>(seq), true};
  r.reading.values[1] = {1.5f, true};
  r.reading.values[2] = {12.1f, false};
  r.reading.values[3] = {-3.75f, true};
  return r;
}

std::vector<std::uint32_t> seqs(const std::vector<JournalRecord>& records) {
  std::vector<std::uint32_t> out;
  for (const auto& r : records) out.push_back(r.seq);
  return out;
}

}  // namespace

TEST(Crc32, IsTheIeeeOne) {
  const std::uint8_t check[] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
  EXPECT_EQ(plantwatch::crc32(check, sizeof check), 0xCBF43926u);
}

TEST(JournalRecord, RoundTripsEveryFieldBitForBit) {
  JournalRecord r = record(7);
  r.reading.unix_time = -1;  // a signed time survives
  r.reading.values[1] = {std::numeric_limits<float>::quiet_NaN(), true};
  const auto bytes = plantwatch::encode_record(r);
  JournalRecord back;
  ASSERT_TRUE(plantwatch::decode_record(bytes.data(), back));
  EXPECT_EQ(back.seq, 7u);
  EXPECT_EQ(back.reading.unix_time, -1);
  EXPECT_EQ(back.reading.values[0].value, r.reading.values[0].value);
  EXPECT_TRUE(std::isnan(back.reading.values[1].value));
  EXPECT_FALSE(back.reading.values[2].ok);
  EXPECT_EQ(back.reading.values[3].value, -3.75f);
  EXPECT_TRUE(back.reading.values[3].ok);
}

TEST(JournalRecord, LayoutIsLittleEndianAndVersioned) {
  const auto bytes = plantwatch::encode_record(record(0x01020304));
  EXPECT_EQ(bytes[0], 1);     // format version
  EXPECT_EQ(bytes[1], 0x0B);  // sensors 0, 1 and 3 read
  EXPECT_EQ(bytes[4], 0x04);  // seq, low byte first
  EXPECT_EQ(bytes[7], 0x01);
}

TEST(JournalRecord, AnyFlippedBitOrAnotherVersionIsRefused) {
  const auto good = plantwatch::encode_record(record(3));
  JournalRecord out;
  for (std::size_t i = 0; i < good.size(); ++i) {
    auto bad = good;
    bad[i] ^= 0x01;
    EXPECT_FALSE(plantwatch::decode_record(bad.data(), out)) << "byte " << i;
  }
  std::array<std::uint8_t, plantwatch::kRecordSize> erased;
  erased.fill(0xFF);  // erased flash
  EXPECT_FALSE(plantwatch::decode_record(erased.data(), out));
  erased.fill(0x00);
  EXPECT_FALSE(plantwatch::decode_record(erased.data(), out));
}

TEST(Journal, ANewFileIsFreshAndEmpty) {
  TempPath path("fresh");
  FileStorage storage(path.str());
  Journal journal(storage, 8);
  std::vector<JournalRecord> live;
  JournalHeader header;
  EXPECT_EQ(journal.recover(live, header), Recovery::Fresh);
  EXPECT_TRUE(live.empty());
  EXPECT_EQ(header.head, 0u);
  EXPECT_EQ(header.dropped, 0u);
}

TEST(Journal, LiveReadingsComeBackOldestFirstAfterAReboot) {
  TempPath path("reboot");
  {
    FileStorage storage(path.str());
    Journal journal(storage, 4);
    for (std::uint32_t s = 0; s < 6; ++s) ASSERT_TRUE(journal.append(record(s)));  // 4, 5 overwrite slots 0, 1
    ASSERT_TRUE(journal.save(3, 2));
  }
  FileStorage storage(path.str());
  Journal journal(storage, 4);
  std::vector<JournalRecord> live;
  JournalHeader header;
  ASSERT_EQ(journal.recover(live, header), Recovery::Recovered);
  EXPECT_EQ(seqs(live), (std::vector<std::uint32_t>{3, 4, 5}));  // 2 is below head, 4 sits in slot 0
  EXPECT_EQ(header.head, 3u);
  EXPECT_EQ(header.dropped, 2u);
  EXPECT_EQ(live[1].reading.unix_time, 1767254404);  // the time it was taken, not the time it was read back
}

TEST(Journal, ATornRecordWriteLosesThatReadingOnly) {
  TempPath path("torn-record");
  for (std::size_t cut : {std::size_t{0}, std::size_t{5}, std::size_t{20}, plantwatch::kRecordSize - 1}) {
    std::filesystem::remove(path.str());
    {
      FileStorage storage(path.str());
      Journal journal(storage, 8);
      ASSERT_TRUE(journal.save(0, 0));
      for (std::uint32_t s = 0; s < 3; ++s) ASSERT_TRUE(journal.append(record(s)));
      ASSERT_TRUE(journal.append(record(3)));
      // Slot 3 is rewritten with a later reading and the power fails mid-write.
      storage.cut_after(cut);
      ASSERT_FALSE(journal.append(record(11)));
    }
    FileStorage storage(path.str());
    Journal journal(storage, 8);
    std::vector<JournalRecord> live;
    JournalHeader header;
    ASSERT_EQ(journal.recover(live, header), Recovery::Recovered);
    // seq 3's slot held 3 before the cut: torn at 0 bytes it is still intact, else gone.
    const std::vector<std::uint32_t> want =
        cut == 0 ? std::vector<std::uint32_t>{0, 1, 2, 3} : std::vector<std::uint32_t>{0, 1, 2};
    EXPECT_EQ(seqs(live), want) << "cut after " << cut << " bytes";
  }
}

TEST(Journal, ATornHeaderWriteFallsBackToThePreviousCopy) {
  TempPath path("torn-header");
  {
    FileStorage storage(path.str());
    Journal journal(storage, 8);
    for (std::uint32_t s = 0; s < 5; ++s) ASSERT_TRUE(journal.append(record(s)));
    ASSERT_TRUE(journal.save(1, 0));
    ASSERT_TRUE(journal.save(2, 0));
    storage.cut_after(10);
    ASSERT_FALSE(journal.save(4, 0));  // would release 2 and 3; torn, so they are resent
  }
  FileStorage storage(path.str());
  Journal journal(storage, 8);
  std::vector<JournalRecord> live;
  JournalHeader header;
  ASSERT_EQ(journal.recover(live, header), Recovery::Recovered);
  EXPECT_EQ(header.head, 2u);
  EXPECT_EQ(seqs(live), (std::vector<std::uint32_t>{2, 3, 4}));
}

TEST(Journal, AFlippedBitOnFlashSkipsOneRecord) {
  TempPath path("bitrot");
  {
    FileStorage storage(path.str());
    Journal journal(storage, 4);
    ASSERT_TRUE(journal.save(0, 0));
    for (std::uint32_t s = 0; s < 4; ++s) ASSERT_TRUE(journal.append(record(s)));
  }
  plantwatch::test::flip_bit(path.str(), 48 + 2 * 36 + 10);  // inside seq 2's timestamp
  FileStorage storage(path.str());
  Journal journal(storage, 4);
  std::vector<JournalRecord> live;
  JournalHeader header;
  journal.recover(live, header);
  EXPECT_EQ(seqs(live), (std::vector<std::uint32_t>{0, 1, 3}));
}

TEST(Journal, AnotherSlotCountIsDiscardedAndNeverReplayedLater) {
  TempPath path("resized");
  {
    FileStorage storage(path.str());
    Journal journal(storage, 8);
    ASSERT_TRUE(journal.save(0, 5));
    for (std::uint32_t s = 0; s < 8; ++s) ASSERT_TRUE(journal.append(record(s)));
  }
  {
    FileStorage storage(path.str());
    Journal journal(storage, 4);  // a firmware built with a smaller buffer
    std::vector<JournalRecord> live;
    JournalHeader header;
    EXPECT_EQ(journal.recover(live, header), Recovery::Discarded);
    EXPECT_TRUE(live.empty());
    EXPECT_EQ(header.head, 4u);  // above every sequence number in its 4 slots (0..3)
  }
  FileStorage storage(path.str());
  Journal journal(storage, 4);
  std::vector<JournalRecord> live;
  JournalHeader header;
  EXPECT_EQ(journal.recover(live, header), Recovery::Recovered);
  EXPECT_TRUE(live.empty()) << "old readings at other offsets came back: " << live.size();
}

TEST(Journal, AnotherFormatVersionIsDiscarded) {
  TempPath path("version");
  {
    FileStorage storage(path.str());
    JournalHeader h;
    h.version = 2;
    h.slots = 4;
    h.generation = 1;
    const auto bytes = plantwatch::encode_header(h);
    ASSERT_TRUE(storage.write(24, bytes.data(), bytes.size()));
  }
  FileStorage storage(path.str());
  Journal journal(storage, 4);
  std::vector<JournalRecord> live;
  JournalHeader header;
  EXPECT_EQ(journal.recover(live, header), Recovery::Discarded);
}
