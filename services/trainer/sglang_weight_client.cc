// SGLang /update_weights_from_disk client (services/trainer/sglang_weight_client.h).
#include "services/trainer/sglang_weight_client.h"

#include <httplib.h>

#include <regex>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace fp8rl {
namespace {

struct HostPort {
  std::string host;
  int port = 80;
};

// http://HOST[:PORT][/]; HOST a name, an IPv4 address or a bracketed IPv6 address.
bool parse_url(const std::string& url, HostPort* out) {
  static const std::regex re(R"(http://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?/?)");
  std::smatch m;
  if (!std::regex_match(url, m, re)) return false;
  out->host = m[1].str();
  if (out->host.front() == '[') out->host = out->host.substr(1, out->host.size() - 2);
  if (m[2].matched) out->port = std::stoi(m[2].str());
  return out->port > 0 && out->port <= 65535;
}

}  // namespace

absl::Status check_rollout_url(const std::string& url) {
  HostPort hp;
  if (parse_url(url, &hp)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("'", url, "' is not a rollout server URL of the form http://HOST:PORT"));
}

absl::Status update_weights_from_disk(const std::string& url, const std::string& model_path,
                                      int64_t weight_version, double timeout_seconds) {
  HostPort hp;
  if (!parse_url(url, &hp)) return check_rollout_url(url);
  httplib::Client client(hp.host, hp.port);
  client.set_connection_timeout(10);
  const auto whole = static_cast<time_t>(timeout_seconds);
  const auto micros = static_cast<time_t>((timeout_seconds - double(whole)) * 1e6);
  client.set_read_timeout(whole, micros);
  client.set_write_timeout(whole, micros);
  // slime's UpdateWeightFromDisk body; SGLang fills the other fields with their defaults.
  const nlohmann::json body = {{"model_path", model_path},
                               {"weight_version", std::to_string(weight_version)}};
  const auto res = client.Post("/update_weights_from_disk", body.dump(), "application/json");
  if (!res) {
    return absl::UnavailableError(
        absl::StrCat(url, "/update_weights_from_disk: ", httplib::to_string(res.error())));
  }
  const nlohmann::json answer = nlohmann::json::parse(res->body, nullptr, false);
  const bool success = answer.is_object() && answer.contains("success") &&
                       answer["success"].is_boolean() && answer["success"].get<bool>();
  if (res->status == 200 && success) return absl::OkStatus();
  std::string message = res->body.substr(0, 512);
  if (answer.is_object() && answer.contains("message") && answer["message"].is_string())
    message = answer["message"].get<std::string>();
  return absl::FailedPreconditionError(
      absl::StrCat(url, "/update_weights_from_disk answered ", res->status, ": ", message));
}

}  // namespace fp8rl
