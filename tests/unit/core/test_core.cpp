// Core helpers: atomic writes leave either the old or the new file, never a partial one.
#include <fstream>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/progress.h"
#include "test_util.h"

using namespace llmft;

TEST(Io, AtomicWriteReplacesAndReadsBack) {
  test::TempDir dir;
  const auto p = dir / "sub" / "out.json";
  write_file_atomic(p, std::string_view("first"));
  EXPECT_EQ(read_file(p), "first");
  write_file_atomic(p, std::string_view("second, longer"));
  EXPECT_EQ(read_file(p), "second, longer");
  // No temporary files left behind.
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(p.parent_path())) n += e.is_regular_file();
  EXPECT_EQ(n, 1);
}

TEST(Io, FailedWriterKeepsOldFile) {
  test::TempDir dir;
  const auto p = dir / "out.txt";
  write_file_atomic(p, std::string_view("keep me"));
  EXPECT_THROW(write_file_atomic(p,
                                 [](std::ostream& o) {
                                   o << "partial";
                                   throw Error("writer failed");
                                 }),
               Error);
  EXPECT_EQ(read_file(p), "keep me");
}

TEST(Io, MissingFileNamesThePath) {
  try {
    read_file("/nonexistent/file.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/file.json"), std::string::npos);
  }
}

TEST(Progress, HumanUnits) {
  EXPECT_EQ(human_count(1500, "B"), "1.5 kB");
  EXPECT_EQ(human_count(12, "tok"), "12 tok");
  EXPECT_EQ(human_count(0.25, "step"), "0.25 step");
  EXPECT_EQ(human_duration(3723), "1:02:03");
  EXPECT_EQ(human_duration(65), "01:05");
}
