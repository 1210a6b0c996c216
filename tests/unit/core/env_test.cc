// Environment knobs: parsing, defaults and caching.
#include <cstdlib>

#include "core/env.h"
#include "tests/catch.h"

using namespace fp8rl;

TEST_CASE("env knobs parse and cache", "[env]") {
  ::setenv("FP8RL_TEST_KNOB_B", "1", 1);
  ::setenv("FP8RL_TEST_KNOB_D", "1e-12", 1);
  env_reset_cache_for_testing();
  CHECK(env_bool("FP8RL_TEST_KNOB_B", false));
  CHECK(env_double("FP8RL_TEST_KNOB_D", 0) == 1e-12);
  CHECK(env_long("FP8RL_TEST_KNOB_UNSET", 42) == 42);
  ::setenv("FP8RL_TEST_KNOB_B", "0", 1);
  CHECK(env_bool("FP8RL_TEST_KNOB_B", false));  // cached: read once
  env_reset_cache_for_testing();
  CHECK(!env_bool("FP8RL_TEST_KNOB_B", true));
}
