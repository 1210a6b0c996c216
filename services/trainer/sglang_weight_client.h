// The trainer's side of SGLang's disk weight update: POST <rollout>/update_weights_from_disk with
// the body slime sends ({"model_path", "weight_version"}), and the check of SGLang's answer.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace fp8rl {

// A rollout server base URL fp8rl can reach: http://HOST[:PORT] with an optional trailing slash
// (cpp-httplib here has no TLS). InvalidArgument saying what is wrong otherwise.
absl::Status check_rollout_url(const std::string& url);

// Asks the server at `url` to load the HF folder `model_path` as `weight_version`. OK when it
// answers 200 with {"success": true}; Unavailable when it cannot be reached or times out after
// `timeout_seconds`; FailedPrecondition with the server's message when it refuses (SGLang: 400,
// success false).
absl::Status update_weights_from_disk(const std::string& url, const std::string& model_path,
                                      int64_t weight_version, double timeout_seconds);

}  // namespace fp8rl
