"""User-facing errors. The CLI prints these as one line and exits with status 2, without a traceback."""


class ErasekitError(Exception):
    """Base class for errors caused by user input (configs, paths, flags, files)."""


class ConfigError(ErasekitError):
    """A configuration value is unknown, of the wrong type or out of range."""


class ModelLoadError(ErasekitError):
    """A model path, hub id or checkpoint cannot be loaded."""


class OutputExistsError(ErasekitError):
    """An output already exists and `overwrite` was not given."""


class NonFiniteError(ErasekitError):
    """Training produced a NaN or infinite loss or gradient more often than `skip_nonfinite` allows."""
