// Includes Catch2 whichever major version is installed: v2 (Debian 12) or v3 (Ubuntu 24.04).
#pragma once
#if defined(FP8RL_CATCH3)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_session.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif

#include "absl/status/status.h"

// Requires an absl::Status to be OK, printing it when it is not.
#define REQUIRE_OK(expr)            \
  do {                              \
    const absl::Status s_ = (expr); \
    INFO(s_.ToString());            \
    REQUIRE(s_.ok());               \
  } while (0)
