"""``python -m exporter`` and the ``connectycube-exporter`` command start here.

A SIGHUP (from a config reloader, say) may come while the slow imports and the config
files are read: until the daemon's handler is in place it is held back (blocked), not
fatal, and the daemon then reads the files once more (``exporter.daemon.run``).
"""

import signal
import sys


def main() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    from exporter.cli import main as cli_main  # imported only once SIGHUP is held

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
