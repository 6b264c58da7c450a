// Dataset loading (JSON array or JSONL) with one-line errors naming file, entry and field.
#include "llmft/data/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <string_view>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"

namespace llmft {

namespace {

using ojson = nlohmann::ordered_json;

constexpr std::string_view kEndOfTextText = "<|endoftext|>";
constexpr const char* kFieldsHint =
    "every entry needs the string fields \"instruction\", \"input\" (may be \"\") and \"output\"";

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

const char* type_name(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null: return "null";
    case ojson::value_t::object: return "an object";
    case ojson::value_t::array: return "an array";
    case ojson::value_t::string: return "a string";
    case ojson::value_t::boolean: return "a boolean";
    case ojson::value_t::binary: return "binary";
    case ojson::value_t::discarded: return "discarded";
    default: return "a number";
  }
}

// Where a byte offset lies inside a JSON text: which top-level entry and which field.
struct JsonLocation {
  long entry = -1;    // -1: not inside an entry
  std::string field;  // empty: not inside a field's value
};

// Walks bytes[0, end) with a minimal JSON scanner. Entries are the values at depth 1 (inside the
// top-level array) when count_entries, and field names are the keys of objects at key_depth.
// Only runs on the error path, so its linear cost does not matter.
JsonLocation locate(std::string_view bytes, size_t end, bool count_entries, int key_depth) {
  JsonLocation loc;
  int depth = 0;
  bool in_string = false, escape = false, string_is_key = false;
  bool expect_entry = false, expect_key = false;
  std::string current;
  for (size_t i = 0; i < end && i < bytes.size(); ++i) {
    const char c = bytes[i];
    if (in_string) {
      if (escape) {
        escape = false;
      } else if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
        if (string_is_key) loc.field = current;
      } else if (string_is_key) {
        current.push_back(c);
      }
      continue;
    }
    if (is_space(c)) continue;
    if (count_entries && depth == 1 && expect_entry && c != ']') {
      ++loc.entry;
      loc.field.clear();
      expect_entry = false;
    }
    switch (c) {
      case '"':
        in_string = true;
        string_is_key = depth == key_depth && expect_key;
        if (string_is_key) {
          current.clear();
          expect_key = false;
        }
        break;
      case '{':
      case '[':
        ++depth;
        if (depth == 1) expect_entry = true;
        if (depth == key_depth) expect_key = c == '{';
        break;
      case '}':
      case ']':
        if (depth == key_depth) loc.field.clear();
        --depth;
        break;
      case ',':
        if (depth == 1) expect_entry = true;
        if (depth == key_depth) {
          expect_key = true;
          loc.field.clear();
        }
        break;
      default: break;
    }
  }
  if (depth < key_depth) loc.field.clear();
  return loc;
}

// Offset of the first byte of the first ill-formed UTF-8 sequence, or bytes.size() if none.
// nlohmann reports the byte where it noticed the problem, which can be a later byte.
size_t first_invalid_utf8(std::string_view bytes) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = b[i];
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n || b[i + 1] < lo || b[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if (b[i + k] < 0x80 || b[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return n;
}

// " in entry 3, field \"output\"" (or less when unknown).
std::string where(long entry, const std::string& field) {
  std::string s;
  if (entry >= 0) s += fmt::format(" in entry {}", entry);
  if (!field.empty()) s += fmt::format("{} field \"{}\"", entry >= 0 ? "," : " in", field);
  return s;
}

// Turns a parse error at `offset` (0-based byte of `bytes`, which starts at `base` in the file)
// into one line naming the file, line:column, entry and field.
[[noreturn]] void throw_parse_error(const std::filesystem::path& name, std::string_view file,
                                    size_t base, std::string_view bytes,
                                    const nlohmann::json::parse_error& e, long entry,
                                    bool count_entries, int key_depth,
                                    const char* hint = nullptr) {
  // e.byte is the 1-based count of bytes read when the error was found: the bad byte is the last.
  size_t offset = json_error_offset(bytes, e);
  const std::string reason = json_error_reason(bytes, e);
  const bool utf8 = std::string_view(e.what()).find("UTF-8") != std::string_view::npos;
  if (utf8) offset = std::min(offset, first_invalid_utf8(bytes));
  JsonLocation loc = locate(bytes, offset, count_entries, key_depth);
  if (!count_entries) loc.entry = entry;
  const size_t abs = base + offset;
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < abs && i < file.size(); ++i) {
    if (file[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  const size_t column = abs - line_start + 1;
  if (utf8) {
    throw Error(fmt::format("{}: invalid UTF-8 at line {}, column {} (byte {}){}", name.string(),
                            line, column, abs, where(loc.entry, loc.field)),
                "the dataset must be UTF-8 text; re-save the file as UTF-8");
  }
  throw Error(fmt::format("{}: line {}, column {} (byte {}){}: {}", name.string(),
                          line, column, abs, where(loc.entry, loc.field), reason),
              hint ? hint : "check the file with a JSON validator (e.g. python3 -m json.tool FILE)");
}

// The string at obj[key], checked: present, a string, no literal end-of-text. `what` names it in
// messages ("field \"output\"", "messages[2].content").
const std::string& checked_string(const ojson& obj, const char* key, const std::string& what,
                                  const std::string& at, const char* hint) {
  const auto it = obj.find(key);
  if (it == obj.end()) throw Error(fmt::format("{}: {} is missing", at, what), hint);
  if (!it->is_string()) {
    throw Error(fmt::format("{}: {} is {}, expected a string", at, what, type_name(*it)), hint);
  }
  const auto& s = it->get_ref<const std::string&>();
  if (s.find(kEndOfTextText) != std::string::npos) {
    throw Error(fmt::format("{}: {} contains the literal text \"{}\"", at, what, kEndOfTextText),
                "remove it: it is GPT-2's end-of-text token, used for padding and to end answers");
  }
  return s;
}

constexpr const char* kMessagesHint =
    "\"messages\" is a list of {\"role\": ..., \"content\": ...}: system messages first, then "
    "user and assistant alternating, ending with the assistant's answer";

// A conversation: system messages, then user/assistant pairs; the last pair becomes the
// instruction and the output, the earlier ones the history.
void read_messages(const ojson& messages, const std::string& key, const std::string& at,
                   InstructionEntry& e) {
  if (!messages.is_array()) {
    throw Error(fmt::format("{}: field \"{}\" is {}, expected a list of messages", at, key,
                            type_name(messages)),
                kMessagesHint);
  }
  std::string user;
  bool have_user = false, seen_turn = false;
  for (size_t k = 0; k < messages.size(); ++k) {
    const ojson& m = messages[k];
    const std::string what = fmt::format("{}[{}]", key, k);
    if (!m.is_object()) {
      throw Error(fmt::format("{}: {} is {}, expected an object with \"role\" and \"content\"",
                              at, what, type_name(m)),
                  kMessagesHint);
    }
    const std::string& role = checked_string(m, "role", what + ".role", at, kMessagesHint);
    const std::string& content = checked_string(m, "content", what + ".content", at, kMessagesHint);
    const bool expect_user = !have_user;
    if (role == "system" && !seen_turn) {
      e.system += (e.system.empty() ? "" : "\n\n") + content;
    } else if (role == "user" && expect_user) {
      user = content;
      have_user = seen_turn = true;
    } else if (role == "assistant" && !expect_user) {
      e.history.push_back({std::move(user), content});
      have_user = false;
    } else if (role != "system" && role != "user" && role != "assistant") {
      throw Error(fmt::format("{}: {}.role is \"{}\", expected system, user or assistant", at,
                              what, role),
                  kMessagesHint);
    } else {
      throw Error(fmt::format("{}: {} is a \"{}\" message where a{} was expected", at, what,
                              role, expect_user ? " user message" : "n assistant message"),
                  kMessagesHint);
    }
  }
  if (e.history.empty() || have_user) {
    throw Error(fmt::format("{}: {} does not end with an assistant message after a user message",
                            at, key),
                "the last message is the answer the model learns; end each conversation with it");
  }
  e.instruction = std::move(e.history.back().user);
  e.output = std::move(e.history.back().assistant);
  e.history.pop_back();
}

// Checks one entry's object and moves it into an InstructionEntry, whichever shape it has.
InstructionEntry make_entry(ojson&& obj, const std::filesystem::path& name, size_t index,
                            const std::string& line_note) {
  if (!obj.is_object()) {
    throw Error(fmt::format("{}: entry {}{} is {}, expected an object with fields \"instruction\", "
                            "\"input\", \"output\"",
                            name.string(), index, line_note, type_name(obj)),
                kFieldsHint);
  }
  const std::string at = fmt::format("{}: entry {}{}", name.string(), index, line_note);
  InstructionEntry e;
  if (obj.contains("instruction") || obj.contains("input") || obj.contains("output")) {
    e.instruction = checked_string(obj, "instruction", "field \"instruction\"", at, kFieldsHint);
    e.input = checked_string(obj, "input", "field \"input\"", at, kFieldsHint);
    e.output = checked_string(obj, "output", "field \"output\"", at, kFieldsHint);
  } else if (obj.contains("messages")) {
    read_messages(obj["messages"], "messages", at, e);
  } else if (obj.contains("prompt") && obj.contains("completion")) {
    if (obj["prompt"].is_array() && obj["completion"].is_array()) {
      ojson all = obj["prompt"];
      for (const ojson& m : obj["completion"]) all.push_back(m);
      read_messages(all, "prompt + completion", at, e);
    } else {
      const char* hint = "\"prompt\" and \"completion\" are both strings, or both lists of "
                         "messages";
      e.instruction = checked_string(obj, "prompt", "field \"prompt\"", at, hint);
      e.output = checked_string(obj, "completion", "field \"completion\"", at, hint);
    }
  } else {
    std::string keys;
    for (const auto& kv : obj.items()) keys += (keys.empty() ? "\"" : ", \"") + kv.key() + "\"";
    throw Error(fmt::format("{}: unknown entry shape, with keys {}", at,
                            keys.empty() ? "(none)" : keys),
                "expected instruction/input/output (Alpaca), messages (chat) or "
                "prompt/completion");
  }
  e.raw = std::move(obj);
  return e;
}

InstructionDataset parse_array(std::string_view file, size_t start,
                               const std::filesystem::path& name) {
  const std::string_view bytes = file.substr(start);
  ojson doc;
  try {
    doc = ojson::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::parse_error& e) {
    throw_parse_error(name, file, start, bytes, e, -1, /*count_entries=*/true, /*key_depth=*/2,
                      bytes[0] == '{' ? "a .json dataset is one array [ {...}, ... ]; for one "
                                        "object per line name the file *.jsonl"
                                      : nullptr);
  }
  if (!doc.is_array()) {
    throw Error(fmt::format("{}: the top-level JSON value is {}, expected an array of objects",
                            name.string(), type_name(doc)),
                "use [{\"instruction\": ..., \"input\": ..., \"output\": ...}, ...], or one "
                "object per line in a file named *.jsonl");
  }
  InstructionDataset ds;
  ds.path = name;
  ds.entries.reserve(doc.size());
  for (size_t i = 0; i < doc.size(); ++i) ds.entries.push_back(make_entry(std::move(doc[i]), name, i, ""));
  return ds;
}

InstructionDataset parse_jsonl(std::string_view file, size_t start,
                               const std::filesystem::path& name) {
  InstructionDataset ds;
  ds.path = name;
  size_t pos = start, line_no = 1;
  for (size_t i = 0; i < start; ++i) line_no += file[i] == '\n';
  for (; pos < file.size(); ++line_no) {
    size_t nl = file.find('\n', pos);
    if (nl == std::string_view::npos) nl = file.size();
    const std::string_view line = file.substr(pos, nl - pos);
    const size_t line_start = pos;
    pos = nl + 1;
    bool blank = true;
    for (char c : line) blank = blank && is_space(c);
    if (blank) continue;
    const size_t index = ds.entries.size();
    ojson obj;
    try {
      obj = ojson::parse(line.begin(), line.end());
    } catch (const nlohmann::json::parse_error& e) {
      if (index == 0) {
        // A pretty-printed single object is not JSONL: say what it is instead.
        try {
          const ojson whole = ojson::parse(file.substr(start));
          throw Error(fmt::format("{}: the top-level JSON value is {}, expected an array of "
                                  "objects or one object per line (JSONL)",
                                  name.string(), type_name(whole)),
                      "wrap the entries in [ ... ]");
        } catch (const nlohmann::json::exception&) {
        }
      }
      throw_parse_error(name, file, line_start, line, e, static_cast<long>(index),
                        /*count_entries=*/false, /*key_depth=*/1);
    }
    ds.entries.push_back(
        make_entry(std::move(obj), name, index, fmt::format(" (line {})", line_no)));
  }
  return ds;
}

}  // namespace

InstructionDataset parse_dataset(std::string_view bytes, const std::filesystem::path& name) {
  size_t start = 0;
  if (bytes.substr(0, 3) == "\xEF\xBB\xBF") start = 3;  // UTF-8 byte order mark
  while (start < bytes.size() && is_space(bytes[start])) ++start;
  if (start == bytes.size()) {
    throw Error(fmt::format("{}: empty dataset (the file has no entries)", name.string()),
                kFieldsHint);
  }
  std::string ext = name.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const bool jsonl = ext == ".jsonl" || ext == ".ndjson";
  check_json_limits(bytes, name.string());  // nesting and number range, before nlohmann
  InstructionDataset ds = jsonl ? parse_jsonl(bytes, start, name) : parse_array(bytes, start, name);
  if (ds.entries.empty()) {
    throw Error(fmt::format("{}: empty dataset (the file has no entries)", name.string()),
                kFieldsHint);
  }
  return ds;
}

void save_dataset(const std::filesystem::path& path, const std::vector<InstructionEntry>& entries) {
  std::string ext = path.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const bool jsonl = ext == ".jsonl" || ext == ".ndjson";
  write_file_atomic(path, [&](std::ostream& os) {
    if (!jsonl) os << "[";
    for (size_t i = 0; i < entries.size(); ++i) {
      if (jsonl) {
        os << entries[i].raw.dump(-1, ' ', false, ojson::error_handler_t::replace) << "\n";
        continue;
      }
      // Indented as one element of the array (json.dump(..., indent=4) does the same).
      std::string e = entries[i].raw.dump(4, ' ', false, ojson::error_handler_t::replace);
      std::string shifted = "\n    ";
      for (char c : e) {
        shifted += c;
        if (c == '\n') shifted += "    ";
      }
      os << (i ? "," : "") << shifted;
    }
    if (!jsonl) os << (entries.empty() ? "]\n" : "\n]\n");
  });
}

InstructionDataset load_dataset(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  return parse_dataset(bytes, path);
}

DatasetSplits split_dataset(size_t n) {
  // Python: int(len(data) * 0.85), int(len(data) * 0.1): truncation of a double product.
  const auto train = static_cast<size_t>(static_cast<double>(n) * 0.85);
  const auto test = static_cast<size_t>(static_cast<double>(n) * 0.1);
  DatasetSplits s;
  s.train = {0, train};
  s.test = {train, train + test};
  s.val = {train + test, n};
  return s;
}

}  // namespace llmft
