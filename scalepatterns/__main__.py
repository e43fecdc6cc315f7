"""``python -m scalepatterns``: the operator command line (see `scalepatterns.cli`)."""

from scalepatterns.cli import main

if __name__ == "__main__":
    main()
