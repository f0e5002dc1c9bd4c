"""A stand-in for `vllm serve` (vLLM needs a GPU): the OpenAI-compatible routes the openai
backend uses, answering as vLLM's server does, and a log of every request for the tests.

    python tests/feedback/model_server.py --model PATH --served-model-name NAME

It serves NAME (from PATH) and, with runtime LoRA updating on (the default, as with
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), adapters loaded through ``/v1/load_lora_adapter``:

* ``GET /v1/models``: the base (``root`` = PATH) and each adapter (``parent`` = NAME);
* ``POST /v1/chat/completions``: ``model`` must be served (404 "The model `x` does not
  exist." otherwise); the answer names the model that gave it, and differs per request;
* ``POST /v1/load_lora_adapter``: 400 when the name is loaded already, 404 when the path holds no
  adapter; ``POST /v1/unload_lora_adapter``: 400 for a name it does not hold;
* ``GET /log``: the requests so far (method, path, JSON body); ``POST /restart``: forget the
  adapters, as a restarted server does.

``--no-runtime-lora`` answers the adapter routes with FastAPI's bare 404, as vLLM does without
VLLM_ALLOW_RUNTIME_LORA_UPDATING; ``--flavour llamacpp`` has no adapter routes either and
serves NAME as llama.cpp's ``--alias``; ``--answer-as X`` answers every request as model X (a
misrouted proxy). It binds a free loopback port and prints it on its first line.

Written with the standard library's http.server: the tests need a dozen lines of routing, and
no web framework is a dependency of the project.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.adapters: dict[str, str] = {}  # name -> path
        self.log: list[dict[str, Any]] = []
        self.counter = itertools.count(1)
        self.lock = threading.Lock()


def handler_for(state: State) -> type[BaseHTTPRequestHandler]:
    args = state.args

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:  # quiet: the log route is the record
            pass

        def _send(self, status: int, body: Any) -> None:
            raw = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send(status, {"object": "error", "message": message, "type": kind,
                                "code": status})  # fmt: skip

        def do_GET(self) -> None:
            if self.path == "/log":
                with state.lock:
                    return self._send(200, list(state.log))
            with state.lock:
                state.log.append({"method": "GET", "path": self.path, "body": None})
            if self.path != "/v1/models":
                return self._send(404, {"detail": "Not Found"})
            return self._send(200, {"object": "list", "data": self._models()})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                if self.path != "/restart":
                    state.log.append({"method": "POST", "path": self.path, "body": body})
                routes = {
                    "/v1/chat/completions": self._chat,
                    "/v1/load_lora_adapter": self._load,
                    "/v1/unload_lora_adapter": self._unload,
                    "/restart": self._restart,
                }
                route = routes.get(self.path)
                adapter_route = self.path.endswith("_lora_adapter")
                if route is None or (adapter_route and not runtime_lora()):
                    return self._send(404, {"detail": "Not Found"})
                return route(body)

        def _models(self) -> list[dict[str, Any]]:
            base = {"id": args.served_model_name, "object": "model", "owned_by": "vllm",
                    "root": args.model, "parent": None}  # fmt: skip
            if args.flavour == "llamacpp":
                base = {"id": args.served_model_name, "object": "model", "owned_by": "llamacpp"}
            adapters = [
                {"id": name, "object": "model", "owned_by": "vllm", "root": path,
                 "parent": args.served_model_name}
                for name, path in state.adapters.items()
            ]  # fmt: skip
            return [base, *adapters]

        def _chat(self, body: dict[str, Any]) -> None:
            model = body.get("model")
            if args.flavour != "llamacpp" and model not in {m["id"] for m in self._models()}:
                return self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
            question = body["messages"][-1]["content"]
            if body.get("max_tokens") == 1:
                text, finish, tokens = "Hello", "length", 1
            else:
                text = f"{model} answers #{next(state.counter)}: {question[:40]}"
                finish, tokens = "stop", len(text.split())
            return self._send(200, {
                "id": f"chatcmpl-{next(state.counter)}", "object": "chat.completion",
                "model": args.answer_as or model,
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": len(question.split()), "completion_tokens": tokens},
            })  # fmt: skip

        def _load(self, body: dict[str, Any]) -> None:
            name, path = body.get("lora_name"), body.get("lora_path")
            if not name or not path:
                return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.",
                                   "InvalidUserInput")  # fmt: skip
            if name in state.adapters:
                return self._error(400, f"The lora adapter '{name}' has already been loaded.",
                                   "InvalidUserInput")  # fmt: skip
            if not (Path(path) / "adapter_config.json").is_file():
                return self._error(404, f"No adapter found for {path}", "NotFoundError")
            state.adapters[name] = path
            return self._send(200, f"Success: LoRA adapter '{name}' added successfully.")

        def _unload(self, body: dict[str, Any]) -> None:
            name = body.get("lora_name")
            if name not in state.adapters:
                return self._error(400, f"The lora adapter '{name}' cannot be found.",
                                   "InvalidUserInput")  # fmt: skip
            del state.adapters[name]
            return self._send(200, f"Success: LoRA adapter '{name}' removed successfully.")

        def _restart(self, _: dict[str, Any]) -> None:
            state.adapters.clear()
            return self._send(200, {"restarted": True})

    def runtime_lora() -> bool:
        return not args.no_runtime_lora and args.flavour == "vllm"

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--flavour", choices=["vllm", "llamacpp"], default="vllm")
    parser.add_argument("--no-runtime-lora", action="store_true")
    parser.add_argument("--answer-as", default="")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(State(args)))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
