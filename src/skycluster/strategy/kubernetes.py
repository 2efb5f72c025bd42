"""Kubernetes strategy (the seed's ``Cluster.Strategy.Kubernetes``): ask the
Kubernetes API for the endpoints (or pods) of this namespace that match a label
selector, and link to ``<node_basename>@<address>`` for each ready one.

Unlike libcluster, which lists every polling interval, this lists once and
then *watches* from the returned resourceVersion, so that changes arrive as
they happen at the cost of one idle connection. A ``410 Gone`` or a dropped
stream lists again; a refused watch falls back to polling. Errors of the API
(401, 403, 5xx, timeouts, garbage) never empty the cluster: the last known set
is kept, the cause is logged once with a hint, and the request is retried with
a backoff. The HTTP client is ours (``skycluster.k8s.http``): no dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlencode

from skycluster._backoff import Backoff
from skycluster.config import Option, parse_bool, parse_seconds, parse_text
from skycluster.errors import ConfigError
from skycluster.k8s import http, objects
from skycluster.k8s.credentials import DEFAULT_PATH, ServiceAccount
from skycluster.names import NodeName
from skycluster.strategy.base import Strategy, StrategyContext

PREFIX = "kubernetes_"
MAX_LIST = 32 * 1024 * 1024  # a list response larger than this is refused
MAX_EVENT = 8 * 1024 * 1024  # one watch event


def _choice(*accepted: str) -> Any:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in accepted:
            raise ValueError(f"expected one of {', '.join(accepted)}")
        return value

    return parse


def parse_master(text: str) -> str:
    return str(http.Server.parse(text))


class ApiError(Exception):
    """A request that gave no usable answer; ``kind`` counts it, ``hint`` helps."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class _WatchRefused(Exception):
    pass


class _Relist(Exception):
    pass


class Kubernetes(Strategy):
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "kubernetes_selector",
            parse_text,
            "label selector of the endpoints (or pods) to link, e.g. app=myapp",
            ("LIBCLUSTER_KUBERNETES_SELECTOR",),
            metavar="SELECTOR",
        ),
        Option(
            "kubernetes_node_basename",
            parse_text,
            "name part of the peers' node names [this node's]",
            ("LIBCLUSTER_KUBERNETES_NODE_BASENAME",),
            metavar="NAME",
        ),
        Option(
            "kubernetes_namespace",
            parse_text,
            "namespace to look in [the pod's own]",
            ("LIBCLUSTER_KUBERNETES_NAMESPACE",),
            metavar="NS",
        ),
        Option(
            "kubernetes_mode",
            _choice(*objects.MODES),
            "how peers are named: ip, dns (a-b-c-d.NS.pod.DOMAIN) or hostname "
            "(HOST.SERVICE.NS.svc.DOMAIN) [ip]",
            ("LIBCLUSTER_KUBERNETES_MODE",),
            metavar="MODE",
        ),
        Option(
            "kubernetes_service_name",
            parse_text,
            "headless service of hostname mode [the endpoints' own]",
            ("LIBCLUSTER_KUBERNETES_SERVICE_NAME",),
            metavar="SERVICE",
        ),
        Option(
            "kubernetes_lookup",
            _choice(*objects.LOOKUPS),
            "what to ask the API for: endpointslices, endpoints or pods [endpointslices]",
            ("LIBCLUSTER_KUBERNETES_LOOKUP",),
            metavar="LOOKUP",
        ),
        Option(
            "kubernetes_cluster_domain",
            parse_text,
            "cluster DNS domain [cluster.local]",
            ("LIBCLUSTER_KUBERNETES_CLUSTER_DOMAIN", "CLUSTER_DOMAIN"),
            metavar="DOMAIN",
        ),
        Option(
            "kubernetes_master",
            parse_master,
            "API server, https://HOST:PORT [in a pod: KUBERNETES_SERVICE_HOST/_PORT]",
            ("LIBCLUSTER_KUBERNETES_MASTER",),
            metavar="URL",
        ),
        Option(
            "kubernetes_service_account_path",
            parse_text,
            f"directory with token, ca.crt, namespace [{DEFAULT_PATH}]",
            ("LIBCLUSTER_KUBERNETES_SERVICE_ACCOUNT_PATH",),
            metavar="DIR",
        ),
        Option(
            "kubernetes_insecure_skip_tls_verify",
            parse_bool,
            "do not verify the API server's certificate (unsafe) [false]",
            metavar="BOOL",
        ),
        Option(
            "polling_interval", parse_seconds, "seconds between polls [5; local: 1]", metavar="S"
        ),
    )

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> Strategy:
        return cls(**{key.removeprefix(PREFIX): value for key, value in values.items()})

    def __init__(
        self,
        selector: str | None = None,
        node_basename: str | None = None,
        *,
        namespace: str | None = None,
        mode: str = "ip",
        service_name: str | None = None,
        lookup: str = "endpointslices",
        cluster_domain: str | None = None,
        master: str | None = None,
        service_account_path: str = DEFAULT_PATH,
        dist_port: int | None = None,
        polling_interval: float = 5.0,
        insecure_skip_tls_verify: bool = False,
        request_timeout: float = 10.0,
        watch_timeout: float = 290.0,
        max_backoff: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        if not selector or not selector.strip():
            raise ConfigError(
                "the kubernetes strategy needs a label selector: --kubernetes-selector app=myapp "
                "or SKYCLUSTER_KUBERNETES_SELECTOR (LIBCLUSTER_KUBERNETES_SELECTOR)"
            )
        if mode not in objects.MODES:
            raise ConfigError(f"mode must be one of {', '.join(objects.MODES)}, got {mode!r}")
        if lookup not in objects.LOOKUPS:
            raise ConfigError(f"lookup must be one of {', '.join(objects.LOOKUPS)}, got {lookup!r}")
        for label, value in (
            ("polling_interval", polling_interval),
            ("request_timeout", request_timeout),
            ("watch_timeout", watch_timeout),
            ("max_backoff", max_backoff),
        ):
            if not value > 0:
                raise ConfigError(f"{label} must be a positive number of seconds, got {value!r}")
        if master is None:
            host = environ.get("KUBERNETES_SERVICE_HOST")
            if not host:
                raise ConfigError(
                    "no Kubernetes API server: outside a pod give --kubernetes-master "
                    "https://HOST:PORT (in a pod KUBERNETES_SERVICE_HOST is set)"
                )
            port = environ.get("KUBERNETES_SERVICE_PORT") or "443"
            host = f"[{host}]" if ":" in host else host
            master = f"https://{host}:{port}"
        try:
            self.server = http.Server.parse(master)
        except ValueError as exc:
            raise ConfigError(f"invalid Kubernetes API server {master!r}: {exc}") from None
        self.selector = selector.strip()
        self.node_basename = node_basename
        self.namespace = namespace
        self.mode = mode
        self.service_name = service_name
        self.lookup = lookup
        self.cluster_domain = cluster_domain or environ.get("CLUSTER_DOMAIN") or "cluster.local"
        self.account = ServiceAccount(service_account_path)
        self.dist_port = dist_port
        self.polling_interval = polling_interval
        self.insecure_skip_tls_verify = insecure_skip_tls_verify
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        # Counted over all runs, for tests and tools that hold the strategy.
        self.errors: Counter[str] = Counter()  # bad answers, by kind
        self.requests: Counter[str] = Counter()  # list, watch
        self._run: _Run | None = None  # the current (or last) run

    @property
    def watching(self) -> bool:
        """True while a watch stream is open (False while listing, polling or failing)."""
        return self._run is not None and self._run.watching

    async def run(self, ctx: StrategyContext) -> None:
        self._run = _Run(self, ctx, self._run)
        await self._run.serve()

    def __repr__(self) -> str:
        return (
            f"Kubernetes(selector={self.selector!r}, lookup={self.lookup!r}, "
            f"mode={self.mode!r}, master={str(self.server)!r})"
        )


class _Run:
    """One run of the strategy: the API connection's TLS context, the namespace and
    node name resolved for it, what the API listed, and what it linked to."""

    def __init__(self, strategy: Kubernetes, ctx: StrategyContext, previous: _Run | None) -> None:
        self.strategy = strategy
        self.ctx = ctx
        self.ssl = (
            strategy.account.ssl_context(insecure=strategy.insecure_skip_tls_verify, log=ctx.log)
            if strategy.server.scheme == "https"
            else None
        )
        namespace = strategy.namespace
        if namespace is None:
            namespace = strategy.account.namespace()
        if namespace is None:
            ctx.log.warning(
                "no namespace given and none in %s/namespace: using 'default'",
                strategy.account.path,
            )
            namespace = "default"
        self.namespace = namespace
        self.node_basename = (
            ctx.node_name.name if strategy.node_basename is None else strategy.node_basename
        )
        # What the API said last, by object; the nodes it names (None: nothing yet).
        self.objects: dict[str, list[objects.Peer]] = {}
        self.desired: dict[str, NodeName] | None = None
        # Identities linked because the API listed them, to unlink when they leave the
        # list: a run after a crash takes them over.
        self.wanted: set[str] = set(previous.wanted) if previous is not None else set()
        self.changed = asyncio.Event()
        # The problems logged last: a problem that persists is logged once.
        self.problem: tuple[str, str] | None = None
        self.object_problems: str | None = None
        self.watching = False

    async def serve(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._discover())
            group.create_task(self._reconcile())

    async def _discover(self) -> None:
        maximum = self.strategy.max_backoff
        backoff = Backoff(min(0.5, maximum), maximum)
        delay = 0.0
        poll_only = False
        while True:
            if delay:
                await asyncio.sleep(delay)
            try:
                version = await self._list()
                self._recovered()
                backoff.reset()
                delay = 0.0
                if poll_only:
                    delay = self.strategy.polling_interval
                    continue
                try:
                    await self._watch(version)
                except _Relist:
                    continue
                except _WatchRefused as refused:
                    poll_only = True
                    self.watching = False
                    self.ctx.log.warning(
                        "the API refused to watch %s (%s): polling every %s s instead; "
                        "grant the verb watch on %s to stop polling",
                        self.strategy.lookup,
                        refused,
                        self.strategy.polling_interval,
                        self.strategy.lookup,
                    )
                    delay = self.strategy.polling_interval
            except ApiError as exc:
                self.watching = False
                self._report(exc)
                delay = backoff.next()

    # -- requests ---------------------------------------------------------------

    def _path(self) -> str:
        group = (
            "/apis/discovery.k8s.io/v1" if self.strategy.lookup == "endpointslices" else "/api/v1"
        )
        return f"{group}/namespaces/{self.namespace}/{self.strategy.lookup}"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self.strategy.account.token() if self.strategy.server.scheme == "https" else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _get(self, query: dict[str, str]) -> http.Response:
        target = f"{self._path()}?{urlencode(query)}"
        try:
            response = await http.get(
                self.strategy.server,
                target,
                self._headers(),
                ssl_context=self.ssl,
                timeout=self.strategy.request_timeout,
            )
        except TimeoutError:
            raise ApiError(
                "timeout",
                f"{self.strategy.server} did not answer within {self.strategy.request_timeout} s",
            ) from None
        except http.HttpError as exc:
            raise ApiError("unreachable", str(exc)) from None
        if response.status != 200:
            try:
                body = await response.body(64 * 1024, self.strategy.request_timeout)
            except (http.HttpError, TimeoutError):
                body = b""
            finally:
                await response.close()
            raise ApiError(
                _status_kind(response.status), self._explain(response, body), response.status
            )
        if response.content_type != "application/json":
            await response.close()
            raise ApiError(
                "content_type",
                f"{self.strategy.server} answered with content type "
                f"{response.headers.get('content-type', '(none)')!r}, not application/json; "
                "is --kubernetes-master the API server?",
            )
        return response

    async def _list(self) -> str | None:
        self.strategy.requests["list"] += 1
        response = await self._get({"labelSelector": self.strategy.selector})
        try:
            body = await response.body(MAX_LIST, self.strategy.request_timeout * 3)
        except TimeoutError:
            raise ApiError("timeout", "the list response did not arrive in time") from None
        except http.TooLarge as exc:
            raise ApiError("too_large", f"list of {self.strategy.lookup}: {exc}") from None
        except http.HttpError as exc:
            raise ApiError("stream_cut", f"list of {self.strategy.lookup}: {exc}") from None
        finally:
            await response.close()
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(
                "bad_json", f"the list of {self.strategy.lookup} is not valid JSON"
            ) from None
        items = document.get("items") if isinstance(document, dict) else None
        if items is None and isinstance(document, dict) and "metadata" in document:
            items = []  # an empty list may omit items
        if not isinstance(items, list):
            raise ApiError("bad_object", f"the list of {self.strategy.lookup} has no items array")
        found: dict[str, list[objects.Peer]] = {}
        problems: list[str] = []
        for item in items:
            key = objects.object_key(item)
            if key is None:
                problems.append(f"a {self.strategy.lookup} item has no metadata.name")
                continue
            extracted = objects.extract(self.strategy.lookup, item)
            problems += extracted.problems
            found[key] = extracted.peers
        self.objects = found
        self._object_report(problems)
        self._publish()
        return objects.resource_version(document)

    async def _watch(self, version: str | None) -> None:
        """Apply watch events until the stream ends; raises _Relist when the
        objects must be listed again, _WatchRefused when watching is not allowed."""
        while True:
            if version is None:
                raise _WatchRefused("the list had no resourceVersion")
            self.strategy.requests["watch"] += 1
            query = {
                "labelSelector": self.strategy.selector,
                "watch": "1",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(int(self.strategy.watch_timeout)),
            }
            try:
                response = await self._get(query)
            except ApiError as exc:
                if exc.status in (403, 405):
                    raise _WatchRefused(str(exc)) from None
                if exc.status == 410:
                    raise _Relist from None
                raise
            self.watching = True
            try:
                version = await self._follow(response, version)
            finally:
                await response.close()

    async def _follow(self, response: http.Response, version: str) -> str:
        """Apply the events of one watch stream; the version to watch from next."""
        try:
            async for line in response.lines(MAX_EVENT, self.strategy.watch_timeout + 30):
                try:
                    event = json.loads(line)
                except (ValueError, RecursionError):
                    self._count("bad_json", "a watch event is not valid JSON; listing again")
                    raise _Relist from None
                kind = event.get("type") if isinstance(event, dict) else None
                obj = event.get("object") if isinstance(event, dict) else None
                if kind == "ERROR":
                    code = obj.get("code") if isinstance(obj, dict) else None
                    if code != 410:
                        self._count("watch_error", f"the watch ended with an error: {obj!r:.200}")
                    raise _Relist
                if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                    self._count("bad_object", f"a watch event of unknown type {kind!r:.40}")
                    continue
                new_version = objects.resource_version(obj)
                if new_version is not None:
                    version = new_version
                if kind == "BOOKMARK":
                    continue
                key = objects.object_key(obj)
                if key is None:
                    self._count("bad_object", f"a watch event's {self.strategy.lookup} has no name")
                    continue
                if kind == "DELETED":
                    self.objects.pop(key, None)
                else:
                    extracted = objects.extract(self.strategy.lookup, obj)
                    self._object_report(extracted.problems)
                    self.objects[key] = extracted.peers
                self._publish()
        except http.StreamCut:
            self._count("stream_cut", "the watch stream was cut; listing again")
            raise _Relist from None
        except http.TooLarge as exc:
            self._count("too_large", f"a watch event was refused: {exc}; listing again")
            raise _Relist from None
        except (http.HttpError, OSError, TimeoutError) as exc:
            self._count("stream_cut", f"the watch stream failed ({exc or 'silent'}); listing again")
            raise _Relist from None
        return version

    # -- from objects to nodes --------------------------------------------------

    def _publish(self) -> None:
        desired: dict[str, NodeName] = {}
        unnamed = 0
        for peers in self.objects.values():
            for peer in peers:
                host = objects.node_host(
                    peer,
                    self.strategy.mode,
                    namespace=self.namespace,
                    cluster_domain=self.strategy.cluster_domain,
                    service_name=self.strategy.service_name,
                )
                if host is None:
                    unnamed += 1
                    continue
                name = NodeName(self.node_basename, host, self.strategy.dist_port)
                desired[name.identity] = name
        if unnamed:
            self._count(
                "unnamed",
                f"{unnamed} ready endpoints have no hostname or service for hostname mode "
                "(set the pods' hostname and subdomain, e.g. a StatefulSet, and "
                "--kubernetes-service-name)",
            )
        if desired.keys() != (self.desired or {}).keys() or self.desired is None:
            self.ctx.log.info("the API lists %d nodes: %s", len(desired), ", ".join(desired))
        self.desired = desired
        self.changed.set()

    async def _reconcile(self) -> None:
        """Link to every listed node, unlink the nodes that left the list; again
        whenever the list changes, and every polling interval (to retry)."""
        ctx = self.ctx
        while True:
            self.changed.clear()
            desired = self.desired
            if desired is not None:
                linked = set(ctx.nodes())
                # Removed even when not linked right now: the mesh must not link
                # them again from a peer's older list (docs/membership.md).
                gone = sorted(self.wanted - desired.keys())
                if gone:
                    ctx.log.info("removing nodes no longer listed: %s", ", ".join(gone))
                    await ctx.disconnect(gone)
                self.wanted = set(desired)
                missing = [name for ident, name in desired.items() if ident not in linked]
                if missing:
                    await ctx.connect(missing)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.strategy.polling_interval):
                    await self.changed.wait()

    # -- reporting --------------------------------------------------------------

    def _explain(self, response: http.Response, body: bytes) -> str:
        message = ""
        with contextlib.suppress(ValueError, RecursionError, AttributeError):
            status = json.loads(body)
            if isinstance(status, dict) and isinstance(status.get("message"), str):
                message = status["message"][:300]
        code = response.status
        what = f"{self.strategy.lookup} in namespace {self.namespace}"
        text = f"the API answered {code} {response.reason}" + (f" ({message})" if message else "")
        if code == 401:
            hint = (
                f"the token in {self.strategy.account.token_file} was refused: is the service "
                "account token mounted and current?"
            )
        elif code == 403:
            group = "discovery.k8s.io" if self.strategy.lookup == "endpointslices" else '""'
            hint = (
                f"the service account may not list/watch {what}: bind a Role with the rule "
                f"apiGroups: [{group}], resources: [{self.strategy.lookup}], verbs: [list, watch] "
                "(deploy/kubernetes/rbac.yaml)"
            )
        elif code == 404:
            hint = (
                f"no {what}: check --kubernetes-namespace; endpointslices need Kubernetes "
                "1.21 or later (else --kubernetes-lookup endpoints)"
            )
        elif code >= 500:
            hint = "the API server is unavailable; the known nodes stay linked"
        else:
            hint = "the known nodes stay linked"
        return f"{text} for {what}; {hint}"

    def _report(self, exc: ApiError) -> None:
        self.strategy.errors[exc.kind] += 1
        key = (exc.kind, str(exc))
        if key != self.problem:
            self.ctx.log.warning("%s; retrying (the last known nodes stay linked)", exc)
        self.problem = key

    def _count(self, kind: str, message: str) -> None:
        self.strategy.errors[kind] += 1
        key = (kind, message)
        if key != self.problem:
            self.ctx.log.warning("%s", message)
        self.problem = key

    def _recovered(self) -> None:
        if self.problem is not None:
            self.ctx.log.warning("the Kubernetes API answers again")
        self.problem = None

    def _object_report(self, problems: list[str]) -> None:
        if problems:
            self.strategy.errors["bad_object"] += len(problems)
        summary = "; ".join(problems[:5])
        if summary and summary != self.object_problems:
            self.ctx.log.warning("skipped malformed API objects: %s", summary)
        self.object_problems = summary or None


def _status_kind(status: int) -> str:
    if status in (401, 403, 404, 410):
        return f"http_{status}"
    if status >= 500:
        return "http_5xx"
    return "http_other"
