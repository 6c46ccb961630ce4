"""Helper process for `evals.grading`: runs math_verify in its own main thread (signal timeouts work).

Protocol: one JSON line in (``{"p": predicted, "e": expected, "s": seconds}``), one JSON line out
(``{"ok": bool}``). The parent kills this process if an answer does not come back in time.
"""

from __future__ import annotations

import json
import logging
import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    logging.disable(logging.WARNING)
    from evals.grading import verify_in_process

    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
            ok = verify_in_process(str(req["p"]), str(req["e"]), int(req["s"]))
        except Exception:
            ok = False
        sys.stdout.write(json.dumps({"ok": bool(ok)}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
