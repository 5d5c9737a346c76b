"""`--device local`: this machine. Children run with this interpreter; nothing is copied."""

from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks.devices.base import DeviceSpec, run_command
from benchmarks.hoststamp import host_stamp


class LocalDevice:
    """Runs measurements in fresh child processes of this Python."""

    python = True

    def __init__(self, name: str = "local") -> None:
        self.name = name

    def stamp(self) -> dict[str, Any]:
        return {**host_stamp(), "device": f"local:{platform.node()}", "emulated": False}

    def push(self, local_dir: Path) -> str:
        return str(Path(local_dir).resolve())

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        return run_command(argv, timeout)

    def run_python(self, args: list[str], timeout: float) -> tuple[int, str, str]:
        return run_command([sys.executable, *args], timeout)

    def pull(self, remote_path: str, local_path: Path) -> None:
        if Path(remote_path).resolve() != Path(local_path).resolve():
            shutil.copyfile(remote_path, local_path)

    def close(self) -> None:
        return None


def open_device(spec: DeviceSpec, **options: Any) -> LocalDevice:
    return LocalDevice(spec.raw)
