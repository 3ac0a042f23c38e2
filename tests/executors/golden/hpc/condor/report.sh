#!/bin/bash
# expmatrix: what one HTCondor job of thesis runs (report).
# Rendered by `expmatrix submit` from hpc/condor/job.sh.j2: edit the template, not this file.

exec expmatrix report /cluster/exp/thesis.yaml --runs /cluster/runs --profile quick --format markdown
