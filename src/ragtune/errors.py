"""Errors a user can act on: each names the file, line or key at fault and says what to do."""


class RagtuneError(Exception):
    """Base class for every error ragtune raises on purpose (bad input, missing prerequisites)."""


class DataError(RagtuneError):
    """A data file breaks its contract. The message starts with `file:line:`."""


class ParamsError(RagtuneError):
    """params.yaml has an unknown key, a wrong type or an out-of-range value."""
