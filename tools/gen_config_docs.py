"""Write docs/configuration.md from the policy classes (``--check``: fail if it is stale).

The reference is generated so it cannot drift: every field, its default and the class's own
docstring come from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from pathlib import Path

from resilient_etcd.kube import KubePolicy
from resilient_etcd.policies import HealthPolicy, KeepalivePolicy, RetryPolicy

TARGET = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
CLASSES = [
    (KeepalivePolicy, "`client(keepalive=KeepalivePolicy(...))`"),
    (HealthPolicy, "`client(health=HealthPolicy(...))`"),
    (RetryPolicy, "`client(retry=RetryPolicy(...))`"),
    (KubePolicy, "`resilient_etcd.kube.ApiClient(cfg, policy=KubePolicy(...))`"),
]


def render() -> str:
    out = ["# Configuration reference", "",
           "Generated from the policy classes by `tools/gen_config_docs.py` (a test fails when it is stale).",
           "Every policy is a frozen dataclass validated when built: a bad value raises",
           "`resilient_etcd.ConfigurationError` naming the field, never a silent default.", ""]
    for cls, where in CLASSES:
        out += [f"## {cls.__name__}", "", f"Used as {where}.", ""]
        doc = inspect.cleandoc(cls.__doc__ or "")
        out += [doc, "", "| field | type | default |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            out.append(f"| `{f.name}` | `{f.type}` | `{default!r}` |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python tools/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
