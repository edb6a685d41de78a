"""Runs the KServe istio-dex sample's own get_istio_auth_session against a gateway.

Usage: sample_login.py URL USERNAME PASSWORD  (prints the returned auth session as JSON).
The function is taken from the sample README at run time, so what runs is the published code.
"""

import json
import re
import sys
from pathlib import Path

README = Path(__file__).parent / "upstream" / "istio-dex-README.md"


def load_sample_function():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    source = next(b for b in blocks if "def get_istio_auth_session" in b)
    namespace = {}
    exec(compile(source, str(README), "exec"), namespace)
    return namespace["get_istio_auth_session"]


if __name__ == "__main__":
    url, username, password = sys.argv[1:4]
    try:
        session = load_sample_function()(url=url, username=username, password=password)
    except RuntimeError as error:
        print(json.dumps({"error": str(error)}))
        sys.exit(0)
    print(json.dumps(session))
