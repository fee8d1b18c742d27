"""`cram app`: start the Streamlit explorer (apps/explorer.py) on the loopback interface."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from cram.core.errors import ConfigError

LOOPBACK_DEFAULT = "127.0.0.1"


def register(sub) -> None:
    p = sub.add_parser(
        "app",
        help="start the Streamlit explorer (runs, human data, γ comparison, claims)",
        description=(
            "Start the CRAM explorer in Streamlit on 127.0.0.1. It reads run folders written by "
            "'cram train' (default: runs/demo, written by 'make demo', else runs/), fit folders "
            "written by 'cram fit gamma --out' (default: searched below the runs folder) and "
            "docs/claims.md. The app only reads; it never trains."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="folder of run folders (default: runs/demo if it exists, else runs)")
    p.add_argument("--fits", default=None, metavar="DIR",
                   help="folder searched for 'cram fit --out' folders (default: the runs folder)")
    p.add_argument("--port", type=int, default=8501, help="TCP port")
    p.add_argument("--address", default=LOOPBACK_DEFAULT,
                   help="address to listen on; a non-loopback address needs --allow-remote")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow an address other than loopback (the app has no authentication)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the streamlit command line and environment as JSON and exit")
    p.set_defaults(func=_run)


def streamlit_command(args) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` argv and the extra environment for ``args`` (checked).

    Raises
    ------
    ConfigError
        For a port outside 1-65535, an address that is not an IP address, or a non-loopback
        address without ``--allow-remote``; for ``--runs``/``--fits`` that exist but are not
        folders.
    """
    if not 1 <= int(args.port) <= 65535:
        raise ConfigError(f"--port {args.port}: must be in 1-65535")
    try:
        addr = ipaddress.ip_address(args.address)
    except ValueError:
        raise ConfigError(f"--address {args.address!r}: not an IP address") from None
    if not addr.is_loopback and not args.allow_remote:
        raise ConfigError(f"--address {args.address}: not a loopback address; the explorer has "
                          "no authentication, so pass --allow-remote to listen on it anyway")
    env = {}
    for flag, value, var in (("--runs", args.runs, "CRAM_APP_RUNS"),
                             ("--fits", args.fits, "CRAM_APP_FITS")):
        if value is None:
            continue
        path = Path(value)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{flag} {value}: not a folder")
        env[var] = str(path.resolve())
    script = Path(__file__).resolve().parent.parent.parent / "apps" / "explorer.py"
    try:  # the installed package location wins over the source layout guess
        import cram.apps

        script = Path(cram.apps.__file__).resolve().parent / "explorer.py"
    except ImportError:  # pragma: no cover
        pass
    argv = [sys.executable, "-m", "streamlit", "run", str(script),
            "--server.headless", "true",
            "--server.address", str(addr),
            "--server.port", str(int(args.port)),
            "--browser.gatherUsageStats", "false"]
    return argv, env


def _run(args) -> int:
    from cram.commands._util import emit_json, log

    argv, env = streamlit_command(args)
    if args.dry_run:
        emit_json({"argv": argv, "env": env})
        return 0
    for var in ("CRAM_APP_RUNS", "CRAM_APP_FITS"):
        if var in env and not Path(env[var]).exists():
            log(f"cram app: note: {env[var]} does not exist yet; the app will say so")
    log(f"cram app: serving on http://{args.address}:{args.port} (Ctrl-C to stop)")
    full_env = {**os.environ, **env}
    import subprocess

    proc = subprocess.Popen(argv, env=full_env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
