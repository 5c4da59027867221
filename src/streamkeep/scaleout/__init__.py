"""Scale out: several workers and hosts sharing live generations through Redis.

cluster.Cluster            what one worker needs: `generation.peers.Peers` over Redis
cluster.connect            the process's Redis client
writer.RedisWriter         one task per process: every generation's frames, batched
redis_log.RedisEventLog    a local generation's log, mirrored to a Redis Stream
redis_log.RemoteEventLog   a generation running elsewhere, read from its stream
control.ControlBus         stop requests between workers (pub/sub)
liveness                   worker presence keys, and reaping dead workers' work
remote.RemoteGeneration    a generation another worker runs (a `GenerationView`)
keys.Keys                  every Redis key and channel name
"""

from streamkeep.scaleout.cluster import Cluster, connect
from streamkeep.scaleout.control import ControlBus
from streamkeep.scaleout.keys import Keys
from streamkeep.scaleout.liveness import Reaper, WorkerRegistry
from streamkeep.scaleout.redis_log import FramesLost, RedisEventLog, RemoteEventLog
from streamkeep.scaleout.remote import RemoteGeneration
from streamkeep.scaleout.writer import RedisWriter

__all__ = [
    "Cluster",
    "ControlBus",
    "FramesLost",
    "Keys",
    "Reaper",
    "RedisEventLog",
    "RedisWriter",
    "RemoteEventLog",
    "RemoteGeneration",
    "WorkerRegistry",
    "connect",
]
