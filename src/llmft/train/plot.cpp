#include "llmft/train/plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "llmft/core/progress.h"

namespace llmft {

namespace {

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `n` intervals over `range`.
double nice_step(double range, int n) {
  if (!(range > 0)) return 1.0;
  const double raw = range / n, mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

std::string tick_label(double v, double step) {
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return fmt::format("{:.{}f}", v, decimals);
}

// Where the plot sits in the picture and the data ranges its axes show.
struct PlotArea {
  static constexpr double W = 760, H = 480, left = 72, right = 24, top = 78, bottom = 62;
  static constexpr double pw = W - left - right, ph = H - top - bottom;
  double x1 = 1, xstep = 1;          // epochs axis: [0, x1] in steps of xstep
  double y0 = 0, y1 = 1, ystep = 1;  // loss axis: [y0, y1] in steps of ystep
  double px(double x) const { return left + x / x1 * pw; }
  double py(double y) const { return top + (1.0 - (y - y0) / (y1 - y0)) * ph; }
};

// One curve: a value of each evaluation record.
struct Series {
  const char* name;
  const char* color;
  const char* dash;
  double (*value)(const EvalRecord&);
};
using Pair = std::array<Series, 2>;
constexpr Pair kLoss = {{{"Training loss", "#1f77b4", "", [](const EvalRecord& e) { return e.train_loss; }},
                         {"Validation loss", "#ff7f0e", "6 3 2 3",
                          [](const EvalRecord& e) { return e.val_loss; }}}};
constexpr Pair kMargin = {
    {{"Training margin", "#1f77b4", "",
      [](const EvalRecord& e) { return e.train_rewards ? e.train_rewards->margin() : NAN; }},
     {"Validation margin", "#ff7f0e", "6 3 2 3",
      [](const EvalRecord& e) { return e.val_rewards ? e.val_rewards->margin() : NAN; }}}};

// Axes spanning every evaluation's epoch and finite value, with ticks at nice steps.
PlotArea plot_area(std::span<const EvalRecord> evals, const Pair& series) {
  double xmax = 0, ymin = INFINITY, ymax = -INFINITY;
  for (const auto& e : evals) {
    xmax = std::max(xmax, e.epoch);
    for (double v : {series[0].value(e), series[1].value(e)}) {
      if (std::isfinite(v)) {
        ymin = std::min(ymin, v);
        ymax = std::max(ymax, v);
      }
    }
  }
  if (!(xmax > 0)) xmax = 1;
  if (!std::isfinite(ymin)) ymin = 0, ymax = 1;
  PlotArea a;
  a.ystep = nice_step(std::max(ymax - ymin, 1e-3), 5);
  a.y0 = std::floor(ymin / a.ystep) * a.ystep;
  a.y1 = std::ceil(ymax / a.ystep) * a.ystep;
  if (a.y1 <= a.y0) a.y1 = a.y0 + a.ystep;
  a.xstep = nice_step(xmax, 6);
  a.x1 = std::ceil(xmax / a.xstep - 1e-9) * a.xstep;
  return a;
}

// Frame, grid, the bottom axis (epochs) and the loss axis, with their labels.
std::string axes_svg(const PlotArea& a, const char* ylabel) {
  constexpr double left = PlotArea::left, top = PlotArea::top, pw = PlotArea::pw,
                   ph = PlotArea::ph;
  std::string s = fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n", left,
      top, pw, ph);
  for (double x = 0; x <= a.x1 + a.xstep * 1e-6; x += a.xstep) {
    s += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#eee\"/>"
        "<line x1=\"{0:.1f}\" y1=\"{2}\" x2=\"{0:.1f}\" y2=\"{3}\" stroke=\"#333\"/>"
        "<text x=\"{0:.1f}\" y=\"{4}\" text-anchor=\"middle\">{5}</text>\n",
        a.px(x), top, top + ph, top + ph + 5, top + ph + 19, tick_label(x, a.xstep));
  }
  for (double y = a.y0; y <= a.y1 + a.ystep * 1e-6; y += a.ystep) {
    s += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#eee\"/>"
        "<line x1=\"{3}\" y1=\"{1:.1f}\" x2=\"{0}\" y2=\"{1:.1f}\" stroke=\"#333\"/>"
        "<text x=\"{4}\" y=\"{5:.1f}\" text-anchor=\"end\">{6}</text>\n",
        left, a.py(y), left + pw, left - 5, left - 8, a.py(y) + 4, tick_label(y, a.ystep));
  }
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">Epochs</text>\n", left + pw / 2,
                   PlotArea::H - 18);
  s += fmt::format(
      "<text x=\"18\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {0})\">{1}"
      "</text>\n",
      top + ph / 2, ylabel);
  return s;
}

// Top axis: tokens seen at up to 6 evaluation points (tokens grow unevenly with batch lengths,
// so the ticks sit where those evaluations happened).
std::string tokens_axis_svg(const PlotArea& a, std::span<const EvalRecord> evals) {
  constexpr double top = PlotArea::top;
  std::string s = fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">Tokens seen</text>\n",
                              PlotArea::left + PlotArea::pw / 2, top - 30);
  if (evals.empty()) return s;
  const size_t n = evals.size(), k = std::min<size_t>(n, 6);
  for (size_t i = 0; i < k; ++i) {
    const auto& e = evals[k == 1 ? 0 : i * (n - 1) / (k - 1)];
    s += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#333\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
        a.px(e.epoch), top - 5, top, top - 9,
        xml_escape(human_count(static_cast<double>(e.tokens_seen), "")));
  }
  return s;
}

// The two curves, with a marker on every evaluation ("no evaluations" when there are none).
std::string curves_svg(const PlotArea& a, std::span<const EvalRecord> evals, const Pair& series) {
  std::string s;
  for (const auto& se : series) {
    std::string pts;
    for (const auto& e : evals) {
      pts += fmt::format("{:.1f},{:.1f} ", a.px(e.epoch), a.py(se.value(e)));
    }
    s += fmt::format(
        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\" "
        "points=\"{}\"/>\n",
        se.color, se.dash, pts);
    for (const auto& e : evals) {
      s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"/>", a.px(e.epoch),
                       a.py(se.value(e)), se.color);
    }
    s += "\n";
  }
  if (evals.empty()) {
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">no evaluations"
                     "</text>\n",
                     PlotArea::left + PlotArea::pw / 2, PlotArea::top + PlotArea::ph / 2);
  }
  return s;
}

// Legend, top right inside the plot.
std::string legend_svg(const Pair& series) {
  const double lx = PlotArea::left + PlotArea::pw - 150, ly = PlotArea::top + 10;
  std::string s = fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"140\" height=\"46\" fill=\"white\" stroke=\"#ccc\"/>\n", lx,
      ly);
  for (int i = 0; i < 2; ++i) {
    const double yy = ly + 16 + 18 * i;
    s += fmt::format(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\" "
        "stroke-dasharray=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
        lx + 8, yy, lx + 36, yy, series[i].color, series[i].dash, lx + 42, yy + 4,
        series[i].name);
  }
  return s;
}

// The plot of two series of the evaluation records.
std::string plot_svg(std::span<const EvalRecord> evals, const std::string& title, const Pair& series,
                     const char* ylabel) {
  const PlotArea area = plot_area(evals, series);
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">{3}</text>\n",
      PlotArea::W, PlotArea::H, PlotArea::W / 2, xml_escape(title));
  s += axes_svg(area, ylabel);
  s += tokens_axis_svg(area, evals);
  s += curves_svg(area, evals, series);
  s += legend_svg(series);
  s += "</svg>\n";
  return s;
}

}  // namespace

std::string loss_plot_svg(std::span<const EvalRecord> evals, const std::string& title) {
  return plot_svg(evals, title, kLoss, "Loss");
}

std::string reward_margin_plot_svg(std::span<const EvalRecord> evals, const std::string& title) {
  return plot_svg(evals, title, kMargin, "Reward margin");
}

}  // namespace llmft
