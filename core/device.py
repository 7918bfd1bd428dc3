"""The device of a run and the options whose defaults depend on it."""
import torch

from utils import distributed
from utils.errors import UserError


def resolve_device(name):
    """The device of this process (cuda:LOCAL_RANK under torchrun), joining the process group."""
    try:
        device = distributed.setup(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as e:
        what = f'--device {name}' if name else 'the default device'
        raise UserError(f'{what} is not usable here ({str(e).splitlines()[0]})')
    return device


def resolve_speed_options(args, device, image_bytes: int = 0) -> list:
    """Defaults that depend on the device: on CUDA, batched augmentation on the GPU when the split's
    images (`image_bytes`) take at most a quarter of its memory, channels-last, and cuDNN timing its
    convolution algorithms once (every training step has the same shapes). Returns what the run
    should say of an option the device does not read (--amp on the CPU), for its first lines."""
    cuda = device.type == 'cuda'
    fits = cuda and image_bytes <= torch.cuda.get_device_properties(device).total_memory // 4
    args.aug = args.aug or ('gpu' if fits else 'cpu')
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    notes = [] if cuda or not args.amp else [f'--amp is not read on {device}: bf16 autocast is for CUDA; the run '
                                             f'trains in float32']
    args.amp = args.amp and cuda
    torch.backends.cudnn.benchmark = cuda
    return notes
