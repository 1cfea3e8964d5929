"""A fake clock for `dagster dev`'s daemons in the browser test (harness.dagster_dev puts this folder on the
PYTHONPATH of the processes it starts): Dagster's daemon loop interval, 30 s, becomes 2 s when
`dagster._daemon.controller` is first imported, so the levels of an asset backfill follow each other in seconds
instead of half-minutes. Nothing else changes; processes that never import the daemons are untouched."""

import importlib.abc
import importlib.util
import sys

INTERVAL_SECONDS = 2
TARGET = "dagster._daemon.controller"


class _FastDaemonLoop(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)  # find the real module, once
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            module.DEFAULT_DAEMON_INTERVAL_SECONDS = INTERVAL_SECONDS

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _FastDaemonLoop())
