#!/usr/bin/env bash
# Kaldi's slurm.pl: slurm.pl [options] JOB=1:N LOG COMMAND...  submits the N jobs as one Slurm
# job array and waits for it (options and conf/slurm.conf: see recipes/kocall/jobs.py).
exec python3 "$(dirname "${BASH_SOURCE[0]}")/../recipes/kocall/jobs.py" slurm.pl "$@"
