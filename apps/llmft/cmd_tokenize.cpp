// `llmft tokenize [TEXT]`: text (the argument, --file or stdin) -> GPT-2 token ids as a JSON
// array, --decode for the reverse, and
// --jsonl for many texts at once ({"text", "mode"} per line in, {"ids"} per line out, in order).
#include <cstdio>
#include <iostream>
#include <iterator>
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
  std::string out;
  for (const auto& [mode, i] : where) {
    out += nlohmann::json{{"ids", ids[mode][i]}}.dump();
    out += '\n';
  }
  print(out);
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
    const std::string input = o->has_text ? o->text : read_input(o->file);
    const std::string source = o->has_text ? "the argument" : o->file.empty() ? "stdin" : o->file;
    if (o->decode) {
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
    }
    const auto ids =
        tok.encode(input, o->allow_special ? SpecialTokens::kAllow : SpecialTokens::kDisallow);
    print(nlohmann::json(ids).dump() + "\n");
    return 0;
  };
}

const Registration reg{"tokenize", "Encode text to GPT-2 token ids (or --decode ids to text)",
                       setup};

}  // namespace
}  // namespace llmft::app
