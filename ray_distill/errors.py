"""Errors that reach the user as one clear line instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (config, paths, names): the CLI prints the
    message and exits non-zero without a traceback."""


class ConfigError(UserError):
    """An invalid config file, override or value; the message names the key."""


class DataError(UserError):
    """A malformed data file; the message names the file and the record."""


class ModelNotFoundError(UserError):
    """A model or embedder name that cannot be resolved to local files."""
