// The fp8rl logger.
#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "core/env.h"

namespace fp8rl {

spdlog::logger& log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt("fp8rl");
    l->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
    auto level = env_string("FP8RL_LOG_LEVEL");
    l->set_level(level ? spdlog::level::from_str(*level) : spdlog::level::info);
    return l;
  }();
  return *logger;
}

}  // namespace fp8rl
