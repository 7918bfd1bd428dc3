"""Several processes under torchrun, or one plain process: the same calls work in both.

    torchrun --nproc_per_node 4 train.py ...      # one GPU per process (NCCL), or gloo on the CPU

The helpers are no-ops without a process group, so the training loop never branches on it.
"""
import os

import torch
import torch.distributed as dist

from utils.errors import UserError


def setup(device_name=None):
    """Join the process group when torchrun started several processes; return the device."""
    world = launched_processes()
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if device_name is None:
        device_name = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device_name)
    if device.type == 'cuda' and device.index is None:  # --device cuda: this process's own GPU
        device = torch.device('cuda', local_rank)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return device


def check_environment(environment=None) -> None:
    """torchrun's variables (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_PORT), where set,
    must describe a process group that can form: raise UserError naming the first that cannot (a
    process started by hand with WORLD_SIZE > 1 and no rendezvous address would otherwise wait or
    fail far from the cause). `environment`: default os.environ."""
    env = os.environ if environment is None else environment
    numbers = {}
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_PORT'):
        if name in env:
            value = env[name].strip()
            if not value.isdigit():
                raise UserError(f'{name}={env[name]} is not a whole number; unset it, or start the processes with '
                                f'torchrun (or NPROC=<n> with the launchers), which sets it')
            numbers[name] = int(value)
    world = numbers.get('WORLD_SIZE', 1)
    local_world = numbers.get('LOCAL_WORLD_SIZE', world)
    rules = (('WORLD_SIZE', world >= 1, 'at least 1'),
             ('RANK', numbers.get('RANK', 0) < world, f'below WORLD_SIZE={world}'),
             ('LOCAL_RANK', numbers.get('LOCAL_RANK', 0) < local_world, f'below LOCAL_WORLD_SIZE={local_world}'),
             ('MASTER_PORT', 1 <= numbers.get('MASTER_PORT', 1) <= 65535, 'a port from 1 to 65535'))
    for name, valid, allowed in rules:
        if not valid:
            raise UserError(f'{name}={env[name]} is not allowed; it must be {allowed} (torchrun sets it)')
    if world > 1:
        missing = [name for name in ('RANK', 'MASTER_ADDR', 'MASTER_PORT') if not env.get(name)]
        if missing:
            raise UserError(f'WORLD_SIZE={world} without {", ".join(missing)}: this process cannot find the others; '
                            f'start the processes with torchrun (or NPROC=<n> with the launchers)')


def launched_processes() -> int:
    """How many processes torchrun started (1 without torchrun), known before the group is joined."""
    return int(os.environ.get('WORLD_SIZE', 1))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the processes, in place (e.g. the E-step sums before a prior update)."""
    if dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t)


def mean_over_processes(rows: torch.Tensor) -> torch.Tensor:
    """The mean over dim 0 of `rows` of every process's batch (equal batches: the mean of their means)."""
    mean = rows.mean(0)
    all_reduce_sum(mean)
    return mean / world_size()


def all_reduce_max(tensor: torch.Tensor) -> None:
    """The elementwise maximum of `tensor` over the processes, in place."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """The tensors of every process (of the same shape), concatenated in rank order along dim 0."""
    if not dist.is_initialized():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def any_process(flag: bool, device) -> bool:
    """True when `flag` is true on any process, so that all stop at the same step."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t)
    return bool(t.item())


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
