// ShardsFile, the router's --shards_file, decides a change by the file's contents: a rewrite that
// the file system stamps with the same modification time as the version before it (its clock
// ticks every few ms) is read all the same, as is the rest of a non-atomic rewrite polled
// halfway. The tests force equal times with futimens, so the "same tick" is not left to luck; a
// list that does not parse, a file that cannot be read and one over the size limit are logged
// once and leave the previous list standing.
#include "router_service/shards_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;

constexpr int kExperts = 8;
// Every version gets this modification time: what two writes within one clock tick get.
constexpr timespec kTick = {1700000000, 0};

class ShardsFileTest : public ::testing::Test {
 protected:
  ShardsFileTest()
      : path_(testing::MakeTempDir("shards-file") + "/shards.txt"),
        file_(path_, kExperts, false, [this](const std::string& line) { log_.push_back(line); }) {}

  // Rewrites the file in place (same inode, truncated then written, as `echo ... > file` does)
  // and stamps it kTick.
  void Write(const std::string& text) {
    const int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << path_;
    ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    const timespec times[2] = {kTick, kTick};
    ASSERT_EQ(futimens(fd, times), 0);
    ASSERT_EQ(close(fd), 0);
  }

  // The targets of Changed()'s list, or nullopt when it returned none.
  std::optional<std::vector<std::string>> Changed() {
    std::optional<std::vector<ShardTarget>> targets = file_.Changed();
    if (!targets.has_value()) return std::nullopt;
    std::vector<std::string> names;
    for (const ShardTarget& target : *targets) names.push_back(target.target);
    return names;
  }

  const std::string path_;
  std::vector<std::string> log_;
  ShardsFile file_;
};

TEST_F(ShardsFileTest, TheFirstCallReturnsTheListAndUnchangedContentsNothing) {
  Write("a:1\nb:2\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1", "b:2")));
  EXPECT_EQ(Changed(), std::nullopt);
  const timespec later[2] = {{kTick.tv_sec + 60, 0}, {kTick.tv_sec + 60, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, path_.c_str(), later, 0), 0);  // touched, not changed
  Write("a:1\nb:2\n");                                         // rewritten, the same
  EXPECT_EQ(Changed(), std::nullopt);
  EXPECT_THAT(log_, ElementsAre("moe_router: " + path_ + " changed: 2 targets"));
}

TEST_F(ShardsFileTest, ARewriteWithTheSameTimestampAndSizeIsRead) {
  Write("a:1\nb:2\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1", "b:2")));
  Write("a:1\nb:3\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1", "b:3")));
}

TEST_F(ShardsFileTest, AListPolledHalfWrittenIsFollowedByTheWholeOneWithTheSameTimestamp) {
  Write("a:1\nb:2\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1", "b:2")));
  Write("");  // truncated, nothing written yet: does not parse
  EXPECT_EQ(Changed(), std::nullopt);
  Write("a:1\nb:2\nc");  // a prefix that parses: applied, until the rest lands
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1", "b:2", "c")));
  Write("a:1\nb:2\nc:3\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1", "b:2", "c:3")));
}

TEST_F(ShardsFileTest, AListThatDoesNotParseIsLoggedOnceAndThePreviousOneStands) {
  Write("a:1\nb:2\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1", "b:2")));
  log_.clear();
  Write("a:1\na:1\n");
  for (int poll = 0; poll < 3; ++poll) EXPECT_EQ(Changed(), std::nullopt);
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_THAT(log_[0], HasSubstr(path_ + ": "));
  EXPECT_THAT(log_[0], HasSubstr("a:1"));
  EXPECT_THAT(log_[0], HasSubstr("keeping the previous shard list"));
  Write("a:1\nc:3\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1", "c:3")));
}

TEST_F(ShardsFileTest, AFileThatCannotBeReadIsLoggedOnceAndThePreviousListStands) {
  Write("a:1\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1")));
  log_.clear();
  ASSERT_EQ(std::remove(path_.c_str()), 0);
  for (int poll = 0; poll < 3; ++poll) EXPECT_EQ(Changed(), std::nullopt);
  EXPECT_THAT(log_, ElementsAre("moe_router: cannot read " + path_ +
                                ": No such file or directory; keeping the previous shard list"));
  Write("a:1\n");  // back as it was: the list in force
  EXPECT_EQ(Changed(), std::nullopt);
  Write("b:2\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("b:2")));
}

TEST_F(ShardsFileTest, AFileOverTheLimitIsRefusedUnreadLoggedOnceAndThePreviousListStands) {
  Write("a:1\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1")));
  log_.clear();
  // 4 GiB, sparse: reading it would take seconds and the memory; its size alone refuses it.
  ASSERT_EQ(truncate(path_.c_str(), int64_t{4} << 30), 0);
  for (int poll = 0; poll < 3; ++poll) EXPECT_EQ(Changed(), std::nullopt);
  EXPECT_THAT(log_, ElementsAre(absl::StrCat(
                        "moe_router: ", path_, " is 4294967296 bytes, more than the limit of ",
                        ShardsFile::kMaxBytes, " bytes; keeping the previous shard list")));
  Write("b:2\n");
  EXPECT_THAT(Changed(), Optional(ElementsAre("b:2")));
}

TEST_F(ShardsFileTest, AListOfExactlyTheLimitIsReadAndOneByteMoreIsNot) {
  std::string text = "a:1\n";
  text.resize(ShardsFile::kMaxBytes, ' ');  // blanks between entries are skipped
  Write(text);
  EXPECT_THAT(Changed(), Optional(ElementsAre("a:1")));
  Write(text + "\n");
  EXPECT_EQ(Changed(), std::nullopt);
  EXPECT_THAT(log_.back(), HasSubstr(absl::StrCat(ShardsFile::kMaxBytes + 1, " bytes, more than")));
}

TEST_F(ShardsFileTest, ReadJoinsTheLinesWithCommas) {
  Write("a:1\nb:2\r\n");
  absl::StatusOr<std::string> list = ShardsFile::Read(path_);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(*list, "a:1,b:2,,");
}

TEST_F(ShardsFileTest, ReadAtStartupRefusesAFileOverTheLimitNamingItsSizeAndTheLimit) {
  Write("a:1\n");
  ASSERT_EQ(truncate(path_.c_str(), ShardsFile::kMaxBytes + 1), 0) << path_;
  absl::StatusOr<std::string> list = ShardsFile::Read(path_);
  EXPECT_EQ(list.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(list.status().message(),
            absl::StrCat(path_, " is ", ShardsFile::kMaxBytes + 1,
                         " bytes, more than the limit of ", ShardsFile::kMaxBytes, " bytes"));
}

TEST(ShardsFileReadTest, StopsAtTheLimitOfAFileWhoseSizeIsNotKnownBeforehand) {
  absl::StatusOr<std::string> list = ShardsFile::Read("/dev/zero");  // endless, "0 bytes"
  EXPECT_EQ(list.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(list.status().message(), absl::StrCat("/dev/zero holds more than the limit of ",
                                                  ShardsFile::kMaxBytes, " bytes"));
}

}  // namespace
}  // namespace moe
