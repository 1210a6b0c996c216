// `fp8rl trainer`: the trainer daemon. Flags are checked before anything starts (exit 2); then
// HTTP probes and gRPC come up while the model loads (LOADING, health NOT_SERVING), the service
// turns READY/SERVING, and SIGTERM or SIGINT drains it: health NOT_SERVING, readiness 503, the
// call in flight finishes, exit 0.
#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <memory>

#include "core/hf_config.h"
#include "core/logging.h"
#include "core/status.h"
#include "services/cli/commands.h"
#include "services/common/http_server.h"
#include "services/common/metrics.h"
#include "services/common/signals.h"
#include "services/trainer/trainer_flags.h"
#include "services/trainer/trainer_metrics.h"
#include "services/trainer/trainer_service.h"

namespace fp8rl {
namespace {

// Exit codes: 0 after a drain, 1 when serving fails (a port taken, weights that do not load),
// 2 for flags fp8rl cannot run with.
constexpr int kExitServeError = 1;
constexpr int kExitBadFlags = 2;

// Checks that need the file system, so that a mistyped path fails before anything is served.
absl::Status check_paths(const TrainerFlags& f) {
  namespace fs = std::filesystem;
  auto config = load_model_config(f.model_path);
  if (!config.ok()) return annotate(config.status(), "--model-path");
  if (!f.ref_load.empty() && !fs::is_directory(f.ref_load))
    return absl::InvalidArgumentError("--ref-load " + f.ref_load + " is not a folder");
  return absl::OkStatus();
}

int run_trainer(const TrainerFlags& flags) {
  auto setup = resolve_trainer_flags(flags);
  absl::Status paths = setup.ok() ? check_paths(flags) : setup.status();
  if (!paths.ok()) {
    FP8RL_LOG_ERROR("fp8rl trainer: {}", std::string(paths.message()));
    return kExitBadFlags;
  }
  // Before any thread starts, so only wait_for_shutdown_signal() sees SIGTERM/SIGINT.
  block_shutdown_signals();

  MetricsRegistry registry;
  TrainerMetrics metrics(&registry);
  TrainerService service(flags, *std::move(setup), &metrics);

  HttpServerOptions http_options;
  http_options.host = flags.host;
  http_options.port = flags.http_port;
  http_options.name = "trainer-http";
  HttpServer http(http_options);
  add_probe_routes(
      http, [&service] { return service.ready(); }, &registry);
  if (const absl::Status st = http.start(); !st.ok()) {
    FP8RL_LOG_ERROR("fp8rl trainer: {}", std::string(st.message()));
    return kExitServeError;
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  const std::string address = flags.host + ":" + std::to_string(flags.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &grpc_port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(1 << 30);  // a global batch of long samples
  builder.SetMaxSendMessageSize(1 << 30);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    FP8RL_LOG_ERROR("fp8rl trainer: cannot serve gRPC on {}", address);
    return kExitServeError;
  }
  // Health answers for the server ("") and for fp8rl.v1.Trainer by name; the default service
  // starts SERVING, so this flips it while the model loads (a window of microseconds).
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(v1::Trainer::service_full_name(), false);
  health->SetServingStatus(false);
  FP8RL_LOG_INFO("trainer-grpc: listening on {}:{}", flags.host, grpc_port);

  // Refuses new calls; what is still open after a grace period is cancelled: health Watch
  // streams never end by themselves, and Shutdown() without a deadline would wait for them.
  auto shutdown = [&server] {
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  };
  if (const absl::Status st = service.load(); !st.ok()) {
    FP8RL_LOG_ERROR("fp8rl trainer: loading failed: {}", st.ToString());
    shutdown();
    return kExitServeError;
  }
  health->SetServingStatus(true);
  FP8RL_LOG_INFO("fp8rl trainer: ready");

  const int sig = wait_for_shutdown_signal();
  FP8RL_LOG_INFO("fp8rl trainer: signal {}: draining", sig);
  service.drain();
  health->SetServingStatus(false);
  service.wait_idle();  // the step in flight finishes
  shutdown();
  http.stop();
  FP8RL_LOG_INFO("fp8rl trainer: stopped");
  return 0;
}

}  // namespace

void register_trainer(CLI::App& app, int& rc) {
  auto flags = std::make_shared<TrainerFlags>();
  CLI::App* sub = app.add_subcommand(
      "trainer",
      "Serve the RL trainer: gRPC fp8rl.v1.Trainer (Train, ComputeLogProbs, SyncWeights, "
      "checkpoints, Status) + grpc.health.v1; HTTP /healthz /readyz /metrics");
  add_trainer_flags(sub, flags.get());
  sub->callback([flags, &rc] { rc = run_trainer(*flags); });
}

}  // namespace fp8rl
