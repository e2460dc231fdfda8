"""``python -m jemfast``: the same command line as the ``jemfast`` script."""

from jemfast.cli import entry_point

if __name__ == "__main__":
    entry_point()
