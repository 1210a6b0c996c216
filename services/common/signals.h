// Graceful shutdown for long-lived services. Call block_shutdown_signals() first thing in main,
// before any thread starts, so every thread inherits the mask and SIGTERM/SIGINT are delivered
// only to the thread that waits for them; then start the servers and wait_for_shutdown_signal().
#pragma once

namespace fp8rl {

void block_shutdown_signals();
// Blocks until SIGTERM or SIGINT arrives (or request_shutdown() is called); returns its number.
int wait_for_shutdown_signal();
// Makes wait_for_shutdown_signal() return, as a SIGTERM would (e.g. from a fatal server error).
void request_shutdown();

}  // namespace fp8rl
