"""Check that the installed OpenMMLab stack is one mmtrpts supports."""
from importlib.metadata import PackageNotFoundError, version

from mmengine.utils import digit_version

# name -> (min inclusive, max exclusive); the tested versions are in README.
SUPPORTED = {
    'mmengine': ('0.10.0', '1.0.0'),
    'mmpretrain': ('1.2.0', '1.3.0'),
    'mmcv': ('2.0.0', '2.4.0'),
}


def _installed_version(name: str) -> str:
    if name == 'mmcv':
        import mmcv  # provided by either mmcv or mmcv-lite
        return mmcv.__version__
    try:
        return version(name)
    except PackageNotFoundError:
        raise ImportError(
            f'mmtrpts needs {name} {SUPPORTED[name][0]} <= version < '
            f'{SUPPORTED[name][1]}, but {name} is not installed. '
            'Run `make env` (see README) to install the tested stack.')


def check_stack(supported: dict = SUPPORTED) -> None:
    """Raise ImportError naming each package whose version is unsupported."""
    problems = []
    for name, (low, high) in supported.items():
        found = _installed_version(name)
        if not (digit_version(low) <= digit_version(found) <
                digit_version(high)):
            problems.append(f'{name}=={found} (supported: {low} <= version '
                            f'< {high})')
    if problems:
        raise ImportError('mmtrpts does not support the installed '
                          + ', '.join(problems) + '. Install the tested '
                          'stack listed in requirements/runtime.txt.')
