// Logging: one spdlog logger named "fp8rl" writing to stderr. Level from FP8RL_LOG_LEVEL.
#pragma once

#include <spdlog/spdlog.h>

namespace fp8rl {

// The process-wide logger; created on first use, thread-safe.
spdlog::logger& log();

}  // namespace fp8rl

#define FP8RL_LOG_INFO(...) ::fp8rl::log().info(__VA_ARGS__)
#define FP8RL_LOG_WARN(...) ::fp8rl::log().warn(__VA_ARGS__)
#define FP8RL_LOG_ERROR(...) ::fp8rl::log().error(__VA_ARGS__)
#define FP8RL_LOG_DEBUG(...) ::fp8rl::log().debug(__VA_ARGS__)
