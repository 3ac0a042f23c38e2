#!/bin/bash
# expmatrix: what one HTCondor job of thesis runs (report).
# Rendered by `expmatrix submit` from hpc/condor/job.sh.j2: edit the template, not this file.
# `exec` hands HTCondor's SIGTERM (eviction, condor_vacate) straight to expmatrix, which checkpoints and
# exits 75; the submit file retries exactly that exit code.

exec expmatrix report /cluster/exp/thesis.yaml --runs /cluster/runs --profile quick --format markdown
