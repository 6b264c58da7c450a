// See usage.h.
#include "usage.h"

#include <fmt/format.h>

#include <algorithm>

namespace llmft::app {
namespace {

// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
// neighbours ("modle" -> "model") each cost 1.
size_t edit_distance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[n][m];
}

bool is_help(std::string_view s) { return s == "--help" || s == "-h"; }

// "-x", "--name", "--name=value"; not "-" (stdin) nor a negative number.
bool looks_like_option(std::string_view s) {
  if (s.size() < 2 || s[0] != '-') return false;
  const char c = s[1];
  return !(c >= '0' && c <= '9') && c != '.';
}

std::vector<std::string> option_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* o : app.get_options()) {
    for (const auto& l : o->get_lnames()) names.push_back("--" + l);
    for (const auto& s : o->get_snames()) names.push_back("-" + s);
  }
  return names;
}

std::vector<const CLI::App*> commands_of(const CLI::App& app) {
  return app.get_subcommands([](const CLI::App* s) { return !s->get_name().empty(); });
}

bool has_positionals(const CLI::App& app) {
  return !app.get_options([](const CLI::Option* o) { return o->get_positional(); }).empty();
}

std::string join_names(const std::vector<const CLI::App*>& apps) {
  std::string s;
  for (const CLI::App* a : apps) s += (s.empty() ? "" : ", ") + a->get_name();
  return s;
}

std::string with_prefix(const CommandPath& path, const std::string& name) {
  const std::string p = path.display();
  return p.empty() ? name : p + " " + name;
}

std::string help_command(const CommandPath& path) {
  const std::string where = path.display();
  return where.empty() ? "llmft help" : "llmft help " + where;
}

}  // namespace

std::string closest(std::string_view typed, const std::vector<std::string>& candidates) {
  std::string best, prefix_of;
  size_t best_d = std::string::npos, prefixes = 0;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(typed, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
    if (typed.size() >= 3 && c.starts_with(typed)) {
      ++prefixes;
      prefix_of = c;
    }
  }
  // A typo: up to 2 edits, and at most a third of the name (so "x" does not suggest "-o").
  const size_t limit = std::min<size_t>(2, std::max<size_t>(1, typed.size() / 3));
  if (best_d != std::string::npos && best_d <= limit) return best;
  if (prefixes == 1) return prefix_of;
  return {};
}

std::vector<std::string> expand_help(std::vector<std::string> args) {
  if (!args.empty() && args[0] == "help") {
    args.erase(args.begin());
    args.push_back("--help");
  }
  return args;
}

std::string CommandPath::display() const {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : " ") + n;
  return s;
}

std::string check_command_line(const CLI::App& cli, const std::vector<std::string>& args,
                               CommandPath& path) {
  path = {};
  path.app = &cli;
  std::string error;
  auto fail = [&](std::string msg) {
    if (error.empty()) error = std::move(msg);
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (is_help(a)) return {};  // help wins: CLI11 prints the help of the command named so far
    if (a == "--version" && path.names.empty()) return {};
    if (looks_like_option(a)) {
      const std::string name = a.substr(0, a.find('='));
      const CLI::Option* opt = path.app->get_option_no_throw(name);
      if (opt == nullptr) {
        const std::string near = closest(name, option_names(*path.app));
        fail(fmt::format("unknown option {}{}", name,
                         near.empty() ? fmt::format("; see '{}'", help_command(path))
                                      : fmt::format("; did you mean {}?", near)));
        continue;
      }
      // Skip the value(s) an option takes (a value may look like an option: --seed -1).
      if (opt->get_type_size_max() > 0 && a.find('=') == std::string::npos) {
        const int n = opt->get_items_expected_max();
        for (int k = 0; k < n && i + 1 < args.size(); ++k) {
          if (k > 0 && looks_like_option(args[i + 1])) break;
          ++i;
        }
      }
      continue;
    }
    const auto subs = commands_of(*path.app);
    if (subs.empty() || has_positionals(*path.app)) continue;  // a positional argument
    const CLI::App* next = nullptr;
    for (const CLI::App* s : subs)
      if (s->check_name(a)) next = s;
    if (next == nullptr) {
      std::vector<std::string> names;
      for (const CLI::App* s : subs) names.push_back(s->get_name());
      const std::string near = closest(a, names);
      fail(fmt::format("unknown command '{}'{}", with_prefix(path, a),
                       near.empty() ? fmt::format("; the commands are: {}", join_names(subs))
                                    : fmt::format("; did you mean '{}'?", with_prefix(path, near))));
      return error;  // what follows belongs to a command we do not know
    }
    path.names.push_back(next->get_name());
    path.app = next;
  }
  if (!error.empty()) return error;
  if (const auto subs = commands_of(*path.app); !subs.empty() && path.app->get_require_subcommand_min() > 0) {
    if (path.names.empty())
      return fmt::format("no command given; the commands are: {} ('llmft help COMMAND' for one)",
                         join_names(subs));
    return fmt::format("'{}' needs a command: {}", path.display(), join_names(subs));
  }
  return {};
}

std::string describe_parse_error(const CLI::ParseError& e, const CommandPath& path) {
  const std::string msg = e.what();
  const std::string where = path.display();
  const std::string help = help_command(path);
  // By type: CLI11 names some errors after the app that raised them (ExtrasError).
  if (dynamic_cast<const CLI::RequiredError*>(&e) && msg.ends_with(" is required")) {
    const std::string what = msg.substr(0, msg.size() - std::string_view(" is required").size());
    return fmt::format("'{}' needs {}; see '{}'", where, what, help);
  }
  if (dynamic_cast<const CLI::ExtrasError*>(&e) && path.app != nullptr) {
    std::string extra;
    for (const auto& a : path.app->remaining()) extra += (extra.empty() ? "'" : " '") + a + "'";
    if (!extra.empty())
      return fmt::format("unexpected argument{} {} for '{}'; see '{}'",
                         path.app->remaining().size() > 1 ? "s" : "", extra, where, help);
  }
  if (dynamic_cast<const CLI::ConversionError*>(&e) && msg.starts_with("Could not convert: ")) {
    const std::string rest = msg.substr(std::string_view("Could not convert: ").size());
    const size_t eq = rest.find(" = ");
    if (eq != std::string::npos)
      return fmt::format("{}: '{}' is not a valid value", rest.substr(0, eq), rest.substr(eq + 3));
  }
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e)) {
    const size_t colon = msg.find(':');
    if (colon != std::string::npos && msg.find(" missing") != std::string::npos)
      return fmt::format("{} needs a value", msg.substr(0, colon));
  }
  return msg;
}

}  // namespace llmft::app
