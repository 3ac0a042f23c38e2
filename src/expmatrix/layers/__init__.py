"""Transformer building blocks that know nothing of tokenizers or jobs: attention blocks (normformer, prenorm),
the packing of real tokens, position encodings. The job's model (`models/`) and the VQ-VAE's object encoder
(`tokenizers/vqvae/`) are both built from them."""
