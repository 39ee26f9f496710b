"""Running a script in a fresh interpreter where torch, dlc_train and dlc_export cannot be
imported: how the tests prove the runtime's torch-free paths stay torch-free."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "dlc_train", "dlc_export")

#: put before a script: any import of a BLOCKED package raises ImportError; ``leaked()`` lists
#: those already imported (none, unless a module bypassed the import system).
PRELUDE = textwrap.dedent(f"""
    import sys

    BLOCKED = {BLOCKED!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())

    def leaked():
        return sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    """)


def run_blocked(script: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -c PRELUDE + script args...`` with the repository importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script),
                           *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)
