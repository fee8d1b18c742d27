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
    """Add the ``app`` subcommand to ``sub``."""
    p = sub.add_parser(
        "app",
        help="start the Streamlit explorer (runs, human data, γ comparison, claims)",
        description=(
            "Start the CRAM explorer in Streamlit on 127.0.0.1. It reads run folders written by "
            "'cram train' (default: runs/demo, written by 'make demo', else runs/), fit folders "
            "written by 'cram fit gamma --out' (default: searched below the runs folder) and "
            "docs/claims.md. The app only reads; it never trains. The folders come from these "
            "options only (a link's URL cannot change them). SIGINT, SIGTERM or SIGHUP stop the "
            "server."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="folder of run folders (default: runs/demo if it exists, else runs)")
    p.add_argument("--fits", default=None, metavar="DIR",
                   help="folder searched for 'cram fit --out' folders (default: the runs folder)")
    p.add_argument("--port", type=int, default=8501, help="TCP port")
    p.add_argument("--address", default=LOOPBACK_DEFAULT,
                   help="IP address (or 'localhost') to listen on; a non-loopback address needs "
                        "--allow-remote")
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
        For a port outside 1-65535, an address that is not an IP address or ``localhost``, or a
        non-loopback address without ``--allow-remote``; for ``--runs``/``--fits`` that exist
        but are not folders.
    """
    if not 1 <= int(args.port) <= 65535:
        raise ConfigError(f"--port {args.port}: must be in 1-65535")
    addr = _address(args.address)
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


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IP address ``--address`` names: an IP literal, or ``localhost`` (→ 127.0.0.1)."""
    if text.strip().lower() == "localhost":
        return ipaddress.ip_address(LOOPBACK_DEFAULT)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"--address {text!r}: not an IP address (or 'localhost')") from None


class _Stopped(Exception):
    """Raised in the main thread by the SIGTERM / SIGHUP handler of :func:`_run`."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise _Stopped(signum)


def _stop_server(proc, timeout: float = 10.0) -> None:
    """Terminate the server's process group (SIGTERM, then SIGKILL after ``timeout`` s)."""
    import signal
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def die_with_this_process():
    """A ``preexec_fn`` that has the kernel SIGTERM the child when this process dies, or None.

    Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` through ctypes, loaded here (the child, between
    fork and exec, imports nothing); None where ``prctl`` is unavailable (macOS). It covers the
    death the signal handlers of :func:`_run` never see: ``kill -9`` of ``cram app``.
    """
    import signal

    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    args = [ctypes.c_ulong(v) for v in (signal.SIGTERM, 0, 0, 0)]
    pr_set_pdeathsig = 1

    def preexec() -> None:
        if prctl(pr_set_pdeathsig, *args) == 0 and os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)  # the parent died before prctl took effect

    return preexec


def _run(args) -> int:
    import signal
    import subprocess

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
    # the server gets its own process group: this process forwards SIGINT, SIGTERM and SIGHUP
    # to all of it, so no server outlives `cram app`. SIGINT is handled explicitly too: a process
    # started in the background by a shell inherits SIGINT ignored, and Ctrl-C must still work.
    # A `kill -9` of this process runs no handler: the kernel then sends the server SIGTERM
    # (die_with_this_process, Linux)
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in handled}
    proc = None
    try:
        proc = subprocess.Popen(argv, env=full_env, start_new_session=True,
                                preexec_fn=die_with_this_process())
        return proc.wait()
    except (KeyboardInterrupt, _Stopped) as err:
        signum = getattr(err, "signum", signal.SIGINT)
        log(f"cram app: stopped ({signal.Signals(signum).name})")
        return 128 + int(signum)
    finally:
        for sig in previous:  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None:
            _stop_server(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
