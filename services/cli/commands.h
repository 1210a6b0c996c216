// Subcommands of the fp8rl binary. Each register_* adds its CLI11 subcommand with its own flags
// and sets the callback that runs it; the callback returns the process exit code through `rc`.
#pragma once

#include <CLI/CLI.hpp>

namespace fp8rl {

void register_convert(CLI::App& app, int& rc);
void register_tiny_model(CLI::App& app, int& rc);
void register_inspect(CLI::App& app, int& rc);
void register_trainer(CLI::App& app, int& rc);
void register_rollout(CLI::App& app, int& rc);

}  // namespace fp8rl
