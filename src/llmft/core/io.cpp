#include "llmft/core/io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "llmft/core/error.h"

namespace llmft {

namespace fs = std::filesystem;

MappedFile::MappedFile(const fs::path& path) {
  const std::string p = path.string();
  // O_NONBLOCK: opening a FIFO does not wait for a writer (and then fails the check below).
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    throw Error(fmt::format("{}: cannot open: {}", p, std::strerror(errno)), "check the path");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("{}: not a regular file", p));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) {
    ::close(fd);
    return;
  }
  void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw Error(fmt::format("{}: cannot map: {}", p, std::strerror(errno)));
  data_ = static_cast<const unsigned char*>(m);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
}

void MappedFile::advise_sequential() const {
  if (data_) ::madvise(const_cast<unsigned char*>(data_), size_, MADV_SEQUENTIAL);
}

void MappedFile::release(const unsigned char* p, size_t n) const {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

std::string read_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(fmt::format("{}: is a folder, expected a file", path.string()));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error(fmt::format("{}: cannot open: {}", path.string(), std::strerror(errno)),
                "check the path");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(fmt::format("{}: cannot read: {}", path.string(), std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {  // a pipe or /dev/stdin: read to its end
    std::string bytes;
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        throw Error(fmt::format("{}: read failed: {}", path.string(), std::strerror(err)));
      }
      if (n == 0) break;
      bytes.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return bytes;
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : 0;
      ::close(fd);
      throw Error(fmt::format("{}: read failed: {}", path.string(),
                              err ? std::strerror(err) : "the file shrank while being read"));
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return bytes;
}

namespace {
// Forces a file's (or a folder's entries') data to the disk, so that after a rename a power cut
// leaves either the old file or the complete new one. Best effort: a file system without fsync
// (some network mounts) still gets the rename.
void sync_path(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  [[maybe_unused]] const int rc = ::fsync(fd);
  ::close(fd);
}
}  // namespace

void write_file_atomic(const fs::path& path, const std::function<void(std::ostream&)>& writer) {
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) throw Error(fmt::format("{}: cannot create folder: {}", parent.string(), ec.message()));
  std::random_device rd;
  const fs::path tmp = parent / fmt::format(".{}.tmp{:08x}", path.filename().string(), rd());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      throw Error(fmt::format("{}: cannot write: {}", tmp.string(), std::strerror(errno)));
    }
    try {
      writer(out);
    } catch (...) {
      out.close();
      fs::remove(tmp, ec);
      throw;
    }
    out.flush();
    if (!out) {
      out.close();
      fs::remove(tmp, ec);
      throw Error(fmt::format("{}: write failed (disk full?)", path.string()));
    }
  }
  sync_path(tmp);
  fs::rename(tmp, path, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove(tmp, ec);
    throw Error(fmt::format("{}: cannot rename temporary file into place: {}", path.string(), why));
  }
  sync_path(parent);
}

void write_file_atomic(const fs::path& path, std::string_view bytes) {
  write_file_atomic(path, [&](std::ostream& out) {
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  });
}

void write_folder_atomic(const fs::path& dir, const std::function<void(const fs::path&)>& fill) {
  std::error_code ec;
  const bool fresh = !fs::exists(dir, ec);
  fs::path out = dir;
  if (fresh) {
    const fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
    std::random_device rd;
    out = parent / fmt::format(".{}.tmp{:08x}", dir.filename().string(), rd());
    fs::create_directories(out, ec);
    if (ec) throw Error(fmt::format("{}: cannot create folder: {}", out.string(), ec.message()));
  } else if (!fs::is_directory(dir, ec)) {
    throw Error(fmt::format("{}: exists and is not a folder", dir.string()));
  }
  try {
    fill(out);
    if (fresh) {
      sync_path(out);
      fs::rename(out, dir, ec);
      if (ec) {
        throw Error(fmt::format("{}: cannot move the finished folder into place: {}", dir.string(),
                                ec.message()));
      }
      sync_path(dir.has_parent_path() ? dir.parent_path() : fs::path("."));
    }
  } catch (...) {
    if (fresh) fs::remove_all(out, ec);
    throw;
  }
}

void check_output_path(const fs::path& path, std::initializer_list<fs::path> inputs) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    throw Error(fmt::format("{}: is a folder, expected an output file path", path.string()));
  }
  for (const auto& in : inputs) {
    if (fs::exists(path, ec) && fs::equivalent(path, in, ec)) {
      throw Error(fmt::format("{}: the output would overwrite the input", path.string()),
                  "choose another output file");
    }
  }
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  if (ec) throw Error(fmt::format("{}: cannot create folder: {}", parent.string(), ec.message()));
  const fs::path probe = parent / fmt::format(".{}.probe", path.filename().string());
  {
    std::ofstream out(probe, std::ios::binary | std::ios::trunc);
    if (!out) {
      throw Error(fmt::format("{}: cannot write there: {}", path.string(), std::strerror(errno)));
    }
  }
  fs::remove(probe, ec);
}

std::string env_value(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

fs::path user_cache_home() {
  if (auto v = env_value("XDG_CACHE_HOME"); !v.empty()) return v;
  if (auto v = env_value("HOME"); !v.empty()) return fs::path(v) / ".cache";
  return {};
}

fs::path data_dir() {
  if (auto v = env_value("LLMFT_DATA_DIR"); !v.empty()) return v;
  // An installed llmft finds its data beside it (PREFIX/bin/llmft -> PREFIX/share/llmft), wherever
  // the prefix was moved; a build-tree binary uses the source tree's data/.
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path installed = (exe.parent_path() / LLMFT_INSTALL_DATA_RELDIR).lexically_normal();
    if (fs::is_directory(installed, ec)) return installed;
  }
  return fs::path(LLMFT_SOURCE_DATA_DIR);
}

}  // namespace llmft
