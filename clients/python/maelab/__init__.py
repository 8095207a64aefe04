"""maelab: log runs trained anywhere to a maelab server.

    import maelab
    run = maelab.init(name="mae-vitb", config=vars(args), tags=["cluster"])
    for epoch in range(epochs):
        ...
        run.log({"train_loss": loss, "train_lr": lr}, step=epoch)
    run.finish()

Standard library only. `log()` only queues (microseconds); a background
thread batches, retries and, when the server is unreachable, spools to
~/.maelab/spool for `python -m maelab sync` (or `maelab-sync`).
"""

from ._run import Run, init
from ._spool import sync_dir
from ._transport import MaelabError, RetryPolicy, Unreachable

__all__ = ["MaelabError", "RetryPolicy", "Run", "Unreachable", "init", "sync_dir"]
__version__ = "0.1.0"
