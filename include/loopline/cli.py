"""The ``loopline`` command line: local stack, synthetic data and operator tools."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from loopline.config import ConfigError, get_config, load_config, resolve_uri


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-01-31") from None


def _cmd_up(args: argparse.Namespace) -> int:
    from loopline import stack

    report = stack.up(profile=args.profile)
    _print_health(report)
    password = stack.admin_password()
    print(f"\nAirflow UI: http://127.0.0.1:{stack.AIRFLOW_PORT}  (user admin, password {password or '?'})")
    if stack.saved_profile() == stack.CLUSTER:
        from loopline import cluster

        env = stack.shell_environment(stack.loopline_home(), {})
        mlflow_url = load_config(environ=env).mlflow.ui_url
        print(f"MLflow UI:  {mlflow_url}  {stack.mlflow_login_hint()}")
        print(f"Spark:      master UI http://127.0.0.1:{cluster.Ports.from_env().spark_master_ui}")
    else:
        print(f"MLflow UI:  {get_config().mlflow.ui_url}  {stack.mlflow_login_hint()}")
    print(f"Postgres:   {stack.postgres_login_hint(get_config(), stack.embedded_pg().port)}")
    print(f"Shell:      source {stack.state_dir() / 'env.sh'}  # then `airflow ...` talks to this stack")
    return 0 if all(item.healthy for item in report) else 1


# Where `loopline migrate --admin-conn-id` reads the roles' passwords (compose passes its .env values in).
PASSWORD_VARS = {
    "owner_role": "LOOPLINE_PG_OWNER_PASSWORD",
    "loader_role": "LOOPLINE_PG_LOADER_PASSWORD",
    "analyst_role": "LOOPLINE_PG_ANALYST_PASSWORD",
}


def _hook_conn(conn_id: str):
    from loopline.orchestration.database import connect

    return connect(conn_id)


def _configured_elsewhere(stack) -> bool:
    """The predictions connection in this shell is not the one the running stack wrote (``source env.sh``
    exports the stack's own): an external database, migrated through ``postgres.owner_conn_id``."""
    import os

    value = os.environ.get(stack.POSTGRES_CONN_VAR)
    if value is None:
        return False
    try:
        return stack.shell_environment(stack.loopline_home(), {}).get(stack.POSTGRES_CONN_VAR) != value
    except OSError:  # no env.sh: a stack started elsewhere
        return True


def _cmd_migrate(args: argparse.Namespace) -> int:
    import os

    from loopline import db, stack

    cfg = get_config()
    schema = cfg.postgres.schema_
    roles = db.Roles.from_config(cfg)
    try:
        if args.admin_conn_id:
            passwords = {
                getattr(cfg.postgres, key): os.environ[var] for key, var in PASSWORD_VARS.items() if os.environ.get(var)
            }
            conn = _hook_conn(args.admin_conn_id)
            try:
                db.bootstrap(conn, cfg, passwords, roles)
                print(f"roles {roles.owner}, {roles.loader}, {roles.analyst}: ready ({len(passwords)} passwords set)")
                applied = db.migrate(conn, schema, roles=roles)
            finally:
                conn.close()
        elif args.conn_id or stack.embedded_pg() is None or _configured_elsewhere(stack):
            conn = _hook_conn(args.conn_id or cfg.postgres.owner_conn_id)
            try:
                applied = db.migrate(conn, schema, roles=roles)
            finally:
                conn.close()
        else:
            applied = stack.migrate_embedded(cfg, stack.embedded_pg())
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("psycopg2", "psycopg", "airflow"):
            raise RuntimeError(f"{type(exc).__name__}: {str(exc).strip()}") from exc
        raise
    done = f"applied {', '.join(applied)}" if applied else "nothing to apply"
    print(f"schema {schema} at {db.latest_version()}: {done}; grants of {roles.loader} and {roles.analyst} re-applied")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from loopline import stack

    stack.down()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from loopline import stack

    report = stack.status()
    _print_health(report)
    return 0 if all(item.healthy for item in report) else 1


def _print_health(report: list) -> None:
    width = max(len(item.name) for item in report)
    for item in report:
        print(f"{item.name:<{width}}  {'healthy' if item.healthy else 'DOWN   '}  {item.detail}")


def _cmd_generate(args: argparse.Namespace) -> int:
    from loopline import synth

    out = Path(args.out or resolve_uri(get_config().storage.landing_uri))
    summary = synth.generate(
        args.start,
        args.days,
        out,
        transactions_per_day=args.transactions_per_day,
        seed=args.seed,
        drift_start=args.drift_start,
        drift_kind=args.drift_kind,
        truth_out=Path(args.truth_out) if args.truth_out else None,
        compress=args.gzip,
    )
    print(
        f"generated {summary.days} days, {summary.transactions} transactions "
        f"({summary.frauds} fraud), {summary.labels} labels into {summary.landing}; truth in {summary.truth}"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from loopline import demo

    plan = demo.DemoPlan(
        start=demo.default_start(args.days),
        days=args.days,
        transactions_per_day=args.transactions_per_day,
        drift_kind=args.drift_kind or ("new_pattern" if args.promotion else "covariate"),
        stable_nights=args.stable_nights,
        drifted_nights=args.drifted_nights,
        promotion=args.promotion,
        source=args.source,
    )
    return demo.run(plan)


def _cmd_model_rollback(args: argparse.Namespace) -> int:
    """Point ``champion`` back at the previous champion, record the move, say what happened."""
    import getpass

    from loopline import registry
    from loopline.orchestration.database import predictions_db
    from loopline.orchestration.mlflow_access import mlflow_client

    cfg = get_config()
    client = mlflow_client(cfg)  # the loopline_mlflow connection when set (the cluster profile's login)
    with predictions_db(cfg) as conn:  # history row pending -> alias move -> applied
        move = registry.rollback(
            client,
            cfg.mlflow.registered_model,
            triggered_by=f"rollback by {getpass.getuser()}",
            reason=args.reason,
            conn=conn,
            schema=cfg.postgres.schema_,
        )
    print(f"{move.model_name}: champion is v{move.version} again (was v{move.previous_version})")
    return 0


def _cmd_model_retire_shadow(args: argparse.Namespace) -> int:
    """Take alias ``shadow`` off its version (an inconclusive or unwanted shadow); its open request is retired."""
    import getpass

    from loopline import promotion, registry
    from loopline.orchestration.database import predictions_db
    from loopline.orchestration.mlflow_access import mlflow_client

    cfg = get_config()
    client = mlflow_client(cfg)
    name = cfg.mlflow.registered_model
    shadow = registry._alias_version(client, name, promotion.SHADOW)
    if shadow is None:
        print(f"{name} has no shadow: nothing retired", file=sys.stderr)
        return 1
    if args.version is not None and int(shadow.version) != args.version:
        print(f"{name} v{args.version} is not the shadow (v{shadow.version} is): nothing retired", file=sys.stderr)
        return 1
    with predictions_db(cfg) as conn:
        move = promotion.retire_shadow(
            client,
            conn,
            cfg.postgres.schema_,
            name,
            int(shadow.version),
            reason=args.reason,
            triggered_by=f"retire-shadow by {getpass.getuser()}",
        )
    if move is None:  # another hand moved the alias in between
        print(f"{name} v{shadow.version} stopped being the shadow meanwhile: nothing retired", file=sys.stderr)
        return 1
    print(f"{name}: v{move.version} is no longer the shadow ({args.reason}); the champion keeps serving")
    return 0


def _cmd_model_record_digests(args: argparse.Namespace) -> int:
    """Record the SHA-256 of a version's files as they are now (a version gated before digests existed)."""
    import tempfile
    from pathlib import Path

    from loopline import artifacts
    from loopline.orchestration.database import predictions_db
    from loopline.orchestration.mlflow_access import mlflow_client

    cfg = get_config()
    name, schema = cfg.mlflow.registered_model, cfg.postgres.schema_
    with predictions_db(cfg) as conn, tempfile.TemporaryDirectory(prefix="loopline-digests-") as tmp:
        if artifacts.recorded_digests(conn, schema, name, args.version):
            fetched = artifacts.fetch(mlflow_client(cfg), name, args.version, Path(tmp), conn=conn, schema=schema)
            print(f"{name} v{args.version}: digests already recorded; its {len(fetched.digests)} files match them")
            return 0
        fetched = artifacts.fetch(
            mlflow_client(cfg), name, args.version, Path(tmp), conn=None, schema=None, require_digests=False
        )
        if fetched.pickled and not cfg.registry.allow_pickled_models:
            artifacts.build(fetched)  # raises PickledModelRefused: recording would not make it loadable
        artifacts.record_digests(conn, schema, name, args.version, fetched.digests)
        conn.commit()
    print(f"{name} v{args.version}: recorded the SHA-256 of {len(fetched.digests)} files; scoring now verifies them")
    return 0


def _stack_api():
    from loopline import stack

    try:
        return stack.AirflowApi.for_env(stack.shell_environment(stack.loopline_home(), {}))
    except OSError:  # no env.sh: a stack started elsewhere, on the default port
        return stack.AirflowApi()


def _cmd_backfill(args: argparse.Namespace) -> int:
    from loopline import backfill

    run_id = backfill.request_range(_stack_api(), args.start, args.end, get_config(), cascade=not args.no_cascade)
    print(
        f"created {backfill.DAG_ID} run {run_id} for {args.start} .. {args.end}; follow it in the Airflow UI "
        f"(the task log prints a line per day) or in {get_config().postgres.schema_}.backfill_runs"
    )
    return 0


def _cmd_rescore_stale(args: argparse.Namespace) -> int:
    from loopline import backfill
    from loopline.orchestration.database import predictions_db

    cfg = get_config()
    with predictions_db(cfg) as conn:
        days = backfill.Ledger(conn, cfg.postgres.schema_).stale_days()
    if not days:
        print("no stale scores: nothing to re-score")
        return 0
    created = backfill.request_rescore(_stack_api(), days)
    print(
        f"{len(days)} day(s) with stale scores ({days[0]} .. {days[-1]}): batch_score backfill "
        f"{(created or {}).get('id', '?')} re-scores {days[0]} .. {days[-1]} (each load clears its stale flag)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the local stack (Airflow, Spark Connect, PostgreSQL, MLflow)")
    up.add_argument(
        "--profile",
        choices=["embedded", "cluster"],
        help="embedded (default: LocalExecutor, Spark local[*], local folders) or cluster (the production "
        "topology as processes: Celery workers, a Spark standalone cluster, S3, authenticated MLflow); "
        "default: the profile this home last ran",
    )
    commands.add_parser("down", help="stop what `up` started")
    commands.add_parser("status", help="report each component's health")
    migrate = commands.add_parser(
        "migrate",
        help="apply the predictions database's migrations as the owner role and re-grant the loader and analyst",
        description="Without options: the embedded stack's database (bootstrapping its roles), or, when no stack "
        "runs here or AIRFLOW_CONN_LOOPLINE_POSTGRES points elsewhere, the connection postgres.owner_conn_id.",
    )
    migrate.add_argument("--conn-id", help="Airflow connection that logs in as the owner role")
    migrate.add_argument(
        "--admin-conn-id",
        help="Airflow connection of an administrator: first create/update the three roles (passwords from "
        + ", ".join(PASSWORD_VARS.values())
        + ") and give the owner the schema, then migrate as the owner",
    )

    gen = commands.add_parser("generate", help="write synthetic landing drops (the landing contract)")
    gen.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD")
    gen.add_argument("--days", type=int, required=True, help="number of days")
    gen.add_argument("--out", help="landing folder (default: the configured landing_uri)")
    gen.add_argument("--transactions-per-day", type=int, default=5000)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--drift-start", type=_date, help="first drifted day")
    gen.add_argument("--drift-kind", help="kind of drift from --drift-start on (see `loopline.synth`)")
    gen.add_argument("--truth-out", help="where true fraud probabilities go (default: <out>/../truth)")
    gen.add_argument("--gzip", action="store_true", help="write .csv.gz files")

    demo = commands.add_parser("demo", help="run the loop on embedded defaults through the local stack")
    demo.add_argument("--days", type=int, default=60, help="days of landing drops to generate")
    demo.add_argument("--transactions-per-day", type=int, default=5000)
    demo.add_argument(
        "--drift-kind", help="generator drift of the last nights (default covariate; with --promotion new_pattern)"
    )
    demo.add_argument("--stable-nights", type=int, default=3, help="monitored nights before the drift")
    demo.add_argument("--drifted-nights", type=int, default=3, help="monitored nights in the drift (ending yesterday)")
    demo.add_argument(
        "--promotion",
        action="store_true",
        help="promotion on evidence with its shortest settings (use with --drift-kind new_pattern): the pattern's "
        "retraining at label maturity, the shadow's evidence night by night, the approval through the REST API",
    )
    demo.add_argument(
        "--source",
        choices=["landing", "postgres"],
        default="landing",
        help="where the inputs come from: landing drop files (default), or tables the generator writes in the "
        "stack's PostgreSQL, read as configured PostgreSQL sources (docs/your-own-data.md)",
    )
    back = commands.add_parser(
        "backfill",
        help="backfill a range of days in one backfill_range run (refused before any work if the range is bad)",
    )
    back.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD (inclusive)")
    back.add_argument("--end", type=_date, required=True, help="last day, YYYY-MM-DD (inclusive)")
    back.add_argument(
        "--no-cascade",
        action="store_true",
        help="do not recompute the later published days whose features read the range (default: recompute them)",
    )
    commands.add_parser(
        "rescore-stale", help="re-score the days whose scores a correction made stale (a batch_score backfill)"
    )
    model = commands.add_parser("model", help="registry operations").add_subparsers(dest="model_command", required=True)
    rollback = model.add_parser("rollback", help="restore the previous champion in one step")
    rollback.add_argument("--reason", required=True, help="why (recorded in the alias history)")
    retire = model.add_parser(
        "retire-shadow", help="take alias shadow off its version (e.g. inconclusive evidence); its request retired"
    )
    retire.add_argument("--reason", required=True, help="why (recorded in the alias history and the version's tag)")
    retire.add_argument("--version", type=int, help="the version you expect to be the shadow (refused if not)")
    digests = model.add_parser(
        "record-digests",
        help="trust a version's files as they are now: record their SHA-256 (for versions gated before digests "
        "were recorded; the gate records them itself)",
    )
    digests.add_argument("--version", type=int, required=True, help="registered model version")
    return parser


HANDLERS = {
    "up": _cmd_up,
    "down": _cmd_down,
    "status": _cmd_status,
    "migrate": _cmd_migrate,
    "generate": _cmd_generate,
    "demo": _cmd_demo,
    "backfill": _cmd_backfill,
    "rescore-stale": _cmd_rescore_stale,
    "model": lambda args: {
        "rollback": _cmd_model_rollback,
        "retire-shadow": _cmd_model_retire_shadow,
        "record-digests": _cmd_model_record_digests,
    }[args.model_command](args),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except (ConfigError, ValueError, RuntimeError) as exc:  # includes registry.GateError
        print(f"loopline {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
