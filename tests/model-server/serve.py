"""Serves the joblib model as `sklearn-iris` with kserve.ModelServer (v1 and v2 REST, no gRPC).

Usage: serve.py MODEL_FILE HTTP_PORT (positional: KServe parses sys.argv for its own --flags).
With MODEL_SERVER_EXIT_ON_STDIN_EOF=1 it exits when its stdin closes (its starter is gone).
"""

import os
import sys
import threading

import joblib
import kserve
import uvicorn
from kserve.utils.utils import get_predict_input, get_predict_response


class LoopbackConfig(uvicorn.Config):
    """KServe 0.21 hard-codes host="0.0.0.0" in RESTServer; tests must bind loopback only."""

    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


uvicorn.Config = LoopbackConfig


class SklearnIris(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        # The same three steps as KServe's own sklearnserver, so v1 and v2 answers match it.
        result = self.model.predict(get_predict_input(payload))
        return get_predict_response(payload, result, self.name)

def exit_with_parent() -> None:
    """The Rust starter holds our stdin open; EOF means it is gone, even if it was SIGKILLed."""
    sys.stdin.buffer.read()
    os._exit(0)


if __name__ == "__main__":
    if os.environ.get("MODEL_SERVER_EXIT_ON_STDIN_EOF") == "1":
        threading.Thread(target=exit_with_parent, daemon=True).start()
    model = SklearnIris("sklearn-iris", sys.argv[1])
    model.load()
    kserve.ModelServer(http_port=int(sys.argv[2]), enable_grpc=False, workers=1).start([model])
