#!/usr/bin/env python3
"""Test helper: ``train.py`` that kills itself with SIGKILL in the middle of a checkpoint write.

    python tests/kill_train.py FILE N <train.py arguments>

runs ``train.main(<train.py arguments>)``; during the N-th ``torch.save`` of a
file named FILE into a checkpoint folder, it writes the first half of that
file and sends SIGKILL to its own process: the state a job killed while it
saves a checkpoint leaves behind.  ``N = 0`` never kills.
"""

import io
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv):
    target, count = argv[0], int(argv[1])
    real_save, seen = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and os.path.basename(f) == target and "CKPT" in os.fspath(f):
            seen[0] += 1
            if seen[0] == count:
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                with open(f, "wb") as out:
                    out.write(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
    import train

    train.main(argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
