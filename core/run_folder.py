"""The run folder (--out) and what may continue in it: its default name, args.json, and the checks
that a resumed run learns what its checkpoint's run learned, from the same data, and that a folder
only ever holds one run.

A run folder holds args.json, log.txt, metrics.jsonl, checkpoint.pt (and checkpoint.prev.pt),
best.pt, and run.lock while it runs.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from core.checkpoint import CHECKPOINT, PREVIOUS, latest_good_checkpoint, load_checkpoint
from core.settings import learned_settings
from dataset.splits import setting_name
from utils.errors import UserError


def setting_folder(args) -> str:
    """The split's part of a run folder: the paper's setting name and ratios, e.g. reversed_gl150,
    consistent_gl150_gu120, uniform_gl100; STL-10 gl10; the ImageNet variants their image size."""
    if args.dataset == 'stl10':
        return f'gl{args.imb_ratio_label:g}'
    if args.dataset == 'smallimagenet':
        return f'{args.img_size}px'
    if args.dataset == 'smallimagenet_1k':
        return f'gl{args.imb_ratio_label:g}_{args.img_size}px'
    name = setting_name(args.imb_ratio_unlabel, args.flag_reverse_LT)
    same_ratio = name == 'uniform' or args.imb_ratio_unlabel == args.imb_ratio_label
    return f'{name}_gl{args.imb_ratio_label:g}' + ('' if same_ratio else f'_gu{args.imb_ratio_unlabel:g}')


def default_out_dir(args, on_recipe: bool) -> Path:
    """result/<dataset>/<setting>/<method>_seed<seed>, e.g. result/cifar10/reversed_gl150/SimPro_seed0.
    A run off its method's paper recipe (core/recipes.py) adds a digest of every setting that
    changes what is learned (all of them are in the run's args.json), so no two differ only there."""
    name = args.version
    if not on_recipe:
        learned = {k: v for k, v in sorted(learned_settings(vars(args)).items()) if k != 'seed'}
        name += '-' + hashlib.sha1(json.dumps(learned, sort_keys=True).encode()).hexdigest()[:8]
    return Path('result') / args.dataset / setting_folder(args) / f'{name}_seed{args.seed}'


def write_args(out: Path, args_dict: dict) -> None:
    """args.json: the resolved configuration of the run in `out` (written whole or not at all)."""
    tmp = out / 'args.json.tmp'
    try:
        tmp.write_text(json.dumps(args_dict, indent=2) + '\n')
        os.replace(tmp, out / 'args.json')
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f'cannot write to --out {out} ({e.strerror}); choose a writable directory')


def resolve_resume(args, identity: dict, default_out: Path, defaults: dict):
    """(output directory, checkpoint to continue from or None, notes to log), after checking that
    the checkpoint's run learned what this one would (settings and data, `identity`) and that the
    output directory holds no other run: a run is never mixed with another or overwritten. The
    output directory is --out, else the resumed checkpoint's, else `default_out`; `defaults` are
    train.py's (a checkpoint written before a flag existed resumes with the flag's default)."""
    out = Path(args.out) if args.out else default_out
    if args.resume == 'auto':
        checkpoint, source = latest_good_checkpoint(out, warn=lambda text: print(text, file=sys.stderr)), out
    elif args.resume:
        path = Path(args.resume)
        path = path / CHECKPOINT if path.is_dir() else path
        if not path.is_file():
            raise UserError(f'--resume {args.resume}: no checkpoint there')
        try:
            checkpoint, source = load_checkpoint(path), path.parent
        except UserError as e:
            raise UserError(f'{e}; pass another --resume')
        out = Path(args.out) if args.out else source
    else:
        if (out / CHECKPOINT).exists() or (out / PREVIOUS).exists():
            raise UserError(f'{out} already holds a run; pass --resume auto to continue it, or choose another --out')
        checkpoint, source = None, None
    notes = []
    if checkpoint:
        notes = check_same_settings(checkpoint['args'], args, defaults) + check_same_data(checkpoint, identity, args)
    if checkpoint is None or not same_folder(out, source):
        check_holds_no_other_run(out, args, identity, defaults)
    return out, checkpoint, notes


def same_folder(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and os.path.samefile(a, b)


def changed_settings(saved: dict, args, defaults: dict):
    """(changed, notes): '--flag saved (now value)' for each setting this run reads that changes
    what is learned and differs from the `saved` run's; a setting the saved run did not record (a
    flag added since) counts as its default, with a note when this run keeps it."""
    changed, notes = [], []
    for k, v in learned_settings(vars(args)).items():
        flag = f'--{k.replace("_", "-")}'
        if k in saved:
            if saved[k] != v:
                changed.append(f'{flag} {saved[k]} (now {v})')
        elif v == defaults.get(k):
            notes.append(f'{flag}: the checkpoint predates this flag; it resumes with its default, {v}')
        else:
            changed.append(f'{flag} {v} (the checkpoint predates this flag; its run had the default, '
                           f'{defaults.get(k)})')
    return changed, notes


def check_same_settings(saved: dict, args, defaults: dict) -> list:
    """A resumed run must learn exactly what the checkpoint's run learned; returns the notes."""
    changed, notes = changed_settings(saved, args, defaults)
    if changed:
        raise UserError(f'the checkpoint was trained with {", ".join(changed)}; resume with the same settings '
                        f'or use a new --out')
    return notes


def data_identity(data) -> dict:
    """What identifies the data a run learns from, cheaply (milliseconds, even for ImageNet): the
    number and size of the images, a checksum of the split's labels and rows and of 64 images
    spread over it, the same for the test set. Stored in every checkpoint; equal when the same
    files are read from another --data-dir."""
    def checksum(*arrays) -> str:
        digest = hashlib.sha256()
        for a in arrays:
            digest.update(np.ascontiguousarray(a).tobytes())
        return digest.hexdigest()[:16]

    def sample(images):
        return images[np.linspace(0, len(images) - 1, min(64, len(images))).astype(np.int64)]

    return {'training images': f'{len(data.images)} of {"x".join(map(str, data.images.shape[1:]))}',
            'labels of the split': checksum(data.labels, data.labeled_idx, data.unlabeled_idx),
            'training image content': checksum(sample(data.images)),
            'test set': f'{len(data.test_images)} images, {checksum(data.test_labels, sample(data.test_images))}'}


def check_same_data(checkpoint: dict, identity: dict, args) -> list:
    """A resumed run must read the data its checkpoint's run read; a checkpoint from before this
    check holds no identity and is not checked (returned: the note that says so)."""
    saved = checkpoint.get('data')
    if saved is None:
        return ['the checkpoint holds no identity of its data (an older train.py wrote it): the data it was trained '
                'on cannot be checked']
    if saved == identity:
        return []
    differ = ', '.join(f'{what} {saved.get(what)} (now {now})' for what, now in identity.items()
                       if saved.get(what) != now)
    raise UserError(f'--data-dir {args.data_dir} holds other data than the checkpoint\'s run read from '
                    f'{checkpoint["args"].get("data_dir")}: {differ}; resume with the same data or use a new --out')


def check_holds_no_other_run(out: Path, args, identity: dict, defaults: dict) -> None:
    """Starting, or resuming a checkpoint from elsewhere, into `out`: refused when `out` holds a
    run with other settings or data (described by its checkpoint, else by its args.json)."""
    recorded, data = None, None
    try:
        saved = latest_good_checkpoint(out, warn=lambda text: None)
        if saved:
            recorded, data = saved['args'], saved.get('data')
        elif (out / 'args.json').is_file():
            recorded = json.loads((out / 'args.json').read_text())
    except (UserError, ValueError, OSError):
        raise UserError(f'--out {out} holds a run whose checkpoint or args.json cannot be read; choose another '
                        f'--out')
    if recorded is None:
        return
    changed, _ = changed_settings(recorded, args, defaults)
    if data is not None and data != identity:
        changed.append(f'other data, from --data-dir {recorded.get("data_dir")}')
    if changed:
        raise UserError(f'--out {out} holds another run, trained with {", ".join(changed)}; choose another --out')
