"""Runs the Python durabletask package's in-memory TaskHubSidecarService.

Usage: server.py PORT

Prints "READY <port>" once the server listens, then serves until its
standard input closes (the test that started it exited or dropped it) or it
is killed.
"""

import sys
import threading

from durabletask.testing import create_test_backend


def main() -> None:
    port = int(sys.argv[1])
    backend = create_test_backend(port=port)
    print(f"READY {port}", flush=True)
    # Serve until the parent closes our stdin: an orphaned server would
    # otherwise outlive a test process that was killed.
    done = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    backend.stop(grace=0)


if __name__ == "__main__":
    main()
