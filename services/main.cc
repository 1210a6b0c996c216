// The fp8rl binary: one entrypoint, one subcommand per service or tool.
#include <CLI/CLI.hpp>

#include "services/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"fp8rl: FP8/INT4 RL post-training (trainer, rollout server, orchestrator, tools)",
               "fp8rl"};
  app.require_subcommand(1);
  // Every flag shows its default in --help, in every subcommand (they inherit option_defaults).
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", "fp8rl 0.1.0");
  int rc = 0;
  fp8rl::register_convert(app, rc);
  fp8rl::register_tiny_model(app, rc);
  fp8rl::register_inspect(app, rc);
  fp8rl::register_trainer(app, rc);
  fp8rl::register_rollout(app, rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // A usage error (unknown flag, missing or unparsable value) exits 2, as getopt tools do;
    // --help and --version exit 0.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return rc;
}
