"""DDP started from `vggbench train` itself (--nproc-per-node N, or --device cuda:I,J,...): the processes are
launched through torch.distributed.run's API (LaunchConfig + elastic_launch), so vggbench's options never pass
through torchrun's own parser (which takes `--monitor` for its `--monitor-interval`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import uuid
from pathlib import Path

from ..core import errors
from ..core.errors import UnsupportedError, VggbenchError
from .config import TrainConfig, device_list

ERROR_FILE = "error-{rank}.txt"  # a worker's VggbenchError: class name, then the message


def world_size(config: TrainConfig) -> int:
    """How many processes a run asks for: the GPUs of --device cuda:I,J,..., else --nproc-per-node."""
    gpus = device_list(config.device)
    return len(gpus) if gpus else config.nproc_per_node


def check_devices(config: TrainConfig) -> None:
    """--device cuda:I,J,... needs those GPUs here, and --nproc-per-node (if given) must agree with the list."""
    gpus = device_list(config.device)
    if not gpus:
        return
    if config.nproc_per_node not in (1, len(gpus)):
        raise UnsupportedError(f"--device {config.device} starts {len(gpus)} processes, one per GPU, but "
                               f"--nproc-per-node says {config.nproc_per_node}; drop one of them")
    from ..core.device import cuda_count

    have = cuda_count()
    if max(gpus) >= have:
        raise UnsupportedError(f"--device {config.device}: DDP over these GPUs needs CUDA device {max(gpus)}, and "
                               f"this machine has {have} CUDA device{'' if have == 1 else 's'}; on the CPU use "
                               f"--device cpu --nproc-per-node N")


def launch(config: TrainConfig, train):
    """Run `train(config)` (a module-level function: each process imports it) in world_size(config) processes on
    this machine; rank 0's result."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_devices(config)
    n = world_size(config)
    if device_list(config.device):
        print(f"note: --device {config.device} trains with DDP over these {n} GPUs, one process each (what "
              f"DataParallel did in one process)", file=sys.stderr, flush=True)
    # torchrun --standalone's rendezvous: a c10d store on a free local port, a fresh run id, no restarts
    launch_config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=str(uuid.uuid4()),
                                 rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                                 monitor_interval=0.1, start_method="spawn")
    with tempfile.TemporaryDirectory(prefix="vggbench-ddp-") as box, _agent_quiet():
        try:
            results = elastic_launch(launch_config, _worker)(train, config, box, n)
        except ChildFailedError as e:
            raise _worker_error(Path(box), e) from None
    return results[0]


@contextlib.contextmanager
def _agent_quiet():
    """The elastic agent logs a failed worker's traceback at ERROR, from loggers it makes as it goes (each with
    its own level): logging is off up to ERROR in this process while it waits, and the worker's one error line
    says what failed."""
    import logging

    before = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(before)


def _worker(train, config: TrainConfig, box: str, n: int):
    """One rank: a VggbenchError is left in `box` for the launcher to raise as one line, and the rank fails
    (so that the agent stops the others instead of leaving them waiting in a collective)."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:  # n processes sharing the cores, as torchrun would set it
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    try:
        # rebuilt, not unpickled as is: the checks run again and a --config model is registered in this process
        return train(dataclasses.replace(config))
    except VggbenchError as e:
        rank = os.environ.get("RANK", "0")
        (Path(box) / ERROR_FILE.format(rank=rank)).write_text(f"{type(e).__name__}\n{e}")
        sys.exit(e.exit_code)


def _worker_error(box: Path, failure) -> VggbenchError:
    """The lowest rank's VggbenchError, as the launcher raises it; else a TrainingError naming the failed rank."""
    for path in sorted(box.glob("error-*.txt"), key=lambda p: int(p.stem.split("-")[1])):
        kind, _, message = path.read_text().partition("\n")
        cls = getattr(errors, kind, None)
        if isinstance(cls, type) and issubclass(cls, VggbenchError) and kind != "WriteError":
            return cls(message)
        return errors.TrainingError(message)
    rank, first = min(failure.failures.items()) if failure.failures else (0, None)
    said = f" ({first.message})" if first is not None and first.message else ""
    return errors.TrainingError(f"DDP process rank {rank} failed{said}; see its output above")
