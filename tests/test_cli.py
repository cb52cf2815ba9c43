import signal
import subprocess
import sys
import threading
import time

import pytest

from rftlab.cli import COMMANDS, ReliableInterrupt, main

LIGHT_MODULES = ["rftlab.cli", "rftlab.answers", "rftlab.calculator", "rftlab.data", "rftlab.reject", "rftlab.toyworld"]


def test_core_and_command_line_import_neither_torch_nor_transformers():
    code = (
        f"import sys; import {', '.join(LIGHT_MODULES)}; rftlab.cli.build_parser(); "
        "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; print(heavy)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "rftlab", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("toyworld", "pretrain", "sft", "reject"))


@pytest.mark.parametrize("command", [job.COMMAND for job in COMMANDS])
def test_every_command_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    assert f"usage: rftlab {command}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["reject"], ["reject", "--train", "t.jsonl", "s.jsonl"], ["nonsense"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: rftlab" in capsys.readouterr().err


def test_missing_input_file_exits_2_naming_it(tmp_path, capsys):
    absent = tmp_path / "absent.jsonl"
    assert main(["reject", "--train", str(absent), "--out", str(tmp_path / "o.jsonl"), str(absent)]) == 2
    assert f"{absent}: cannot read" in capsys.readouterr().err


class LateToStop(threading.Event):
    """A watchdog's clock that, once, times out just as the block is left: its interrupt comes after the exit."""

    def __init__(self) -> None:
        super().__init__()
        self.late = False

    def wait(self, timeout: float | None = None) -> bool:
        if super().wait(timeout) and not self.late:
            self.late = True
            time.sleep(0.05)
            return False
        return self.is_set()


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C as in a terminal (a test run in the background starts with it ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_an_interrupt_the_watchdog_sends_as_the_block_is_left_does_not_arrive_after_it(ctrl_c_raises):
    guard = ReliableInterrupt()
    guard.left = LateToStop()
    with pytest.raises(KeyboardInterrupt), guard:
        signal.raise_signal(signal.SIGINT)
    time.sleep(0.2)  # a late interrupt would be raised here, outside any handler
    assert guard.left.late and not guard.watchdog.is_alive()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
