"""Serving: a worker process hosts one engine replica per deployment it is started for.

`celery -A workers worker --deployments NAME[,NAME…]|all` makes a `Host` in its bootstep
(workers/celery.py). The package, one job per module:

- replica.py: `Runner`, one deployment's replica in this process (load in a thread, switch, drain, its
  `Replica` row) and `ProgressWatch`, which tells a wedged engine from a busy one;
- host.py: `Host`, the process's replicas (reconcile loop, Redis replica slots, heartbeats, cancel flags),
  plain Python; `install`/`hosted` make the bootstep's host explicit to the tasks that need it;
- consumers.py: the Celery glue that starts/stops consuming a deployment's queue (broadcast control);
- inference.py: the `tauon.infer` task (at most once, see there), feeding each request into the shared
  engine and writing the token deltas to the request's Redis stream.

Importing the package registers `tauon.infer` (CELERY_IMPORTS)."""

from workers.serving.consumers import Consumers
from workers.serving.host import Host, hosted, install, installed, uninstall
from workers.serving.inference import Events, infer
from workers.serving.replica import Loaded, NotServing, ProgressWatch, Runner

__all__ = ["Consumers", "Events", "Host", "Loaded", "NotServing", "ProgressWatch", "Runner", "hosted", "infer",
           "install", "installed", "uninstall"]
