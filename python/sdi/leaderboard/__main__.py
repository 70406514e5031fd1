"""``python -m sdi.leaderboard --data-dir DIR --fsync always --port 6379``."""

from sdi.leaderboard.server import main

if __name__ == "__main__":
    main()
