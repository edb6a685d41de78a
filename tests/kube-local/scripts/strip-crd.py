#!/usr/bin/env python3
"""Copies an upstream CRD YAML into crds/ as JSON with every `description` text removed.

Usage: strip-crd.py SOURCE.yaml OUT.json
Only string-valued `description` keys go (a schema property *named* description is a map and stays);
everything else, CEL `x-kubernetes-validations` included, is kept as upstream wrote it.
"""
import json
import sys

import yaml


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


with open(sys.argv[1]) as src:
    doc = yaml.safe_load(src)
with open(sys.argv[2], "w") as out:
    json.dump(strip(doc), out, separators=(",", ":"), sort_keys=False)
    out.write("\n")
