// The HTTP/1.1 server every fp8rl service uses (cpp-httplib underneath): binds before it reports
// success, serves on its own thread pool, and stops cleanly. Services register their routes on
// routes() before start(); add_probe_routes() adds the Kubernetes/Prometheus trio.
#pragma once

#include <httplib.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace fp8rl {

class MetricsRegistry;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;                               // 0: an ephemeral port (see HttpServer::port())
  int threads = 16;                           // concurrent requests in flight (long polls included)
  size_t max_body_bytes = 64ull << 20;        // larger bodies get 413 before a handler runs
  std::string name = "http";                  // for log lines
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();  // stop()s
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Register handlers here before start().
  httplib::Server& routes() { return server_; }

  // Binds host:port (Unavailable naming the address when that fails) and serves on a thread.
  absl::Status start();
  // The bound port (after start()).
  int port() const { return port_; }
  // Stops accepting and waits for the serving thread. Idempotent.
  void stop();

 private:
  HttpServerOptions options_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

// JSON reply with the given status.
void reply_json(httplib::Response& res, int status, const nlohmann::json& body);

// GET /healthz (200 "ok" while the process serves: liveness), GET /readyz (200 "ready" when
// ready() holds, else 503 "not ready": readiness), GET /metrics (the registry's exposition text).
void add_probe_routes(HttpServer& server, std::function<bool()> ready,
                      const MetricsRegistry* metrics);

}  // namespace fp8rl
