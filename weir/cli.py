"""The ``weir`` command. Each command parses its flags and calls into the package; heavy imports stay inside."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command line or the environment: printed to stderr, exit 2."""


def echo(text: str = "", *, err: bool = False) -> None:
    """Write a line to stdout (results) or stderr (progress, errors)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")


# --- commands ---------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from weir.connectors.registry import ConnectorRegistry
    from weir.workflows.project import check_paths
    from weir.workflows.report import render_findings, summary

    findings, files = check_paths(args.paths, ConnectorRegistry(), cwd=Path.cwd())
    output = render_findings(findings, args.format)
    if output:
        echo(output)
    if args.format == "text":
        echo(summary(findings, files), err=True)
    from weir.workflows.findings import has_errors

    return EXIT_FAILED if has_errors(findings, strict=args.strict) else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from weir.schemas.export import schema_texts, write_schemas

    if args.out is None:
        import json

        echo(json.dumps({name: json.loads(text) for name, text in schema_texts().items()}, indent=2))
        return EXIT_OK
    for path in write_schemas(Path(args.out)):
        echo(f"wrote {path}", err=True)
    return EXIT_OK


def cmd_connectors(args: argparse.Namespace) -> int:
    from weir.connectors.catalog import describe_connectors
    from weir.connectors.registry import ConnectorRegistry
    from weir.workflows.builtins import BUILTIN_ACTIONS

    text, ok = describe_connectors(ConnectorRegistry(), args.name, builtins=BUILTIN_ACTIONS, as_json=args.json)
    echo(text)
    return EXIT_OK if ok else EXIT_USAGE


def cmd_init(args: argparse.Namespace) -> int:
    from weir.scaffold import scaffold

    created = scaffold(Path(args.dir))
    for path in created:
        echo(f"created {path}", err=True)
    echo(f"next: cd {args.dir} && weir check", err=True)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from weir.connectors.registry import ConnectorRegistry
    from weir.server.plan import plan_refs

    text, ok = plan_refs(Path.cwd(), base=args.base, head=args.head, path=args.path, registry=ConnectorRegistry())
    echo(text)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_serve(args: argparse.Namespace) -> int:
    from weir.server.app import prepare_database
    from weir.settings import build_settings

    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    settings = build_settings(**flags)
    import uvicorn

    from weir.server.app import create_app
    from weir.server.logs import configure_logging

    configure_logging(settings.log_format)
    # Wait for the database and migrate it before uvicorn starts, so that a database that never answers ends the
    # command with one clear line instead of a failed application startup.
    prepare_database(settings)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    from weir.server.app import run_worker
    from weir.server.logs import configure_logging
    from weir.settings import build_settings

    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    settings = build_settings(**flags)
    configure_logging(settings.log_format)
    asyncio.run(run_worker(settings, follow=args.repo is not None))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from weir.errors import ParamsInvalid, WorkflowNotFound
    from weir.server.oneshot import parse_params, run_once
    from weir.workflows.project import default_automation_dir
    from weir.workflows.report import render_findings

    directory = Path(args.path) if args.path else default_automation_dir(Path.cwd())
    params = parse_params(args.param, args.params_file)
    secrets_file = Path(args.secrets_file) if args.secrets_file else None
    try:
        result = asyncio.run(run_once(directory, args.workflow, params, db=args.db, secrets_file=secrets_file))
    except (ParamsInvalid, WorkflowNotFound) as exc:
        echo(f"weir run: {exc}", err=True)
        return EXIT_USAGE
    if result.run is None:
        echo(render_findings(result.findings, "text"), err=True)
        echo(f"weir run: {directory} has invalid files; fix them (see `weir check`) and run again", err=True)
        return EXIT_FAILED
    run = result.run
    echo(f"run {run.id} {run.status}" + (f": {run.error}" if run.error else ""), err=True)
    echo(json.dumps(run.outputs if run.outputs is not None else {}, ensure_ascii=False))
    return EXIT_OK if run.status == "succeeded" else EXIT_FAILED


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from weir.store.database import open_database

    db = args.db or os.environ.get("WEIR_DB") or None  # the server passes a URL with a password this way, not in argv

    async def upgrade() -> str:
        database = await open_database(db, Path(args.state_dir), migrate=True)
        where = database.url.render_as_string(hide_password=True)
        await database.dispose()
        return where

    echo(f"run database {asyncio.run(upgrade())} is at the newest schema", err=True)
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    import os

    from weir.server import client as api

    server = args.server or os.environ.get("WEIR_SERVER") or api.DEFAULT_SERVER
    token = args.token or os.environ.get("WEIR_API_TOKEN") or None
    hint: str | None = None
    try:
        with api.WeirClient(server, token=token) as client:
            if args.runs_command == "list":
                out, hint = api.list_report(
                    client,
                    workflow=args.workflow,
                    status=args.status,
                    limit=args.limit,
                    cursor=args.cursor,
                    as_json=args.json,
                )
            elif args.runs_command == "show":
                out = api.show_report(client, args.run_id, logs=args.logs, as_json=args.json)
            elif args.runs_command == "cancel":
                out = api.cancel_report(client, args.run_id)
            else:
                out, hint = api.rerun_report(client, args.run_id, from_failed=args.from_failed)
    except api.ApiError as exc:
        echo(f"weir runs {args.runs_command}: {exc}", err=True)
        return EXIT_FAILED if exc.status == 409 else EXIT_USAGE
    if out:
        echo(out)
    if hint:
        echo(hint, err=True)
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from weir import __version__

    parser = argparse.ArgumentParser(prog="weir", description="Git-driven, declarative automation server.")
    parser.add_argument("--version", action="version", version=f"weir {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        return sub

    check = command("check", cmd_check, "Validate workflow files with compiler-style findings.")
    check.add_argument("paths", nargs="*", metavar="PATH", help="automation directory or files (default: workflows/)")
    check.add_argument("--format", choices=("text", "json", "github", "sarif"), default="text")
    check.add_argument("--strict", action="store_true", help="warnings fail the check too")

    schema = command("schema", cmd_schema, "Print or write the JSON Schemas of the file formats.")
    schema.add_argument("--out", metavar="DIR", help="write workflow.schema.json and repo.schema.json into DIR")

    connectors = command("connectors", cmd_connectors, "List installed connectors, their actions and inputs.")
    connectors.add_argument("name", nargs="?", help="show one connector (or built-in action) in full")
    connectors.add_argument("--json", action="store_true", help="print JSON instead of text")

    init = command("init", cmd_init, "Scaffold an automation repository with an example and CI config.")
    init.add_argument("dir", nargs="?", default=".", metavar="DIR")

    plan = command("plan", cmd_plan, "Show what deploying HEAD would change, for a pull request.")
    plan.add_argument("--base", help="ref to compare with (default: origin/HEAD, main or master)")
    plan.add_argument("--head", default="HEAD", help="ref to deploy (default: HEAD)")
    plan.add_argument("--path", default="workflows", help="automation directory in the repository")
    run = command("run", cmd_run, "Run one workflow once, in this process, with live progress.")
    run.add_argument("workflow", metavar="WORKFLOW", help="name of the workflow")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a param (JSON or text)")
    run.add_argument("--params-file", metavar="FILE", help="params as a JSON or TOML file")
    run.add_argument("--path", metavar="DIR", help="automation directory (default: workflows/ of this repository)")
    run.add_argument("--secrets-file", metavar="FILE", help="TOML or .env file with secrets")
    run.add_argument("--db", metavar="URL", help="keep the run in this database (default: in memory)")

    db = commands.add_parser("db", help="Manage the run database.", description="Manage the run database.")
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = db_commands.add_parser("upgrade", help="Migrate the run database to the newest schema.")
    upgrade.set_defaults(func=cmd_db_upgrade)
    upgrade.add_argument(
        "--db", metavar="URL", help="database URL (or WEIR_DB; default: SQLite in the state directory)"
    )
    upgrade.add_argument("--state-dir", default=".weir", metavar="DIR", help="state directory (default: .weir)")

    runs = commands.add_parser("runs", help="List, show, cancel and rerun runs of a running server.")
    runs.description = "Talk to a running `weir serve` over its HTTP API."
    runs_commands = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--server", metavar="URL", help="the server's base URL (default: $WEIR_SERVER or 127.0.0.1:8080)"
    )
    remote.add_argument("--token", metavar="T", help="the server's --api-token (default: $WEIR_API_TOKEN)")

    def runs_command(name: str, help: str) -> argparse.ArgumentParser:
        sub = runs_commands.add_parser(name, parents=[remote], help=help, description=help)
        sub.set_defaults(func=cmd_runs)
        return sub

    from weir.types import RunStatus

    runs_list = runs_command("list", "Runs, newest first, a page at a time.")
    runs_list.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
    runs_list.add_argument("--status", choices=[s.value for s in RunStatus], help="only runs with this status")
    runs_list.add_argument("--limit", type=int, default=50, metavar="N", help="runs per page, 1 to 500 (default: 50)")
    runs_list.add_argument("--cursor", metavar="C", help="the next page, from the hint after the previous one")
    runs_list.add_argument("--json", action="store_true", help="print the API's JSON answer")
    runs_show = runs_command("show", "One run: params, outputs, steps, token usage.")
    runs_show.add_argument("run_id", metavar="RUN_ID")
    runs_show.add_argument("--logs", action="store_true", help="print the run's log lines too")
    runs_show.add_argument("--json", action="store_true", help="print the API's JSON answer")
    runs_command("cancel", "Cancel a queued, running or waiting run.").add_argument("run_id", metavar="RUN_ID")
    runs_rerun = runs_command("rerun", "Run a finished run again, as a new run; prints the new run's id.")
    runs_rerun.add_argument("run_id", metavar="RUN_ID")
    runs_rerun.add_argument("--from-failed", action="store_true", help="reuse the steps that succeeded")

    serve = command("serve", cmd_serve, "Follow the automation repository and serve the API.")
    serve.add_argument("--repo", help="local repository path to follow (default: .)")
    serve.add_argument("--branch", help="branch to follow (default: the current branch)")
    serve.add_argument("--path", help="automation directory in the repository (default: workflows)")
    serve.add_argument("--db", help="database URL (default: SQLite in the state directory)")
    serve.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: 8080)")
    serve.add_argument("--workers", type=int, help="runs executed at once (default: 4)")
    serve.add_argument("--state-dir", help="state directory (default: .weir)")
    serve.add_argument("--secrets-file", help="TOML or .env file with secrets")
    serve.add_argument("--api-token", help="bearer token required by /api/* (or WEIR_API_TOKEN)")
    serve.add_argument("--metrics-token", help="bearer token required by /metrics (or WEIR_METRICS_TOKEN)")
    serve.add_argument("--dev", action="store_true", help="follow the working tree and reload on save")
    serve.add_argument("--poll", help="fetch interval for remote repositories (default: 60s)")
    serve.add_argument("--git-webhook-secret", help="secret of GitHub push events on /hooks/_git")
    serve.add_argument("--max-body", help="largest webhook body (default: 1MiB)")
    serve.add_argument("--lease", help="a dead replica's runs are taken over after this (default: 30s)")
    serve.add_argument("--db-wait", help="how long to wait at start for the database to answer (default: 60s)")
    serve.add_argument(
        "--max-queued", type=int, help="queued runs above which webhooks get 503 + Retry-After (default: 50000, 0: off)"
    )
    serve.add_argument("--keep-runs", help="prune finished runs older than this (default: 30d)")
    serve.add_argument("--public-url", help="base URL of this server as callers see it")
    serve.add_argument("--log-format", choices=("text", "json"), help="log line format (default: text)")

    worker = command("worker", cmd_worker, "Execute runs from a shared database, without HTTP.")
    worker.add_argument("--db", required=True, help="database URL shared with the servers (postgresql://...)")
    worker.add_argument(
        "--repo", help="also follow this repository and store its revisions (default: only run stored ones)"
    )
    worker.add_argument("--branch", help="branch to follow (default: the current branch)")
    worker.add_argument("--path", help="automation directory in the repository (default: workflows)")
    worker.add_argument("--workers", type=int, help="runs executed at once (default: 4)")
    worker.add_argument("--lease", help="a dead worker's runs are taken over after this (default: 30s)")
    worker.add_argument("--db-wait", help="how long to wait at start for the database to answer (default: 60s)")
    worker.add_argument("--state-dir", help="state directory (default: .weir)")
    worker.add_argument("--secrets-file", help="TOML or .env file with secrets")
    worker.add_argument("--poll", help="fetch interval for remote repositories (default: 60s)")
    worker.add_argument("--public-url", help="base URL of the servers, for run.resume_url")
    worker.add_argument("--log-format", choices=("text", "json"), help="log line format (default: text)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from weir.errors import ConfigError, GitSyncError, StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, ConfigError, GitSyncError, StoreError) as exc:
        echo(f"weir {args.command}: {exc}", err=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
