"""expmatrix: honest comparisons of input tokenizations for transformers, over factor grids."""

__version__ = "0.1.0"
