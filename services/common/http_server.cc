#include "services/common/http_server.h"

#include <chrono>

#include "core/logging.h"
#include "services/common/metrics.h"

namespace fp8rl {

HttpServer::HttpServer(HttpServerOptions options) : options_(std::move(options)) {
  const int threads = std::max(1, options_.threads);
  server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_.set_payload_max_length(options_.max_body_bytes);
  // httplib's default also sets SO_REUSEPORT, which lets a second server share a busy port
  // silently; keep only SO_REUSEADDR (quick restarts), so a taken port fails to bind.
  server_.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_.set_logger([name = options_.name](const httplib::Request& req,
                                            const httplib::Response& res) {
    log().debug("{}: {} {} -> {}", name, req.method, req.path, res.status);
  });
  server_.set_exception_handler([name = options_.name](const httplib::Request& req,
                                                       httplib::Response& res,
                                                       std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    log().error("{}: {} {} threw: {}", name, req.method, req.path, what);
    reply_json(res, 500, {{"error", {{"message", what}, {"code", 500}}}});
  });
}

HttpServer::~HttpServer() { stop(); }

absl::Status HttpServer::start() {
  if (options_.port == 0) {
    port_ = server_.bind_to_any_port(options_.host);
  } else {
    port_ = server_.bind_to_port(options_.host, options_.port) ? options_.port : -1;
  }
  if (port_ <= 0) {
    return absl::UnavailableError(std::string(options_.name) + ": cannot bind " + options_.host +
                                  ":" + std::to_string(options_.port));
  }
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  // The socket already listens (connections queue); wait for the accept loop so that a stop()
  // right after start() is not lost.
  while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  log().info("{}: listening on http://{}:{}", options_.name, options_.host, port_);
  return absl::OkStatus();
}

void HttpServer::stop() {
  if (thread_.joinable()) {
    server_.stop();
    thread_.join();
  }
}

void reply_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void add_probe_routes(HttpServer& server, std::function<bool()> ready,
                      const MetricsRegistry* metrics) {
  server.routes().Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok", "text/plain");
  });
  server.routes().Get("/readyz", [ready](const httplib::Request&, httplib::Response& res) {
    const bool ok = ready();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ready" : "not ready", "text/plain");
  });
  if (metrics) {
    server.routes().Get("/metrics", [metrics](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics->render(), "text/plain; version=0.0.4; charset=utf-8");
    });
  }
}

}  // namespace fp8rl
