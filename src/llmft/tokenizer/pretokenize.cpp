// Unicode classes for the pre-tokenizer, from ICU (general category, White_Space property).
#include "llmft/tokenizer/pretokenize.h"

#include <unicode/uchar.h>

namespace llmft::pretok {

CharClass classify_non_ascii(uint32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  const uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return kLetter;
  if (mask & U_GC_N_MASK) return kNumber;
  if (u_isUWhiteSpace(c)) return kSpace;
  return kOther;
}

}  // namespace llmft::pretok
