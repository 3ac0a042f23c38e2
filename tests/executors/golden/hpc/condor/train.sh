#!/bin/bash
# expmatrix: what one HTCondor job of thesis runs (train).
# Rendered by `expmatrix submit` from hpc/condor/job.sh.j2: edit the template, not this file.
# `exec` hands HTCondor's SIGTERM (eviction, condor_vacate) straight to expmatrix, which checkpoints and
# exits 75; the submit file retries exactly that exit code.

exec expmatrix worker /cluster/exp/thesis.yaml --runs /cluster/runs --jobs /cluster/runs/thesis/_submit/x/train.jobs --stage train --threads 4
