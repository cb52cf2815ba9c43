"""The `rftlab` command: one subcommand per job (`rftlab.jobs`), its flags made from the job's fields.

Start-up stays light: the job modules import their stages (and torch) only when a job runs.
"""

from __future__ import annotations

import _thread
import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from rftlab import __version__
from rftlab.jobs.base import Job, add_arguments, from_namespace
from rftlab.jobs.budget import BudgetJob
from rftlab.jobs.checkers import CheckersJob
from rftlab.jobs.demo import DemoJob
from rftlab.jobs.eval import EvalJob
from rftlab.jobs.forecast import ForecastJob
from rftlab.jobs.gsm8k import Gsm8kJob
from rftlab.jobs.pretrain import PretrainJob
from rftlab.jobs.reject import RejectJob
from rftlab.jobs.sample import SampleJob
from rftlab.jobs.sft import SftJob
from rftlab.jobs.study import StudyJob
from rftlab.jobs.world import WorldJob

EXIT_BAD_INPUT = 2
COMMANDS: tuple[type[Job], ...] = (WorldJob, Gsm8kJob, PretrainJob, SftJob, SampleJob, BudgetJob, RejectJob,
                                   EvalJob, ForecastJob, CheckersJob, DemoJob, StudyJob)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rftlab",
        description="Rejection-sampling fine-tuning (RFT) for math word problems, and its scaling studies.",
    )
    parser.add_argument("--version", action="version", version=f"rftlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for job in COMMANDS:
        command = commands.add_parser(job.COMMAND, help=job.HELP, description=job.DESCRIPTION)
        add_arguments(command, job)
        command.set_defaults(job=job)
    return parser


def _leave_process_group() -> None:
    """Under torchrun or accelerate launch: every rank waits for the others, then leaves the process group.
    A rank that exits while another still works (rank 0 saving the model) can abort in gloo's teardown."""
    if "torch" not in sys.modules:  # no stage ran torch: nothing to leave
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class ReliableInterrupt:
    """Ctrl-C as a KeyboardInterrupt that is not lost, while the `with` block runs. Python raises it wherever the
    main thread is, and one raised inside a finaliser (`__del__`, run by the garbage collector) is dropped, so
    a long stage would go on: after a Ctrl-C, a watchdog thread raises it again every half second until the
    block is left. Leaving stops the watchdog first, and drops an interrupt it sent on its way out, so none
    arrives after the block (where it would kill the process instead of ending it with status 130). Where
    Ctrl-C is ignored, or off the main thread, nothing changes."""

    repeat = 0.5  # seconds between the watchdog's raises

    def __init__(self) -> None:
        self.left = threading.Event()
        self.previous = signal.getsignal(signal.SIGINT)
        self.active = (
            self.previous is signal.default_int_handler and threading.current_thread() is threading.main_thread()
        )
        self.watchdog: threading.Thread | None = None

    def __enter__(self) -> ReliableInterrupt:
        if self.active:
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exception: object) -> None:
        self.left.set()
        if self.watchdog is not None:
            self.watchdog.join()
        if self.active:  # signal.signal first runs any pending interrupt's handler: ours, which drops it now
            signal.signal(signal.SIGINT, self.previous)

    def _handler(self, signum: int, frame: object) -> None:
        if self.left.is_set():
            return
        if self.watchdog is None:
            self.watchdog = threading.Thread(target=self._watch, daemon=True)
            self.watchdog.start()
        raise KeyboardInterrupt

    def _watch(self) -> None:
        while not self.left.wait(self.repeat):
            _thread.interrupt_main()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; exit status 0 on success, 2 on bad input (the message names the file and line, or the
    option), 1 when a step outside rftlab failed, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    from rftlab.data import DataError

    try:
        with ReliableInterrupt():
            job = from_namespace(args.job, args)
            message = job.message(job.execute())
        if message:
            print(message)
        _leave_process_group()
        return 0
    except (DataError, FileExistsError, ValueError) as error:
        print(f"rftlab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ChildProcessError as error:
        print(f"rftlab {args.command}: error: {error}", file=sys.stderr)
        return 1
    except ImportError as error:  # an optional dependency a setting needs (peft for --lora-r, say)
        print(f"rftlab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:  # a full disk, a read-only folder, a path below a file: the path and the reason
        where = f"{error.filename}: " if error.filename else ""
        print(f"rftlab {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"rftlab {args.command}: interrupted", file=sys.stderr)
        return 130
