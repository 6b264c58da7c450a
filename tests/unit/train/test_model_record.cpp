// The model half of a run's config.json: model/config's JSON mapping of Gpt2Config and the
// "model" record a resumed run rebuilds its model from. Round trips, and clear errors for the
// hand-edited or truncated files a resume may meet.
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/model/config.h"
#include "llmft/train/model_source.h"
#include "test_util.h"

using namespace llmft;
using nlohmann::json;

namespace {

Gpt2Config odd_config() {
  Gpt2Config c;
  c.V = 301;
  c.maxT = 64;
  c.C = 48;
  c.L = 3;
  c.NH = 4;
  c.tied = true;
  c.dropout = 0.25f;
  return c;
}

// The Error gpt2_config_from_json throws for `j`, or "" when it throws none.
std::string config_error(const json& j) {
  try {
    gpt2_config_from_json(j, "run/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ModelConfigJson, RoundTripsEveryField) {
  const Gpt2Config c = odd_config();
  const json j = to_json(c);
  // The keys are a file format: runs written earlier must still resume.
  EXPECT_EQ(j, json::parse(R"({"V": 301, "maxT": 64, "C": 48, "L": 3, "NH": 4, "tied": true,
                               "dropout": 0.25})"));
  const Gpt2Config back = gpt2_config_from_json(json::parse(j.dump()), "test");
  EXPECT_EQ(back.V, c.V);
  EXPECT_EQ(back.maxT, c.maxT);
  EXPECT_EQ(back.C, c.C);
  EXPECT_EQ(back.L, c.L);
  EXPECT_EQ(back.NH, c.NH);
  EXPECT_EQ(back.tied, c.tied);
  EXPECT_EQ(back.dropout, c.dropout);
}

TEST(ModelConfigJson, NamesTheFileAndTheKeyOfABadConfig) {
  const json good = to_json(odd_config());
  ASSERT_EQ(config_error(good), "");

  json missing = good;
  missing.erase("NH");
  EXPECT_NE(config_error(missing).find("run/config.json"), std::string::npos);
  EXPECT_NE(config_error(missing).find("\"NH\""), std::string::npos) << config_error(missing);

  json text = good;
  text["C"] = "48";
  EXPECT_NE(config_error(text).find("\"C\" is \"48\", expected an integer"), std::string::npos)
      << config_error(text);

  json fraction = good;  // nlohmann would silently truncate 2.5 to 2
  fraction["L"] = 2.5;
  EXPECT_NE(config_error(fraction).find("\"L\""), std::string::npos) << config_error(fraction);

  json tied = good;
  tied["tied"] = 1;
  EXPECT_NE(config_error(tied).find("\"tied\""), std::string::npos) << config_error(tied);

  json shape = good;  // 50 channels do not split into 4 heads
  shape["C"] = 50;
  EXPECT_NE(config_error(shape).find("invalid GPT-2 shape"), std::string::npos)
      << config_error(shape);

  EXPECT_NE(config_error(json::array({1, 2})).find("expected a JSON object"), std::string::npos);
}

TEST(ModelRecord, RoundTripsWhatAResumeNeeds) {
  LoadedModel m;
  m.model = std::make_unique<Gpt2>(odd_config());
  m.spec = "/models/gpt2-medium";
  m.description = "gpt2-medium (pretrained weights from /models/gpt2-medium; ...)";
  m.pretrained = true;
  m.fallback = false;
  const json record = model_record(m, /*parameters=*/12345);
  EXPECT_EQ(record["parameters"], 12345);
  const json run_config = json::parse(json{{"model", record}}.dump());

  const LoadedModel back = model_from_record(run_config, "run/config.json");
  EXPECT_EQ(back.cfg().C, m.cfg().C);
  EXPECT_EQ(back.cfg().NH, m.cfg().NH);
  EXPECT_EQ(back.cfg().tied, m.cfg().tied);
  EXPECT_EQ(back.cfg().dropout, m.cfg().dropout);
  EXPECT_EQ(back.spec, m.spec);
  EXPECT_EQ(back.description, m.description);
  EXPECT_EQ(back.pretrained, m.pretrained);
  EXPECT_EQ(back.fallback, m.fallback);
  EXPECT_FALSE(back.random_init);  // the checkpoint has the weights
  ASSERT_NE(back.tokenizer, nullptr);
  EXPECT_EQ(back.tokenizer->vocab_size(), 50257);
}

TEST(ModelRecord, ABadOrTruncatedRecordIsAnErrorNamingTheFile) {
  LoadedModel m;
  m.model = std::make_unique<Gpt2>(odd_config());
  m.spec = "random:tiny";
  m.description = "random:tiny";
  const json good = {{"model", model_record(m, 1)}};
  auto error_of = [](const json& j) -> std::string {
    try {
      model_from_record(j, "run/config.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  ASSERT_EQ(error_of(good), "");

  // A truncated file parses (without exceptions) to a discarded value.
  const std::string text = good.dump(2);
  const json truncated = json::parse(text.substr(0, text.size() / 2), nullptr, false);
  EXPECT_NE(error_of(truncated).find("run/config.json: no \"model\" record"), std::string::npos)
      << error_of(truncated);

  json no_flag = good;
  no_flag["model"].erase("pretrained");
  EXPECT_NE(error_of(no_flag).find("model.pretrained is missing"), std::string::npos)
      << error_of(no_flag);

  json bad_config = good;
  bad_config["model"]["config"].erase("V");
  EXPECT_NE(error_of(bad_config).find("run/config.json: the model configuration has no \"V\""),
            std::string::npos)
      << error_of(bad_config);
}
