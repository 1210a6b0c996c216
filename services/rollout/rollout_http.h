// What the rollout server's handlers share: SGLang's JSON answers (keys in SGLang's order, text
// always valid UTF-8) and request bodies parsed the way FastAPI rejects them.
#pragma once

#include <httplib.h>

#include <optional>

#include "nlohmann/json.hpp"
#include "services/rollout/sglang_protocol.h"

namespace fp8rl {

// `body` as application/json with `status`.
void reply(httplib::Response& res, int status, const ojson& body);
// The request body as JSON; on malformed JSON answers FastAPI's 400 and returns nullopt. An empty
// body is {} when `empty_is_object` (endpoints whose body is optional).
std::optional<nlohmann::json> parse_body(const httplib::Request& req, httplib::Response& res,
                                         bool empty_is_object);

}  // namespace fp8rl
