"""What a person sees: plantray's own plain lines, one live progress line per long stage, a closing summary.

Log records (plantray's and Ray's, with timestamps, levels and module names) go to a log file, never to the
console; ``-v`` also shows them on stderr, ``-q`` keeps only errors and the summary. Ray's C++ core and the
processes it starts write to file descriptor 2 directly, so while a command runs that descriptor points at
the log file too, and plantray's own messages go to the terminal through a copy of it. The run record names
where the log was copied (:func:`plantray.commands.record.write_run_record`).

Nothing here imports Ray or torch: a refusal and ``--help`` stay quick.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

QUIET, NORMAL, VERBOSE = "quiet", "normal", "verbose"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that Ray gives console handlers of their own (``ray`` on import, ``ray.data`` on its import).
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")
# Seconds between two plain progress lines when stdout is no terminal (CI, ``ray job submit``, cron).
PLAIN_INTERVAL_ENV = "PLANTRAY_PROGRESS_INTERVAL"
DEFAULT_PLAIN_INTERVAL = 10.0


@dataclass
class _State:
    """The console of this process: set by :func:`start` for a CLI run; library calls keep the defaults."""

    level: str = NORMAL
    log_path: str | None = None
    terminal_err: TextIO | None = None  # stderr as the user sees it, when fd 2 is redirected to the log
    saved_fd: int | None = None
    handlers: list = field(default_factory=list)
    saved_loggers: dict = field(default_factory=dict)
    step: bool = False  # inside a step of a larger command (quickstart): its heading replaces the headline


_state = _State()


def level() -> str:
    """``quiet``, ``normal`` or ``verbose``."""
    return _state.level


def log_path() -> str | None:
    """The local log file of this CLI run, or None (a library call)."""
    return _state.log_path


def say(text: str) -> None:
    """One of plantray's lines about what it is doing (not shown with ``-q``)."""
    if _state.level != QUIET:
        print(text, file=sys.stdout, flush=True)


def headline(text: str) -> None:
    """A command's first line (what it does, from where to where); a step of a larger command has its own."""
    if not _state.step:
        say(text)


@contextlib.contextmanager
def step(heading: str) -> Iterator[None]:
    """A step of a larger command (quickstart's ``[2/4] training ...``): the heading, then the step's lines."""
    say(heading)
    _state.step = True
    try:
        yield
    finally:
        _state.step = False


def summary(text: str) -> None:
    """The closing summary: always shown."""
    print(text, file=sys.stdout, flush=True)


def error(text: str) -> None:
    """An error line on the user's stderr: always shown."""
    print(text, file=_state.terminal_err or sys.stderr, flush=True)


def start(verbosity: str, command: str) -> None:
    """Sets up a CLI run: a log file, log records routed to it, and (unless ``-v``) native stderr too.

    Args:
        verbosity: ``quiet``, ``normal`` or ``verbose``.
        command: the subcommand, for the log file's name.
    """
    _state.level = verbosity
    fd, _state.log_path = tempfile.mkstemp(prefix=f"plantray-{command.replace(' ', '-')}-", suffix=".log")
    os.close(fd)
    handlers = [logging.FileHandler(_state.log_path, encoding="utf-8")]
    if verbosity == VERBOSE:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    _state.saved_loggers["root"] = (root.level, list(root.handlers), root.propagate)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(logging.DEBUG if verbosity == VERBOSE else logging.INFO)
    _state.handlers = handlers
    logging.captureWarnings(True)  # library warnings are log records: in the file, on the console with -v
    route_ray_logs()
    if verbosity != VERBOSE:
        _redirect_native_stderr()


def route_ray_logs() -> None:
    """Sends Ray's Python log records to plantray's handlers instead of Ray's own console handlers.

    Ray attaches a stderr handler to ``ray`` when imported and to ``ray.data`` when that is imported; call
    this again once they are (:func:`plantray.cluster.ensure_ray` does). Their file handlers (Ray's session
    logs) stay. A no-op outside a CLI run, so library users keep Ray's logging as they set it up.
    """
    if _state.log_path is None:
        return
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        if name not in _state.saved_loggers:
            _state.saved_loggers[name] = (logger.level, list(logger.handlers), logger.propagate)
        for h in list(logger.handlers):
            if type(h) is logging.StreamHandler or type(h).__name__ == "PlainRayHandler":
                logger.removeHandler(h)
        logger.propagate = True


def _redirect_native_stderr() -> None:
    """Points file descriptor 2 at the log file; plantray's own stderr lines keep going to the terminal."""
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a captured stream (pytest): leave descriptors alone
        real = False
    if not real:
        return
    sys.stderr.flush()
    _state.saved_fd = os.dup(2)
    _state.terminal_err = os.fdopen(os.dup(_state.saved_fd), "w", buffering=1, encoding="utf-8",
                                    errors="backslashreplace")
    with open(_state.log_path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 2)
    sys.stderr = _state.terminal_err


def close(keep_log: bool) -> str | None:
    """Ends a CLI run: restores stderr and logging; deletes the log unless ``keep_log``.

    Returns:
        The log file's path when kept, else None.
    """
    if _state.saved_fd is not None:
        sys.stderr.flush()
        os.dup2(_state.saved_fd, 2)
        os.close(_state.saved_fd)
        sys.stderr = sys.__stderr__
        _state.terminal_err.close()
    for name, (lvl, handlers, propagate) in _state.saved_loggers.items():
        logger = logging.getLogger() if name == "root" else logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(lvl)
        logger.propagate = propagate
    for h in _state.handlers:
        h.close()
    logging.captureWarnings(False)
    _drop_colour_reset_at_exit()
    path = _state.log_path
    if path and not keep_log:
        os.unlink(path)
        path = None
    _state.__init__()
    return path


def _drop_colour_reset_at_exit() -> None:
    """Keeps the terminal's last line plantray's.

    Ray's CLI logger (imported by ``ray.init``) calls colorama's ``init``, which registers an exit handler that
    writes ESC[0m to a terminal: a stray ``^[[0m`` after the summary in a captured session. plantray prints no
    colour, so there is nothing to reset; colorama registers the handler once per process, so it stays gone.
    """
    initialise = sys.modules.get("colorama.initialise")
    if initialise is not None and hasattr(initialise, "reset_all"):
        atexit.unregister(initialise.reset_all)


class Progress:
    """One live progress line for a long stage: done/total, rate, failures so far, time left.

    On a terminal it is a tqdm bar redrawn in place; otherwise (CI, ``ray job submit``, cron) a plain line at
    most every :data:`DEFAULT_PLAIN_INTERVAL` seconds (``PLANTRAY_PROGRESS_INTERVAL``) and one at the end.
    Nothing is shown with ``-q``. Use as a context manager; :meth:`update` takes absolute counts, so
    several sources (chunks, epochs, restarts) can report what they have done so far.

    Args:
        desc: what the stage does, e.g. ``"classifying"``.
        total: the expected count, or None when unknown.
        unit: what is counted (``"images"``).
        initial: already done before this run (a resumed run).
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "images", initial: int = 0):
        self.desc, self.total, self.unit = desc, total, unit
        self.done, self.failed, self.note = initial, 0, ""
        self.initial, self.started = initial, time.monotonic()
        self._last_plain = self.started
        self._bar = None
        self._shown = _state.level != QUIET
        self._interval = float(os.environ.get(PLAIN_INTERVAL_ENV) or DEFAULT_PLAIN_INTERVAL)
        if self._shown and _terminal_width() > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=f"  {desc}", unit=f" {unit}", file=sys.stdout,
                             dynamic_ncols=True, leave=True, smoothing=0.1,
                             bar_format="{desc}: {n_fmt}/{total_fmt}{unit} {percentage:3.0f}%|{bar:12}| "
                                        "{rate_fmt}, {remaining} left{postfix}" if total else
                                        "{desc}: {n_fmt}{unit}, {rate_fmt}{postfix} [{elapsed}]")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:  # the error says what happened: no closing progress line under it
            self._shown = self._shown and self._bar is not None
        self.close()

    def update(self, done: int | None = None, failed: int | None = None, note: str | None = None,
               total: int | None = None) -> None:
        """Sets the counts so far (absolute, not increments) and an optional note such as ``epoch 3/12``."""
        if total is not None:
            self.total = total
        self.done = self.done if done is None else max(done, 0)
        self.failed = self.failed if failed is None else failed
        self.note = self.note if note is None else note
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.set_postfix_str(self._postfix()[2:], refresh=False)  # tqdm adds the ", "
            self._bar.update(self.done - self._bar.n)
        elif self._shown and time.monotonic() - self._last_plain >= self._interval:
            self._last_plain = time.monotonic()
            print(self.line(), file=sys.stdout, flush=True)

    def _postfix(self) -> str:
        parts = [f"{self.failed:,} failed"] if self.failed else []  # before the note: a narrow terminal cuts the end
        if self.note:
            parts.append(self.note)
        return ", " + ", ".join(parts) if parts else ""

    def line(self) -> str:
        """The plain line: ``  classifying: 640/1,000 images (64%), 12.3 images/s, 2 failed, about 29 s left``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (self.done - self.initial) / elapsed
        text = f"  {self.desc}: {self.done:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {rate:.1f} {self.unit}/s{self._postfix()}"
        if self.total and rate > 0 and self.done < self.total:
            text += f", about {format_seconds((self.total - self.done) / rate)} left"
        return text

    def close(self) -> None:
        """Ends the line: the bar stays as drawn; without a terminal a last plain line is printed."""
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix()[2:], refresh=False)  # tqdm adds the ", "
            self._bar.close()
        elif self._shown:
            print(self._final_line(), file=sys.stdout, flush=True)
        self._shown = False

    def _final_line(self) -> str:
        """The last plain line: the counts and how long the stage took (no time left)."""
        return self.line().split(", about ")[0] + f", {format_seconds(time.monotonic() - self.started)}"


def _terminal_width() -> int:
    """Columns of the terminal stdout is, or 0 when stdout is no terminal (or one of no size: draw no bar)."""
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else 0
    except (AttributeError, OSError, ValueError):
        return 0


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: how long, to a person."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
