"""A stage's output files, written while the stage still runs.

Writing a file durably costs an fsync, which on a batch of small images costs more than encoding them.
So each file the stage emits goes at once to a worker that writes it to a fsynced temporary file beside
its target, while the stage decodes and encodes the next image; once the stage has succeeded, the files
take their names in order (stages/output/writer.py: never overwriting, identical files left alone). A
stage that fails leaves no file behind: its temporary files are removed.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from sdbake.runner.plan import Invocation, Plan
from sdbake.stages.output.writer import PendingFile, commit_new_file, discard_pending, prepare_new_file

WRITERS = 4


class StageFiles:
    def __init__(self, plan: Plan, inv: Invocation):
        self.root = plan.output_root
        self.on_exists = getattr(inv.stage, "on_exists", "number")
        self.sequence = getattr(inv.stage, "sequence_number", False)
        self.writers = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="sdbake-write")
        self.pending: dict[str, Future[PendingFile]] = {}

    def emitted(self, relative: str, data: bytes) -> None:
        """The stage's hook for each file it emits (StageContext.on_file)."""
        if relative in self.pending:                 # emitted again: the last bytes win, as in side_files
            self._discard(self.pending.pop(relative))
        self.pending[relative] = self.writers.submit(prepare_new_file, self.root / relative, data, self.on_exists,
                                                     root=self.root, sequence=self.sequence)

    def commit(self, console) -> list:
        """Name every file, in path order; [(status, path)] as materialize gives them."""
        written = []
        try:
            for relative in sorted(self.pending):
                result = commit_new_file(self.pending.pop(relative).result())
                written.append((result.status, result.path))
                console.line(f"  {result.status}: {result.path}")
        finally:
            self.discard()
        return written

    def discard(self) -> None:
        """Remove what was prepared and not committed (the stage failed, or a commit did)."""
        for future in self.pending.values():
            self._discard(future)
        self.pending.clear()
        self.writers.shutdown(wait=True)

    @staticmethod
    def _discard(future: Future) -> None:
        if future.exception() is None:             # a prepare that failed left nothing to remove
            discard_pending(future.result())
