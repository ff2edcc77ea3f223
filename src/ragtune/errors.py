"""Errors a user can act on: each names the file, line or key at fault and says what to do."""


class RagtuneError(Exception):
    """Base class for every error ragtune raises on purpose (bad input, missing prerequisites)."""


class DataError(RagtuneError):
    """A data file breaks its contract. The message starts with `file:line:`."""


class UnreadableFileError(DataError, ValueError):
    """A file that exists but cannot be parsed (damaged JSON, a truncated .npz). Also a ValueError, so that
    a caller that treats an unreadable optional file as absent still does."""


class ParamsError(RagtuneError):
    """params.yaml has an unknown key, a wrong type or an out-of-range value."""
