"""``python -m sdi.email``: runs the email service in the foreground (tests and quick tries).

``sdi serve email`` is the command to use; this entry point takes the same
settings as JSON so a test can start the service as a child process::

    python -m sdi.email --port 0 --data-dir /tmp/mail --options '{"workers": 4}'

>>> parser().parse_args(["--port", "0", "--data-dir", "/tmp/x"]).port
0
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sdi.email.service import service
from sdi.runtime import ServiceConfig
from sdi.runtime.service import run, run_services


def parser() -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(prog="python -m sdi.email", description=__doc__)
    args.add_argument("--host", default="127.0.0.1")
    args.add_argument("--port", type=int, default=8780)
    args.add_argument("--data-dir", type=Path, required=True)
    args.add_argument("--options", default="{}", help="service options as a JSON object")
    return args


def main() -> None:
    options = parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    email_service = service(json.loads(options.options))
    config = ServiceConfig(options.host, options.port, options.data_dir)
    run(lambda: run_services([(email_service, config)]))


if __name__ == "__main__":
    main()
