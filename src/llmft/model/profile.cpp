// Per-kernel timers; see profile.h.
#include "llmft/model/profile.h"

#include <cstring>

namespace llmft::profile {

namespace {
bool g_on = false;
struct Slot {
  const char* key;
  Entry e;
};
std::vector<Slot>& slots() {
  static std::vector<Slot> s;
  return s;
}
}  // namespace

void enable(bool on) { g_on = on; }
bool enabled() { return g_on; }
void reset() { slots().clear(); }

void add(const char* name, double seconds) {
  auto& s = slots();
  for (Slot& x : s)
    if (x.key == name || std::strcmp(x.key, name) == 0) {
      x.e.seconds += seconds;
      ++x.e.calls;
      return;
    }
  s.push_back(Slot{name, Entry{name, seconds, 1}});
}

std::vector<Entry> entries() {
  std::vector<Entry> out;
  for (const Slot& x : slots()) out.push_back(x.e);
  return out;
}

}  // namespace llmft::profile
