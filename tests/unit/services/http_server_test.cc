// The server as a client sees it: probes, body limits, handler exceptions, clean stop.
#include "services/common/http_server.h"

#include "services/common/metrics.h"
#include "tests/catch.h"

namespace fp8rl {
namespace {

TEST_CASE("probe routes answer liveness, readiness and metrics", "[http]") {
  MetricsRegistry metrics;
  metrics.counter("requests_total", "requests").inc(2);
  std::atomic<bool> ready{false};
  HttpServer server({.name = "test"});
  add_probe_routes(server, [&] { return ready.load(); }, &metrics);
  REQUIRE(server.start().ok());
  httplib::Client cli("127.0.0.1", server.port());

  auto r = cli.Get("/healthz");
  REQUIRE(r);
  CHECK(r->status == 200);
  r = cli.Get("/readyz");
  REQUIRE(r);
  CHECK(r->status == 503);
  ready = true;
  r = cli.Get("/readyz");
  REQUIRE(r);
  CHECK(r->status == 200);
  r = cli.Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0) == 0);
  CHECK(r->body.find("requests_total 2\n") != std::string::npos);
  server.stop();
  CHECK_FALSE(cli.Get("/healthz"));
}

TEST_CASE("oversized bodies get 413, a throwing handler 500 JSON, and the server keeps serving",
          "[http]") {
  HttpServer server({.max_body_bytes = 1024, .name = "test"});
  server.routes().Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(req.body, "text/plain");
  });
  server.routes().Get("/boom", [](const httplib::Request&, httplib::Response&) {
    throw std::runtime_error("kaput");
  });
  REQUIRE(server.start().ok());
  httplib::Client cli("127.0.0.1", server.port());
  auto r = cli.Post("/echo", std::string(4096, 'x'), "text/plain");
  REQUIRE(r);
  CHECK(r->status == 413);
  r = cli.Get("/boom");
  REQUIRE(r);
  CHECK(r->status == 500);
  CHECK(nlohmann::json::parse(r->body)["error"]["message"] == "kaput");
  r = cli.Post("/echo", "hello", "text/plain");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "hello");
}

TEST_CASE("a port already taken is reported, not ignored", "[http]") {
  HttpServer first({.name = "first"});
  REQUIRE(first.start().ok());
  HttpServer second({.port = first.port(), .name = "second"});
  absl::Status s = second.start();
  CHECK(s.code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(s.message()).find(std::to_string(first.port())) != std::string::npos);
}

}  // namespace
}  // namespace fp8rl
