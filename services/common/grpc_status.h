// absl::Status → grpc::Status. The canonical codes share their numbers, so the mapping is exact;
// the message travels unchanged (it names the offending field for INVALID_ARGUMENT).
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace fp8rl {

inline grpc::Status to_grpc_status(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace fp8rl
