"""Job assembly: from a `Job` to its parts, in one place (`parts.Assembly`).

`recipe` (torch-free) names what a job is made of and the cache keys of its shared work; `fits` is the
tokenizer-fit cache; `parts` makes the splits, fitted tokenizer, tokens, width and model once per job.
"""
