// SGLang's logit processors on hand-computed rows: frequency/presence/repetition penalties over
// the generated tokens, the min_new_tokens mask, logit_bias, and that they leave a row alone when
// unset.
#include "inference/logit_processors.h"

#include <cmath>
#include <limits>
#include <vector>

#include "tests/catch.h"

using namespace fp8rl;

TEST_CASE("logit processors: penalties, min_new_tokens mask and logit_bias") {
  const std::vector<float> z{2.f, -1.f, 0.5f, 3.f, -2.f};
  const std::unordered_map<int32_t, int32_t> counts{{0, 3}, {1, 1}, {4, 2}};
  const std::vector<int32_t> eos{4};

  SamplingParams p;
  CHECK_FALSE(has_logit_processors(p));
  std::vector<float> row = z;
  apply_logit_processors(p, {&counts, 6, eos}, row);
  CHECK(row == z);

  p.frequency_penalty = 0.5;
  p.presence_penalty = 0.25;
  CHECK(has_logit_processors(p));
  row = z;
  apply_logit_processors(p, {&counts, 6, eos}, row);
  CHECK(row[0] == (2.f - 0.5f * 3.f) - 0.25f);
  CHECK(row[1] == (-1.f - 0.5f * 1.f) - 0.25f);
  CHECK(row[2] == 0.5f);  // never generated
  CHECK(row[3] == 3.f);
  CHECK(row[4] == (-2.f - 0.5f * 2.f) - 0.25f);

  // Repetition: positive logits of seen tokens are divided, negative ones multiplied.
  SamplingParams rep;
  rep.repetition_penalty = 1.5;
  row = z;
  apply_logit_processors(rep, {&counts, 6, eos}, row);
  CHECK(row[0] == 2.f / 1.5f);
  CHECK(row[1] == -1.f * 1.5f);
  CHECK(row[2] == 0.5f);
  CHECK(row[4] == -2.f * 1.5f);

  // min_new_tokens masks stop_token_ids and EOS until enough tokens exist; then nothing.
  SamplingParams min_new;
  min_new.min_new_tokens = 3;
  min_new.stop_token_ids = {2};
  row = z;
  apply_logit_processors(min_new, {nullptr, 2, eos}, row);
  CHECK(row[2] == -std::numeric_limits<float>::infinity());
  CHECK(row[4] == -std::numeric_limits<float>::infinity());
  CHECK(row[0] == 2.f);
  row = z;
  apply_logit_processors(min_new, {nullptr, 3, eos}, row);
  CHECK(row == z);

  // logit_bias adds; ids outside the row are ignored.
  SamplingParams bias;
  bias.logit_bias = {{1, 4.f}, {99, 1.f}, {-3, 1.f}};
  row = z;
  apply_logit_processors(bias, {nullptr, 0, eos}, row);
  CHECK(row[1] == 3.f);
  CHECK(row[0] == 2.f);
}

TEST_CASE("logit processors: SGLang's ranges are validated with its messages") {
  const auto message = [](auto edit) {
    SamplingParams p;
    edit(p);
    return std::string(p.validate().message());
  };
  CHECK(message([](SamplingParams& p) { p.frequency_penalty = 2.5; }) ==
        "frequency_penalty must be in [-2, 2], got 2.5.");
  CHECK(message([](SamplingParams& p) { p.presence_penalty = -3; }) ==
        "presence_penalty must be in [-2, 2], got -3.");
  CHECK(message([](SamplingParams& p) { p.repetition_penalty = 0; }) ==
        "repetition_penalty must be in (0, 2] (1.0 = no penalty), got 0.");
  CHECK(message([](SamplingParams& p) { p.min_new_tokens = -1; }) ==
        "min_new_tokens must be in [0, max_new_tokens], got -1.");
  CHECK(message([](SamplingParams& p) {
          p.max_new_tokens = 4;
          p.min_new_tokens = 5;
        }) == "min_new_tokens must be in [0, max_new_tokens(4)], got 5.");
  CHECK(message([](SamplingParams& p) { p.logit_bias = {{3, NAN}}; }).find("logit_bias") == 0);
}
