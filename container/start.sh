#!/bin/sh
# What the image's CMD runs (Dockerfile, stage "runtime"), runnable outside Docker.
#
#   container/start.sh [edgeward serve FLAG...]
#
# Runs `edgeward serve` (from PATH) in the foreground, replacing this shell (exec), so the
# gateway (or, with EDGEWARD_WORKERS > 1, its supervisor) is the process the runtime signals:
# SIGTERM drains and exits 0 (STOPSIGNAL SIGTERM; keep EDGEWARD_SHUTDOWN_GRACE_MS below the
# runtime's stop timeout), SIGHUP replaces the workers one at a time (docs/workers.md).
# Settings are the EDGEWARD_* variables (the image's ENV lines, docs/container.md).
set -eu

# Each connection is a file descriptor: the listeners cap themselves by the fd limit less
# EDGEWARD_FD_RESERVE. Raise the soft limit to the hard one, as a server should; the hard limit is
# the runtime's to set (docker run --ulimit nofile=65536:65536, compose `ulimits`): a process in the
# container cannot raise it. Say what it is.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
limit=$(ulimit -n)
echo "container/start.sh: open file limit $limit" >&2
case $limit in
    unlimited) ;;
    *) if [ "$limit" -lt 16384 ]; then
           echo "container/start.sh: warning: an open file limit of $limit caps connections low;" \
               "run with --ulimit nofile=65536:65536 (docs/container.md)" >&2
       fi ;;
esac

exec edgeward serve "$@"
