// The one getter for environment knobs (NVTE_*, FP8_QUANT_*, OPEN_TRAINING_INT4_*, FP8RL_*).
// Each variable is read from the process environment once, on first use, and cached.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace fp8rl {

// Raw value of an environment knob, or nullopt when unset. Thread-safe.
std::optional<std::string> env_string(std::string_view name);
// "1"/"true"/"yes"/"on" are true, "0"/"false"/"no"/"off"/"" false; other values abort with the name
// (a mistyped knob must not silently select a numerics mode).
bool env_bool(std::string_view name, bool default_value);
// Parses a float; aborts naming the knob when the value is not a number.
double env_double(std::string_view name, double default_value);
long env_long(std::string_view name, long default_value);

// Forgets cached values so tests can change the environment between cases.
void env_reset_cache_for_testing();

}  // namespace fp8rl
