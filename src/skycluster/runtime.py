"""The composition root: builds the node and the layers above it, and wires them.

A dedicated thread with its own event loop hosts the node (distribution layer),
its messenger (messaging), its operations (metrics, logs, HTTP, status frames),
the port-mapper registration and the discovery strategies.

Heartbeats, handshakes and discovery run here, so an application that blocks
its own event loop, or runs CPU-bound code, cannot make its node look dead.
Everything else talks to this loop through thread-safe futures. Started from
an event loop (the application's), the node lets that loop read its links once
they are up (``Node.read_on``): replies and messages arrive where they are
awaited, without a hop between threads.

With ``node_loop="shared"`` there is no thread: the node runs as a task on the
event loop that starts it. Replies then reach a caller without a hop between
threads (calls answer sooner), at the price of that guarantee: a loop blocked
for longer than the heartbeat timeout makes the node look dead to its peers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from skycluster import _blocking
from skycluster._backoff import Backoff
from skycluster._tasks import TaskSet
from skycluster.distribution import frame_types, portmapper
from skycluster.distribution.epmd_protocol import HIGHEST_VERSION, LOWEST_VERSION
from skycluster.distribution.node import Node
from skycluster.distribution.registration import RegistrationKeeper
from skycluster.distribution.settings import NodeSettings, PortMapperSettings
from skycluster.errors import NodeUnreachable
from skycluster.events import EventBus
from skycluster.membership.driver import MembershipDriver
from skycluster.messaging.messenger import Messenger
from skycluster.names import NodeName
from skycluster.ops.remote import RemoteStatus
from skycluster.ops.service import Operations
from skycluster.strategy.base import StrategyContext, Topology

if TYPE_CHECKING:  # imported by nodes that run Erlang distribution only (erlang=True)
    from skycluster.erlang.erpc import Exposed
    from skycluster.erlang.node import ErlangNode
    from skycluster.erlang_processes import ErlangProcesses

T = TypeVar("T")

SHARED_NEEDS_A_LOOP = (
    "node_loop='shared' runs the node on the application's event loop: "
    "start it there with 'await cluster.start()' or 'async with Cluster(...)'"
)
log = logging.getLogger("skycluster.runtime")


class Runtime:
    """Runs one node: owns the thread and event loop it runs on (or, with
    ``node_loop="shared"``, the task on the application's loop), and, while it
    runs, the :class:`Node`, its :class:`Messenger`, its :class:`RemoteStatus`
    and :class:`Operations`, the port-mapper registration and one supervised
    task per strategy; it builds them, wires the upper layers to the node's
    hooks, and stops them in the reverse order."""

    def __init__(
        self,
        settings: NodeSettings,
        cookie: bytes,
        bus: EventBus,
        topologies: Mapping[str, Topology],
        *,
        restart_backoff: tuple[float, float] = (0.5, 30.0),
        erlang_cookie: bytes | None = None,
        exposed: Exposed | None = None,
    ) -> None:
        self.settings = settings
        self._cookie = cookie
        self._erlang_cookie = erlang_cookie  # with settings.erlang
        self._exposed = exposed  # erpc: the Cluster's, kept across restarts
        self._bus = bus
        self._topologies = dict(topologies)
        self._backoff = restart_backoff
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None  # node_loop="shared"
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.loop: asyncio.AbstractEventLoop | None = None
        # The application's loop and its thread: it reads the links (Node.data_loop).
        self._data_loop: asyncio.AbstractEventLoop | None = None
        self._data_thread = 0
        self.node: Node | None = None
        self.messenger: Messenger | None = None
        self.remote_status: RemoteStatus | None = None
        self.membership: MembershipDriver | None = None
        self.erlang: ErlangNode | None = None  # settings.erlang: the node's Erlang links
        self.erlang_processes: ErlangProcesses | None = None  # and the process layer on them
        self._stop: asyncio.Event | None = None
        self.registration_keeper: RegistrationKeeper | None = None
        self.operations: Operations | None = None

    def start(self) -> concurrent.futures.Future[None]:
        """Start the thread (or, shared, a task on the running loop); the future
        completes once the node listens (or failed to)."""
        name = f"skycluster-node {self.settings.name.identity}"
        if self.settings.shared_loop:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(SHARED_NEEDS_A_LOOP) from None
            self._task = loop.create_task(self._main_shared(), name=name)
            return self._started
        with contextlib.suppress(RuntimeError):  # started from a plain thread: no loop
            self._data_loop = asyncio.get_running_loop()
            self._data_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        return self._started

    def stop(self) -> concurrent.futures.Future[None]:
        """Ask the node to stop; the future completes when the thread is done."""
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and not self._finished.done():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop.set)
        return self._finished

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the node's loop (from any thread)."""
        if self.loop is None or self._finished.done():
            coro.close()
            raise RuntimeError("the cluster is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        async def run() -> T:
            return function()

        return self.submit(run())

    # -- the thread -----------------------------------------------------------

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=loop_factory(self.settings.node_loop)) as runner:
                runner.run(self._serve())
        except BaseException as exc:
            self._failed(exc)
        finally:
            self._ended()

    async def _main_shared(self) -> None:
        thread = threading.get_ident()
        _blocking.hosting(thread, +1)
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise  # the application's loop is shutting down; _serve stopped the node
        except BaseException as exc:
            self._failed(exc)
        finally:
            _blocking.hosting(thread, -1)
            self._ended()

    def _failed(self, exc: BaseException) -> None:
        """The node failed (called in the except block): to start() or to the log."""
        if not self._started.done():
            self._started.set_exception(exc)
        else:
            log.exception("the node's event loop failed")

    def _ended(self) -> None:
        if not self._started.done():
            self._started.set_exception(RuntimeError("the node stopped before it started"))
        self._finished.set_result(None)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        node = self.node = Node(self.settings, self._cookie, self._bus)
        membership = self.membership = MembershipDriver(node)  # decides about links
        messenger = self.messenger = Messenger(node)
        node.handle_frames(frame_types.MESSAGING, messenger.frame_received, any_thread=True)
        lender = (node.lend_reading, node.reclaim_reading)
        if self._data_loop is not None and self._data_loop is not self.loop:
            node.read_on(self._data_loop, self._data_thread)
            _blocking.reading(self._data_thread, lender, add=True)
        try:
            await self._run(node, membership, messenger)
        finally:
            if node.data_loop is not None:
                _blocking.reading(self._data_thread, lender, add=False)

    async def _run(self, node: Node, membership: MembershipDriver, messenger: Messenger) -> None:
        stop = self._stop
        assert stop is not None
        node.listen_links(messenger)
        remote_status = self.remote_status = RemoteStatus(node)  # skycluster members
        node.handle_frames(frame_types.OPERATIONS, remote_status.frame_received)
        operations = self.operations = Operations(node, self._bus)  # metrics, logs, HTTP
        erlang: ErlangNode | None = None
        processes: ErlangProcesses | None = None
        if self.settings.erlang:
            from skycluster.erlang.erpc import Exposed
            from skycluster.erlang.node import ErlangNode
            from skycluster.erlang_processes import ErlangProcesses

            assert self._erlang_cookie is not None, "erlang=True needs the Erlang cookie"
            if self._exposed is None:
                self._exposed = Exposed()
            erlang = self.erlang = ErlangNode(
                node, self._erlang_cookie, after_read=messenger.read_done
            )
            node.speak_also(erlang)  # Erlang distribution on the same listening port
            # pids, monitors, calls, erpc and pg; REG_SEND into the mailboxes
            processes = self.erlang_processes = ErlangProcesses(erlang, messenger, self._exposed)
        strategies = TaskSet(log)
        keeper: RegistrationKeeper | None = None
        try:
            await node.start()
            membership.start()
            await operations.start()
            keeper = await self._register(node)
        except BaseException as exc:
            if keeper is not None:
                await keeper.close()
            await operations.aclose()
            if processes is not None:
                await processes.aclose()
            if erlang is not None:
                await erlang.aclose()
            messenger.close()
            await membership.aclose()
            await node.stop()
            self._started.set_exception(exc)
            return
        if keeper is not None:
            strategies.spawn(keeper.keep(), name="port mapper registration")
        for name, topology in self._topologies.items():
            strategies.spawn(self._supervise(node, name, topology), name=f"strategy {name}")
        self._started.set_result(None)
        try:
            await stop.wait()
        finally:
            await strategies.aclose()
            if keeper is not None:
                await keeper.close()
            await operations.aclose()
            if processes is not None:
                await processes.aclose()
            if erlang is not None:
                await erlang.aclose()
            messenger.close()  # ends every mailbox and call before the links close
            await membership.aclose()
            await node.stop()

    async def _register(self, node: Node) -> RegistrationKeeper | None:
        """Register with the host's port mapper and resolve names through it."""
        settings = self.settings.port_mapper
        if settings is None:
            return None
        node.resolve = _resolver(settings)
        if self.settings.hidden:
            return None  # tools do not advertise themselves
        # An Erlang node looking the name up must find versions it speaks: OTP 25
        # speaks 6 only, as does this node's Erlang side.
        lowest = HIGHEST_VERSION if self.settings.erlang else LOWEST_VERSION
        keeper = self.registration_keeper = RegistrationKeeper(
            self.settings.name.name,
            node.port,
            settings,
            hidden=False,
            versions=(HIGHEST_VERSION, lowest),
        )
        await keeper.register_first()
        return keeper

    async def _supervise(self, node: Node, name: str, topology: Topology) -> None:
        """Run a strategy; restart it with exponential backoff when it raises."""
        ctx = StrategyContext(name, node, topology)
        backoff = Backoff(*self._backoff)
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await topology.strategy.run(ctx)
                ctx.log.info("strategy %s finished", name)
                return
            except Exception as exc:
                if loop.time() - began > 10 * backoff.maximum:
                    backoff.reset()  # it ran well for a long time: start the backoff afresh
                delay = backoff.next()
                node.counters.add(f"strategy_restarts_{name}")
                node.emit("strategy.error", {"delay": delay}, topology=name, error=repr(exc))
                ctx.log.exception("strategy %s crashed; restarting in %.1f s", name, delay)
            await asyncio.sleep(delay)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The node thread's event loop: uvloop wakes the thread on a frame in about
    half the time (the round trip of a call), so ``auto`` takes it when installed."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _resolver(
    settings: PortMapperSettings,
) -> Callable[[NodeName], Coroutine[Any, Any, tuple[str, int]]]:
    async def resolve(name: NodeName) -> tuple[str, int]:
        try:
            port = await portmapper.lookup(
                name.host, name.name, epmd_port=settings.port, timeout=settings.timeout
            )
        except (portmapper.PortMapperError, OSError) as exc:
            raise NodeUnreachable(
                f"cannot ask {name.host} for {name.identity}'s port: {exc}"
            ) from None
        if port is None:
            raise NodeUnreachable(
                f"{name.identity} is not registered with the port mapper on {name.host}"
            )
        return name.host, port

    return resolve
