"""The generation engine: relays a model's stream to any number of subscribers and keeps
the answer, whatever happens to the clients, the provider or the process.

    manager.GenerationManager   starts, joins, resumes, stops and recovers generations;
                                its requests (`requests`) and joins (`joins`) apart
    plan.ReplyPlan              a reply, regeneration, edit or continuation, ready to start
    toolloop.tool_loop          a reply with tools: model calls and tool runs, in steps
    steps.ReplyParts            the parts of a reply in steps, as its events arrive
    generation.Generation       one live answer: its task and its event log
    final.FinalWrite            what is stored when an answer ends, and storing it
    checkpointer.Checkpointer   batched periodic saves of live answers, and heartbeats
    sweeper.OrphanSweeper       without peers: interrupting what dead processes left
    peers.Peers                 the other workers, as the manager needs them (with
                                Redis, `scaleout.Cluster`); `GenerationView`, what a
                                reader needs of a generation, local or remote
    log.EventLog                the replayable frame buffer subscribers read
    ui_stream                   typed events -> Vercel AI SDK UI message stream frames
    parts                       stored message parts <-> llm types

Nothing here imports `scaleout`: it implements `peers`' protocols and the server wires
it in.
"""

from streamkeep.generation.errors import GenerationError, ShuttingDown
from streamkeep.generation.generation import Generation
from streamkeep.generation.log import EventLog, InProcessEventLog
from streamkeep.generation.manager import GenerationManager
from streamkeep.generation.ui_stream import HEADERS as UI_STREAM_HEADERS

__all__ = [
    "UI_STREAM_HEADERS",
    "EventLog",
    "Generation",
    "GenerationError",
    "GenerationManager",
    "InProcessEventLog",
    "ShuttingDown",
]
