// Instruction datasets in Alpaca format (SPEC §1): loading with clear errors, and the reference
// 85/10/5 split in file order. Matches rasbt/LLMs-from-scratch ch07 (gpt_instruction_finetuning.py).
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

namespace llmft {

// One exchange of a conversation: what the user said and what the assistant answered.
struct DialogueTurn {
  std::string user, assistant;
};

// One example. instruction/input/output are copies of the JSON fields; `raw` is the whole original
// object (key order kept, extra fields such as `chosen`, `rejected`, `model_response` included), so
// later stages can echo an entry with an added field. A conversation (`messages`) keeps its last
// user message as the instruction, its last assistant message as the output, and what came before
// in `system` and `history` (format_prompt puts them in front of the instruction).
struct InstructionEntry {
  std::string instruction, input, output;
  std::string system;                 // the system message(s) of a conversation
  std::vector<DialogueTurn> history;  // a conversation's turns before the last one
  nlohmann::ordered_json raw;
};

struct InstructionDataset {
  std::filesystem::path path;  // where it was loaded from (for messages)
  std::vector<InstructionEntry> entries;
  size_t size() const { return entries.size(); }
};

// Loads a JSON array of objects, or one object per line when the file is named *.jsonl or
// *.ndjson (JSON Lines; blank lines skipped). Each entry is one of three shapes (docs/data.md):
//   Alpaca: `instruction`, `input` and `output` strings (`input` may be ""; a missing `input` is an
//     error, as it is a KeyError in the reference's format_input);
//   chat: `messages`, a list of {role, content}: system messages first, then user and assistant
//     alternating, ending with the assistant's answer;
//   prompt/completion (TRL's): `prompt` and `completion` strings (instruction and output), or two
//     lists of messages (a conversation and its answer).
// An object of none of these shapes is an error listing the keys it has.
// Throws Error with one line naming the file, the entry index (0-based) and the field for: not
// JSON (with line:column), not an array of objects, a missing or non-string field, invalid UTF-8,
// an empty dataset, a literal "<|endoftext|>" in a field.
InstructionDataset load_dataset(const std::filesystem::path& path);
// Same, from bytes already in memory; `name` is used in messages and for the format.
InstructionDataset parse_dataset(std::string_view bytes, const std::filesystem::path& name);

// Writes entries (their `raw` objects, so extra fields and key order stay) atomically: a JSON
// array with 4-space indents, or one object per line when `path` is named *.jsonl / *.ndjson.
void save_dataset(const std::filesystem::path& path, const std::vector<InstructionEntry>& entries);

// A contiguous range of dataset indices [begin, end).
struct IndexRange {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};

// The reference split, in file order: train = first int(0.85 n), test = next int(0.10 n),
// val = the rest. Computed with double arithmetic exactly like Python's int(n * 0.85).
// For n = 1100: 935 / 110 / 55.
struct DatasetSplits {
  IndexRange train, test, val;
};
DatasetSplits split_dataset(size_t n);

}  // namespace llmft
