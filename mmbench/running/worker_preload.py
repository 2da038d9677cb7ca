"""What the workers' server imports once, so that no worker pays for it (`worker_server.PRELOAD`).

torch and mmbench; torch's compiler front end, which every torch.optim optimizer imports (over a second); the
registry of the installed plugins (and of the plugin folders in the server's environment), which a worker
reuses while its runner names the same folders (`registry.default`). Then the heap is frozen (`gc.freeze`), so
that the workers' garbage collections neither walk nor copy the pages of what they inherited.
"""

import gc

from mmbench.lifetime import end_with_parent

end_with_parent()  # the server ends with the runner that started it, and its workers with the server

import torch._dynamo  # noqa: E402, F401

import mmbench.api  # noqa: E402, F401
from mmbench import registry  # noqa: E402

registry.default()
gc.freeze()
