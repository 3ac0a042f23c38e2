"""Data tools above the tokenizers: `data bin` (write binned files), `data compare`, `data explore`."""
