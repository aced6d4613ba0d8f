#!/usr/bin/env bash
# Kaldi's run.pl: run.pl [options] JOB=1:N LOG COMMAND...  runs N local jobs (see recipes/kocall/jobs.py).
exec python3 "$(dirname "${BASH_SOURCE[0]}")/../recipes/kocall/jobs.py" run.pl "$@"
