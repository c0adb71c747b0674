"""The one error type a user can cause.

Anything raised as :class:`UserError` is the user's to fix (a wrong name, a missing file, a bad
value). Entry points print its message as a single line and exit with status 2, never a traceback.
"""


import argparse
import shlex
import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input; the message says what is wrong and what to do."""

    exit_code = 2


class TrainingDiverged(UserError):
    """The loss or the embedding became NaN or infinite: the settings (usually the learning rate) are too
    aggressive for this data. Raised instead of letting k-means or the optimiser fail on NaNs later."""

    @classmethod
    def after(cls, what: str, epoch: int | None, lr: float | None) -> "TrainingDiverged":
        when = f" at epoch {epoch}" if epoch is not None else ""
        rate = f" (lr = {lr:g})" if lr is not None else ""
        return cls(f"training diverged: the {what} is NaN or infinite{when}{rate}; lower --lr, "
                   "or check the input for extreme values")


class Interrupted(BaseException):
    """Training was stopped by a signal: SIGTERM (``kill``, ``docker stop``, a batch system's pre-emption) or Ctrl-C.

    A ``BaseException``, as ``KeyboardInterrupt``: the SIGTERM handler raises it wherever the program is, and during
    start-up that is often inside a library's import guarded by ``except Exception``, which would swallow it (the
    run then went on and ended with exit 0).

    The first signal ends training at the end of the current epoch, with a checkpoint of it; ``epoch`` is that
    epoch (None: no epoch had finished, or the signal came before training). ``exit_code`` is the shell's
    128 + signal number (143, 130), so a batch system never takes it for success."""

    def __init__(self, signum: int, epoch: int | None = None, run_dir=None, same_command: bool = False):
        """``same_command``: the run belongs to a script that continues it when run again (a results table)."""
        import signal

        self.signum, self.epoch, self.run_dir = int(signum), epoch, run_dir
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        if run_dir is None:
            text = f"interrupted ({name}) before training started; nothing to resume: run the same command again"
            if epoch is not None:
                text = f"interrupted ({name}) at epoch {epoch}; nothing was kept (no run directory)"
        elif epoch is None:
            text = (f"interrupted ({name}) before an epoch was saved; continue from the last checkpoint, if any, with: "
                    f"python train.py --resume {shlex.quote(str(run_dir))}")
        else:
            text = f"interrupted ({name}) at epoch {epoch}; continue with: python train.py --resume {shlex.quote(str(run_dir))}"
        if same_command and run_dir is not None:
            text = (text.split(";")[0] + f"; run the same command again to continue: its finished runs are kept, and "
                    f"{run_dir} continues from its checkpoint" + ("" if epoch is not None else ", if it has one"))
        super().__init__(text)


def run_entry(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command-line ``main``: a :class:`UserError` becomes one line on stderr and its exit code; so does an
    :class:`Interrupted` (a table or study script stopped by SIGTERM or Ctrl-C during one of its runs: that run
    ended after its epoch with a checkpoint, and the line says how to continue), with 128 + the signal number."""
    try:
        return main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except Interrupted as err:
        print(err, file=sys.stderr)
        return err.exit_code


class CommandLineParser(argparse.ArgumentParser):
    """argparse for every command of the project: a wrong flag is one :class:`UserError` line (exit 2 through
    :func:`run_entry`), not a usage dump. ``command`` is how the user runs it, for the hint."""

    def __init__(self, *args, command: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.command = command or f"python {self.prog}"

    def error(self, message):
        raise UserError(f"{message} (see {self.command} --help)")


def whole_number(minimum: int = 1) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum`` (counts of epochs, threads, repeats; a seed from 0).
    Anything else is the parser's one-line error, e.g. ``argument --threads: must be at least 1, got -1``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its fallback message
    return parse


def output_file(text: str):
    """An argparse ``type`` for a report the command writes at its end (``--output FILE``): checked when the command
    line is read, so a path that can never be written stops the command before any work, in one line."""
    import os
    from pathlib import Path

    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give the file to write")
    folder = nearest_existing(path.parent)
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{folder} is a file, so {text} cannot be written")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{folder} is not writable, so {text} cannot be written")
    return path


def nearest_existing(folder):
    """The nearest existing part of ``folder``, itself or a parent (absolute): a folder can be created below it only
    when it is a directory (``--output`` of a report, a batch or a run)."""
    from pathlib import Path

    folder = Path(folder).absolute()
    return next(p for p in (folder, *folder.parents) if p.exists())
