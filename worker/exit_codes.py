"""The process's exit codes, one meaning each (docs/operations.md, "Exit codes"), chosen with
the systemd units: `RestartPreventExitStatus=2` keeps a misconfigured worker from restarting.
A leaf: it imports nothing of ours."""

EXIT_OK = 0  # done, or stopped cleanly
EXIT_FAILURE = 1  # a failure worth a restart (an internal thread died, a check failed)
EXIT_USAGE = 2  # configuration or permissions: restarting will not help
EXIT_STUCK = 3  # a plugin's calls stayed stuck: only a new process clears its threads
