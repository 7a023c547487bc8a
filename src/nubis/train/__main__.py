"""``python -m nubis.train``: see nubis.train.cli."""

from nubis.train.cli import exit_worker, main

if __name__ == "__main__":
    exit_worker(main())
