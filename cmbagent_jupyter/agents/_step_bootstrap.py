"""Runs a step's script and notes which files it wrote (used by agents/execution.py).

`python _step_bootstrap.py SCRIPT REPORT`: an audit hook sees every file the script
opens for writing (and every rename target); at exit their paths go to REPORT as JSON.
That is how each of several steps running at once in the same folder is credited
with its own files only.
"""

import atexit
import json
import os
import runpy
import sys
import traceback


def main() -> None:
    script, report = sys.argv[1], sys.argv[2]
    written: set[str] = set()

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                written.add(os.path.abspath(os.fsdecode(args[0])))
        elif event == "os.rename" and len(args) > 1 and isinstance(args[1], (str, bytes, os.PathLike)):
            written.add(os.path.abspath(os.fsdecode(args[1])))

    def save() -> None:
        with open(report, "w", encoding="utf-8") as f:
            json.dump(sorted(written), f)

    atexit.register(save)
    sys.addaudithook(hook)
    sys.argv = [script]
    path = os.path.abspath(script)
    sys.path.insert(0, os.path.dirname(path))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise
    except BaseException:
        # the traceback the engineer sees starts in its own script, not in this wrapper
        etype, value, tb = sys.exc_info()
        while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != path:
            tb = tb.tb_next
        traceback.print_exception(etype, value, tb)
        sys.exit(1)


if __name__ == "__main__":
    main()
