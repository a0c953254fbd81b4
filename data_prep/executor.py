"""datatrove's LocalPipelineExecutor, with every process it starts ending with the command that started it.

datatrove's local executor starts a `multiprocess` Manager (a server process holding the task queue and counters)
for every run, and a Pool of worker processes when workers > 1 (through multiprocessing's fork server by default).
None of them watches the command: a `data_prep` command killed by SIGKILL left the manager and the workers
running, a worker finishing its task and writing into the work directory while a re-run started over it.
`LocalExecutor` has each of them call octomega.lifetime.die_with_parent first thing: the manager, forked by the
command, is killed by the kernel when the command ends; the workers, forked by the fork server (which waits for its
children before it exits), watch the command themselves.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import partial

from datatrove.executor import LocalPipelineExecutor

from octomega.lifetime import helper_initializer


class LocalExecutor(LocalPipelineExecutor):
    """LocalPipelineExecutor (same arguments) whose manager and worker processes end with this process."""

    def run(self):
        with _helpers_end_with(os.getpid()):
            return super().run()


@contextmanager
def _helpers_end_with(owner_pid: int):
    """While in this block, a `multiprocess` manager or pool started in this process (datatrove's run() starts
    both and offers no initializer of its own) runs die_with_parent(owner_pid) first thing in each of its processes
    (octomega.lifetime.helper_initializer), before a pool worker reads its first task."""
    from multiprocess.managers import BaseManager
    from multiprocess.pool import Pool

    start, init = BaseManager.start, Pool.__init__

    def start_manager(self, initializer=None, initargs=()):
        return start(self, partial(helper_initializer, initializer, owner_pid), tuple(initargs))

    def init_pool(self, processes=None, initializer=None, initargs=(), *args, **kwargs):
        init(self, processes, partial(helper_initializer, initializer, owner_pid), tuple(initargs), *args, **kwargs)

    BaseManager.start, Pool.__init__ = start_manager, init_pool
    try:
        yield
    finally:
        BaseManager.start, Pool.__init__ = start, init
