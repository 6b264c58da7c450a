#include "llmft/train/plot.h"

#include <fmt/format.h>

#include <algorithm>
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

}  // namespace

std::string loss_plot_svg(std::span<const EvalRecord> evals, const std::string& title) {
  constexpr double W = 760, H = 480, left = 72, right = 24, top = 78, bottom = 62;
  const double pw = W - left - right, ph = H - top - bottom;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">{3}</text>\n",
      W, H, W / 2, xml_escape(title));

  double xmax = 0, ymin = INFINITY, ymax = -INFINITY;
  for (const auto& e : evals) {
    xmax = std::max(xmax, e.epoch);
    for (double v : {e.train_loss, e.val_loss}) {
      if (std::isfinite(v)) {
        ymin = std::min(ymin, v);
        ymax = std::max(ymax, v);
      }
    }
  }
  if (!(xmax > 0)) xmax = 1;
  if (!std::isfinite(ymin)) ymin = 0, ymax = 1;
  const double ystep = nice_step(std::max(ymax - ymin, 1e-3), 5);
  double y0 = std::floor(ymin / ystep) * ystep, y1 = std::ceil(ymax / ystep) * ystep;
  if (y1 <= y0) y1 = y0 + ystep;
  const double xstep = nice_step(xmax, 6);
  const double x1 = std::ceil(xmax / xstep - 1e-9) * xstep;
  auto px = [&](double x) { return left + x / x1 * pw; };
  auto py = [&](double y) { return top + (1.0 - (y - y0) / (y1 - y0)) * ph; };

  // Frame, grid and bottom axis (epochs).
  s += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n", left,
      top, pw, ph);
  for (double x = 0; x <= x1 + xstep * 1e-6; x += xstep) {
    s += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#eee\"/>"
        "<line x1=\"{0:.1f}\" y1=\"{2}\" x2=\"{0:.1f}\" y2=\"{3}\" stroke=\"#333\"/>"
        "<text x=\"{0:.1f}\" y=\"{4}\" text-anchor=\"middle\">{5}</text>\n",
        px(x), top, top + ph, top + ph + 5, top + ph + 19, tick_label(x, xstep));
  }
  for (double y = y0; y <= y1 + ystep * 1e-6; y += ystep) {
    s += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#eee\"/>"
        "<line x1=\"{3}\" y1=\"{1:.1f}\" x2=\"{0}\" y2=\"{1:.1f}\" stroke=\"#333\"/>"
        "<text x=\"{4}\" y=\"{5:.1f}\" text-anchor=\"end\">{6}</text>\n",
        left, py(y), left + pw, left - 5, left - 8, py(y) + 4, tick_label(y, ystep));
  }
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">Epochs</text>\n", left + pw / 2,
                   H - 18);
  s += fmt::format(
      "<text x=\"18\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {0})\">Loss"
      "</text>\n",
      top + ph / 2);

  // Top axis: tokens seen at up to 6 evaluation points (tokens grow unevenly with batch lengths,
  // so the ticks sit where those evaluations happened).
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">Tokens seen</text>\n",
                   left + pw / 2, top - 30);
  if (!evals.empty()) {
    const size_t n = evals.size(), k = std::min<size_t>(n, 6);
    for (size_t i = 0; i < k; ++i) {
      const auto& e = evals[k == 1 ? 0 : i * (n - 1) / (k - 1)];
      s += fmt::format(
          "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#333\"/>"
          "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
          px(e.epoch), top - 5, top, top - 9,
          xml_escape(human_count(static_cast<double>(e.tokens_seen), "")));
    }
  }

  // The two curves, with a marker on every evaluation.
  struct Series {
    const char* name;
    const char* color;
    const char* dash;
    double EvalRecord::*field;
  };
  const Series series[] = {{"Training loss", "#1f77b4", "", &EvalRecord::train_loss},
                           {"Validation loss", "#ff7f0e", "6 3 2 3", &EvalRecord::val_loss}};
  for (const auto& se : series) {
    std::string pts;
    for (const auto& e : evals) pts += fmt::format("{:.1f},{:.1f} ", px(e.epoch), py(e.*se.field));
    s += fmt::format(
        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\" "
        "points=\"{}\"/>\n",
        se.color, se.dash, pts);
    for (const auto& e : evals) {
      s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"/>", px(e.epoch),
                       py(e.*se.field), se.color);
    }
    s += "\n";
  }
  if (evals.empty()) {
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">no evaluations"
                     "</text>\n",
                     left + pw / 2, top + ph / 2);
  }

  // Legend, top right inside the plot.
  const double lx = left + pw - 150, ly = top + 10;
  s += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"140\" height=\"46\" fill=\"white\" stroke=\"#ccc\"/>\n", lx,
      ly);
  for (int i = 0; i < 2; ++i) {
    const double yy = ly + 16 + 18 * i;
    s += fmt::format(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\" "
        "stroke-dasharray=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
        lx + 8, yy, lx + 36, yy, series[i].color, series[i].dash, lx + 42, yy + 4, series[i].name);
  }
  s += "</svg>\n";
  return s;
}

}  // namespace llmft
