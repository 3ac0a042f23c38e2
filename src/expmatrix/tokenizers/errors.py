"""The error every tokenizer raises for input it cannot encode faithfully (no torch import)."""


class TokenizerError(ValueError):
    """Input a tokenizer cannot encode faithfully; the message names the feature and what was found."""
