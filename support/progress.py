"""A line that says how far a long piece of work has come.

    progress = Progress(total, lambda done, percent: "... %.1f%% ..." % percent)
    for ...:
        progress.update(done)
    progress.end()

On a terminal the line is updated in place; in a log (output to a file or a
pipe) a line is printed for every tenth of the work, so that the log stays
short.
"""

import sys


class Progress:
    """The progress line of one piece of work.

    Args:
      total: the whole of the work (bytes, images), or 0 when unknown.
      describe: describe(done, percent) gives the line; percent is 0 when
        the total is unknown.
    """

    def __init__(self, total, describe):
        self._total = total
        self._describe = describe
        self._in_place = sys.stdout.isatty()
        self._shown = -1

    def update(self, done):
        percent = min(100.0, 100.0 * done / self._total) if self._total else 0.0
        if self._in_place or int(percent) // 10 > self._shown:
            self._shown = int(percent) // 10
            line = self._describe(done, percent)
            print(
                "\r" + line if self._in_place else line,
                end="" if self._in_place else "\n",
                flush=True,
            )

    def end(self):
        if self._in_place:
            print()
