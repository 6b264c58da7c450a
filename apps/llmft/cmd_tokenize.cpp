// `llmft tokenize [TEXT]`: text (the argument, --file or stdin) -> GPT-2 token ids as a JSON
// array, --decode for the reverse, and
// --jsonl for many texts at once ({"text", "mode"} per line in, {"ids"} per line out, in order).
// Text is read in chunks and its ids are written as they are made (BpeTokenizer::encode_stream).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <iterator>
#include <memory>
#include <vector>
#include <nlohmann/json.hpp>

#include "command.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft::app {
namespace {

struct TokenizeOptions {
  std::string text, file, vocab, jsonl;
  bool has_text = false;  // TEXT was given (it may be empty)
  bool decode = false, allow_special = false;
};

std::string read_input(const std::string& file) {
  if (!file.empty()) return read_file(file);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void print(std::string_view s) { std::fwrite(s.data(), 1, s.size(), stdout); }

// Ids as JSON arrays ("[15496,995]", nlohmann's compact form) and other text to stdout, in
// blocks of 1 MiB: nothing is written before the first block fills, so an early error leaves
// stdout empty.
class IdsWriter {
 public:
  IdsWriter() {
    for (uint32_t v = 0; v < kTable; ++v) {
      char b[8] = {','};
      comma_id_len_[v] = static_cast<uint8_t>(std::to_chars(b + 1, b + 8, v).ptr - b);
      std::memcpy(&comma_id_[v], b, 8);
    }
  }
  void text(std::string_view s) {
    if (used_ + s.size() > kCap) flush();
    if (s.size() > kCap) return write(s);
    std::memcpy(buf_.get() + used_, s.data(), s.size());
    used_ += s.size();
  }
  void begin_list() {
    text("[");
    first_ = true;
  }
  void ids(std::span<const int32_t> ids) {
    size_t i = 0;
    while (i < ids.size()) {
      // Each id takes at most 12 bytes ("," and 11 characters) and at most 12 are written for it
      // (a table entry is copied as 8 bytes), so this many fit before the buffer must be flushed.
      if (used_ + 12 > kCap) flush();
      const size_t end = std::min(ids.size(), i + (kCap - used_) / 12);
      char* p = buf_.get() + used_;
      if (first_) {
        p = std::to_chars(p, p + 11, ids[i++]).ptr;
        first_ = false;
      }
      for (; i < end; ++i) {
        const auto v = static_cast<uint32_t>(ids[i]);
        if (v < kTable) {
          std::memcpy(p, &comma_id_[v], 8);
          p += comma_id_len_[v];
        } else {
          *p++ = ',';
          p = std::to_chars(p, p + 11, ids[i]).ptr;
        }
      }
      used_ = static_cast<size_t>(p - buf_.get());
    }
  }
  void flush() {
    write({buf_.get(), used_});
    used_ = 0;
  }

 private:
  static constexpr size_t kCap = size_t(1) << 20;
  // ",<id>" of every id below kTable as 8 bytes and its length: one copy per id instead of a
  // conversion (~12 ns an id in a test program, ~1.5 ns with the table).
  static constexpr uint32_t kTable = 1 << 16;
  std::vector<uint64_t> comma_id_ = std::vector<uint64_t>(kTable);
  std::vector<uint8_t> comma_id_len_ = std::vector<uint8_t>(kTable);
  static void write(std::string_view s) {
    if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size() || std::fflush(stdout) != 0) {
      throw Error(fmt::format("stdout: write failed: {}", std::strerror(errno)));
    }
  }
  std::unique_ptr<char[]> buf_ = std::make_unique<char[]>(kCap);
  size_t used_ = 0;
  bool first_ = true;
};

// --file or stdin, read in chunks (with read_file's errors).
class InputFile {
 public:
  explicit InputFile(const std::string& file) : name_(file.empty() ? "stdin" : file) {
    if (file.empty()) return;
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec))
      throw Error(fmt::format("{}: is a folder, expected a file", file));
    fd_ = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      throw Error(fmt::format("{}: cannot open: {}", file, std::strerror(errno)), "check the path");
    }
  }
  ~InputFile() {
    if (fd_ > 0) ::close(fd_);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  // Fills `buf` unless the input ends first; returns the bytes read.
  size_t read(std::span<char> buf) {
    size_t got = 0;
    while (got < buf.size()) {
      const ssize_t n = ::read(fd_, buf.data() + got, buf.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error(fmt::format("{}: read failed: {}", name_, std::strerror(errno)));
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    return got;
  }

  // A regular file (--file, or stdin redirected from one) is searched for a literal
  // <|endoftext|> before any id is printed, then read again from its start; a pipe cannot be,
  // and its ids before such a token may have been printed when the error comes.
  void check_no_special_token() {
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) return;
    const off_t start = ::lseek(fd_, 0, SEEK_CUR);
    if (start < 0) return;
    const std::string_view token = "<|endoftext|>";
    std::string window;
    std::vector<char> buf(size_t(1) << 20);
    uint64_t offset = 0;  // bytes before `window`
    for (size_t got; (got = read(buf)) > 0;) {
      window.append(buf.data(), got);
      const size_t at = window.find(token);
      if (at != std::string::npos) throw BpeTokenizer::special_token_error(offset + at);
      const size_t drop = window.size() - std::min(window.size(), token.size() - 1);
      offset += drop;
      window.erase(0, drop);
    }
    if (::lseek(fd_, start, SEEK_SET) != start) {
      throw Error(fmt::format("{}: cannot read: {}", name_, std::strerror(errno)));
    }
  }

 private:
  std::string name_;
  int fd_ = 0;  // stdin unless a file was named
};

// Each line {"text": str, "mode": "ordinary" | "all"} -> one line {"ids": [...]}. Without
// "mode", --allow-special decides. Everything is checked before anything is printed.
void run_jsonl(const BpeTokenizer& tok, const TokenizeOptions& o) {
  const std::string input = o.jsonl == "-" ? read_input("") : read_file(o.jsonl);
  const std::string name = o.jsonl == "-" ? "stdin" : o.jsonl;
  // Buckets per mode, encoded in parallel; `where` puts the results back in input order.
  constexpr SpecialTokens kModes[3] = {SpecialTokens::kOrdinary, SpecialTokens::kAllow,
                                       SpecialTokens::kDisallow};
  std::vector<std::string> texts[3];
  std::vector<std::pair<int, size_t>> where;
  size_t line_no = 0;
  for (size_t pos = 0; pos < input.size();) {
    size_t eol = input.find('\n', pos);
    if (eol == std::string::npos) eol = input.size();
    const std::string_view line(input.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    nlohmann::json j;
    check_json_limits(line, fmt::format("{}:{}", name, line_no));
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(fmt::format("{}: line {}, column {}: {}", name, line_no,
                              json_error_offset(line, e) + 1, json_error_reason(line, e)),
                  "each line must be {\"text\": ..., \"mode\": \"ordinary\" | \"all\"}");
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
      throw Error(fmt::format("{}:{}: expected an object with a string \"text\"", name, line_no));
    }
    int mode = o.allow_special ? 1 : 2;
    if (j.contains("mode")) {
      const auto& m = j["mode"];
      if (m == "ordinary") {
        mode = 0;
      } else if (m == "all") {
        mode = 1;
      } else {
        throw Error(
            fmt::format("{}:{}: mode {} is not \"ordinary\" or \"all\"", name, line_no, m.dump()));
      }
    }
    if (mode == 2 &&
        j["text"].get_ref<const std::string&>().find("<|endoftext|>") != std::string::npos) {
      throw Error(fmt::format("{}:{}: text contains the special token <|endoftext|>, which is not "
                              "allowed here",
                              name, line_no),
                  "give the line \"mode\": \"all\" (id 50256) or \"ordinary\" (plain text), "
                  "or pass --allow-special");
    }
    where.emplace_back(mode, texts[mode].size());
    texts[mode].push_back(j["text"].get<std::string>());
  }
  std::vector<std::vector<int32_t>> ids[3];
  for (int m = 0; m < 3; ++m) ids[m] = tok.encode_batch(texts[m], kModes[m]);
  IdsWriter out;
  for (const auto& [mode, i] : where) {
    out.text("{\"ids\":");
    out.begin_list();
    out.ids(ids[mode][i]);
    out.text("]}\n");
  }
  out.flush();
}

Runner setup(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::Option* text = app.add_option(
      "text", o->text,
      "Text to encode (with --decode: a JSON array of ids); default: read stdin or --file");
  app.add_option("--file", o->file,
                 "Read the text (or, with --decode, the ids) from this file "
                 "instead of stdin (used as is: a trailing newline is text)")
      ->capture_default_str();
  app.add_flag("--decode", o->decode, "Read a JSON array of token ids and print their text")
      ->capture_default_str();
  app.add_flag("--allow-special", o->allow_special,
               "Encode a literal <|endoftext|> as id 50256 (otherwise it is an error)")
      ->capture_default_str();
  app.add_option("--vocab", o->vocab,
                 "Folder with vocab.json + merges.txt (Hugging Face) or "
                 "encoder.json + vocab.bpe; default: the bundled GPT-2 files")
      ->capture_default_str();
  app.add_option("--jsonl", o->jsonl,
                 "Encode each line {\"text\": ..., \"mode\": \"ordinary\" | "
                 "\"all\"} of this file ('-' = stdin) and print one line "
                 "{\"ids\": [...]} per line, in order")
      ->capture_default_str();
  return [o, text]() {
    o->has_text = text->count() > 0;
    if (o->decode && !o->jsonl.empty()) throw UsageError("--decode and --jsonl cannot be combined");
    if (o->has_text && (!o->file.empty() || !o->jsonl.empty()))
      throw UsageError("give the text as an argument or with --file/--jsonl, not both");
    const BpeTokenizer tok =
        o->vocab.empty() ? BpeTokenizer::load_bundled() : BpeTokenizer::load_folder(o->vocab);
    if (!o->jsonl.empty()) {
      run_jsonl(tok, *o);
      return 0;
    }
    const auto special = o->allow_special ? SpecialTokens::kAllow : SpecialTokens::kDisallow;
    if (!o->decode) {
      IdsWriter out;
      out.begin_list();
      const BpeTokenizer::IdsSink emit = [&](std::span<const int32_t> ids) { out.ids(ids); };
      if (o->has_text) {
        std::string_view rest = o->text;
        tok.encode_stream(
            [&](std::span<char> buf) {
              const size_t n = std::min(buf.size(), rest.size());
              std::memcpy(buf.data(), rest.data(), n);
              rest.remove_prefix(n);
              return n;
            },
            emit, special);
      } else {
        InputFile in(o->file);
        if (special == SpecialTokens::kDisallow) in.check_no_special_token();
        tok.encode_stream([&](std::span<char> buf) { return in.read(buf); }, emit, special);
      }
      out.text("]\n");
      out.flush();
      return 0;
    }
    const std::string input = o->has_text ? o->text : read_input(o->file);
    const std::string source = o->has_text ? "the argument" : o->file.empty() ? "stdin" : o->file;
    // --decode: a JSON array of ids -> their text.
    std::vector<int32_t> ids;
    const std::string hint = "e.g. echo '[15496, 995]' | llmft tokenize --decode";
    const auto j = parse_json(input, source, hint);
    try {
      if (!j.is_array()) throw Error("not an array");
      for (const auto& v : j) {
        if (!v.is_number_integer() || v.get<int64_t>() < INT32_MIN ||
            v.get<int64_t>() > INT32_MAX) {
          throw Error(fmt::format("element {} is not a token id", v.dump()));
        }
        ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
      }
    } catch (const std::exception& e) {
      throw Error(fmt::format("{}: expected a JSON array of token ids: {}", source, e.what()),
                  "e.g. echo '[15496, 995]' | llmft tokenize --decode");
    }
    print(tok.decode(ids));
    return 0;
  };
}

const Registration reg{"tokenize", "Encode text to GPT-2 token ids (or --decode ids to text)",
                       setup};

}  // namespace
}  // namespace llmft::app
