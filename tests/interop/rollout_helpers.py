"""Helpers of test_rollout_server.py: a `fp8rl rollout` process, SSE parsing, slime's parsing of
/generate answers, and the sglang router's health poller."""
import json
import os
import re
import signal
import subprocess
import threading
import time

import requests


class RolloutProcess:
    """`fp8rl rollout` on an ephemeral port; the port comes from its log line."""

    def __init__(self, fp8rl_bin, log_path, model_dir, *flags):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [fp8rl_bin, "rollout", "--model-path", str(model_dir), "--port", "0",
             *map(str, flags)],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.time() + 60
        while self.port is None:
            assert self.proc.poll() is None, f"rollout exited early:\n{self.read_log()}"
            assert time.time() < deadline, f"no port in the log:\n{self.read_log()}"
            m = re.search(r"rollout: listening on http://[^:]+:(\d+)", self.read_log())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"rollout exited:\n{self.read_log()}"
            if "rollout: ready" in self.read_log():
                return
            time.sleep(0.02)
        raise AssertionError(f"not ready after {timeout} s:\n{self.read_log()}")

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))

    def terminate(self, timeout=60):
        """SIGTERM; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class SseStream:
    """An SSE response read event by event (one line iterator: iter_lines() buffers ahead, so a
    second one would lose data). Events are the `data:` payloads, as SGLang frames them
    (`data: X\\n\\n`)."""

    def __init__(self, resp):
        self.resp = resp
        self._lines = resp.iter_lines(decode_unicode=True)

    def _next(self):
        for line in self._lines:
            if line:
                assert line.startswith("data: "), line
                return line[len("data: "):]
        return None

    def first(self):
        event = self._next()
        assert event is not None, "the stream ended without an event"
        return json.loads(event)

    def rest(self):
        """Every remaining event, up to the end of the stream."""
        events = []
        while (event := self._next()) is not None:
            events.append(event)
        return events

    def close(self):
        self.resp.close()


def sse_events(resp):
    return SseStream(resp).rest()


def slime_parse(output):
    """What slime's sglang_rollout.generate reads from an answer (reference/slime.md §5.1)."""
    meta = output["meta_info"]
    if "output_token_logprobs" in meta:
        tokens = [item[1] for item in meta["output_token_logprobs"]]
        logprobs = [item[0] for item in meta["output_token_logprobs"]]
    else:
        tokens, logprobs = [], []
    status = {"length": "TRUNCATED", "abort": "ABORTED", "stop": "COMPLETED"}[
        meta["finish_reason"]["type"]]
    return {"text": output["text"], "tokens": tokens, "logprobs": logprobs, "status": status,
            "weight_version": meta["weight_version"], "prompt_tokens": meta["prompt_tokens"],
            "completion_tokens": meta["completion_tokens"], "cached_tokens": meta["cached_tokens"]}


class RouterHealthPoller:
    """The sglang router's worker health check (reference/sglang.md §6), with its intervals scaled
    down: at startup poll until the worker answers 2xx; then every `interval` a GET with a
    `timeout`, `success_threshold` consecutive 2xx make it healthy, `failure_threshold`
    consecutive failures (non-2xx, refused, timed out) unhealthy."""

    def __init__(self, url, endpoint="/health", interval=0.1, timeout=5.0, failure_threshold=3,
                 success_threshold=2):
        self.url, self.endpoint, self.interval, self.timeout = url, endpoint, interval, timeout
        self.failure_threshold, self.success_threshold = failure_threshold, success_threshold
        self.healthy = False
        self.history = []  # (time, status code or exception name, healthy after)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def _run(self):
        ok_run = fail_run = 0
        while not self._stop.is_set():
            try:
                code = requests.get(self.url + self.endpoint, timeout=self.timeout).status_code
                ok = 200 <= code < 300
            except requests.RequestException as e:
                code, ok = type(e).__name__, False
            ok_run, fail_run = (ok_run + 1, 0) if ok else (0, fail_run + 1)
            if ok_run >= self.success_threshold:
                self.healthy = True
            if fail_run >= self.failure_threshold:
                self.healthy = False
            self.history.append((time.time(), code, self.healthy))
            self._stop.wait(self.interval)

    def wait_for(self, healthy, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.healthy == healthy and self.history:
                return True
            time.sleep(0.02)
        return False


def post_json(url, path, body, **kw):
    return requests.post(url + path, data=json.dumps(body),
                         headers={"Content-Type": "application/json", **kw.pop("headers", {})},
                         **kw)


def env_path(var):
    path = os.environ.get(var)
    if not path or not os.path.exists(path):
        raise AssertionError(f"{var} is not set; run through ctest")
    return path
