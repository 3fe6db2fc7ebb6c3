"""``lfm4ads``: the command line. Every command takes one YAML config (a RunConfig).

Exit codes (contracts/errors.py, the same for every command): 0 done, 1 an unexpected error,
2 bad config, 3 a quality gate stopped the day, 4 another run holds the run root, 5 a bad
input file, 6 the rollover gate refused, 7 a new index version was kept but not promoted,
130/143 stopped by SIGINT/SIGTERM. An error is one line; ``--debug`` adds the traceback.

Environment: ``LFM4ADS_CONFIG`` (default ``--config``), ``LFM4ADS_ROOT`` (``--root``),
``LFM4ADS_LOG_FORMAT`` (``--log-format``), ``LFM4ADS_DEBUG=1`` (``--debug``),
``LFM4ADS_SPARK_MASTER`` (Spark master when the config names none),
``LFM4ADS_RAY_WORKER_NICENESS`` (nice level of Ray workers, default 0).
"""

from __future__ import annotations

import sys
import traceback

import click

import pipelines.cli_chain  # noqa: F401 - registers run, stage, backfill, ledger
import pipelines.cli_tools  # noqa: F401 - registers validate, experiment, extract probe, serve
from pipelines.cli_app import _CTX, app
from pipelines.output import JsonFormatter, Output  # noqa: F401 - JsonFormatter re-exported

try:  # newer typer vendors click: its usage errors (a bad choice, an unknown option) are not click's
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # typer on click itself
    _TyperClickException = click.ClickException


def cli(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (errors mapped by :mod:`pipelines.exits`)."""
    from pipelines import signals
    from pipelines.exits import classify

    _CTX.update(out=None, debug=False, service_stopped=False)
    try:
        with signals.handling():  # SIGINT/SIGTERM -> Interrupted in any command (exit 130/143)
            rv = app(args=argv, prog_name="lfm4ads", standalone_mode=False)
        if signals.received() is not None and not _CTX.get("service_stopped"):  # typer: a bare 130
            raise signals.Interrupted(signals.received())
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except (click.ClickException, _TyperClickException) as e:  # usage errors: unknown option, missing --from, ...
        e.show(file=(_CTX["out"].stderr if _CTX["out"] else None))
        return 2
    except BaseException as e:  # noqa: BLE001 - every error ends in a documented exit code
        if isinstance(e, click.exceptions.Abort) and isinstance(e.__cause__, KeyboardInterrupt):
            e = e.__cause__  # click turns Ctrl-C into Abort
        if isinstance(e, SystemExit):
            raise
        code, kind, msg = classify(e)
        out = _CTX["out"] or Output("text", _CTX["debug"])
        _log_traceback(e)
        where = f" (details: {out.log_file})" if out.log_file and code not in (2, 4) else ""
        hint = "" if _CTX["debug"] or code != 1 else "; run with --debug for the traceback"
        out.error(f"{kind}: {msg}{hint}{where}", event="error", exit_code=code, error=type(e).__name__)
        if _CTX["debug"]:
            traceback.print_exception(e, file=out.stderr)
        return code
    finally:
        _shutdown_engines()
        if _CTX["out"] is not None:
            _CTX["out"].close()


def _log_traceback(e: BaseException) -> None:
    import logging

    # the log file (when open) keeps the traceback; the person sees one line
    logging.getLogger("lfm4ads.cli.traceback").debug("command failed", exc_info=e)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.stream.write("".join(traceback.format_exception(e)))
            h.flush()


def _shutdown_engines() -> None:
    """After an interrupt or error, stop this process's engines so no Ray actor or Spark
    job keeps running (a local Ray cluster's workers go with ``ray.shutdown``)."""
    from pipelines import signals

    if signals.received() is None:
        return
    if "ray" in sys.modules:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def main() -> None:
    """The ``lfm4ads`` console script (and ``python -m pipelines.cli``)."""
    _CTX["redirect"] = True
    sys.exit(cli())


if __name__ == "__main__":
    main()
