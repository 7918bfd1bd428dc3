"""Which of a run's arguments count: what it stores, what a resume compares, what tells two runs
apart. A run reads the loop's flags, its own method's (methods/base.py: Method.flags) and the
split settings its dataset uses (dataset.data.DATASETS); the flags of other methods and the
unused split settings are neither stored nor compared."""
from dataset.data import DATASETS
from methods import METHODS, default_arch, foreign_settings

# Arguments that do not change what is learned: they may differ when a run is resumed. The data
# itself is compared by its identity (core.run_folder.data_identity), so moving it to another
# --data-dir is fine.
RUN_ONLY = {'data_dir', 'download', 'dry_run', 'resume', 'out', 'num_workers', 'device', 'no_progress',
            'channels_last', 'compile', 'tensorboard'}
# The arguments only training reads (a --dry-run reads none of them).
TRAINING_ONLY = {'resume', 'out', 'device', 'no_progress', 'channels_last', 'compile', 'tensorboard', 'amp', 'aug',
                 'num_workers'}


def read_settings(settings: dict) -> dict:
    """`settings` (train.py's arguments as a dict) without the flags of other methods and the split
    settings the dataset does not use. An unknown method or dataset keeps everything."""
    dataset = DATASETS.get(settings.get('dataset'))
    dropped = foreign_settings(settings.get('version')) | set(dataset.unused if dataset else ())
    return {k: v for k, v in settings.items() if k not in dropped}


def unread_settings(settings: dict) -> dict:
    """The settings a run of `settings` never reads, though its method and dataset have them ->
    why, in a phrase: the split settings its dataset does not use, and what its method's
    configuration leaves unread (Method.unread_settings: e.g. the SGD settings under Adam). Given
    on the command line, they are refused (core/arguments.py); off a recipe, they are not listed."""
    dataset, method = DATASETS.get(settings.get('dataset')), METHODS.get(settings.get('version'))
    unread = {k: f'--dataset {settings["dataset"]} does not use it ({dataset.why_unused})'
              for k in (dataset.unused if dataset else ())}
    if dataset and not dataset.downloads:
        unread['download'] = (f'--dataset {settings["dataset"]} is not downloaded (README, "Data", says where its '
                              f'files come from)')
    return {**unread, **(method.unread_settings(settings) if method else {})}


def learned_settings(settings: dict) -> dict:
    """The read settings that change what is learned (the seed included)."""
    return {k: v for k, v in read_settings(settings).items() if k not in RUN_ONLY}


def resolved(settings: dict) -> dict:
    """The defaults a run resolves once it knows its dataset (--arch, --img-size) filled in."""
    dataset = DATASETS.get(settings.get('dataset'))
    if dataset is None:
        return dict(settings)
    return {**settings, 'arch': settings.get('arch') or default_arch(settings.get('version'), settings['dataset']),
            'img_size': settings.get('img_size') or dataset.image_sizes[0]}
