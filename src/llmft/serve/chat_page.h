// The chat page `llmft serve` shows at "/": one self-contained HTML file (chat_page.html: no CDN,
// no build step), compiled into the binary by CMake.
#pragma once

#include <string_view>

namespace llmft::serve {
extern const std::string_view kChatPage;
}
