"""The rule engine's knowledge, as data: one ``Rule`` per root-cause category
(``agents.analysis_schema.CATEGORIES``, "unknown" excepted), each a set of weighted
patterns over what an on-call engineer reads first (log lines, probe reasons, status
transitions, the incident's summary), conditions over metric summaries, and what helps.

How the engine (``agents.rules_engine``) reads it:

* A ``Pattern`` matches a line of text; ``where`` says which lines: ``"logs"`` (the
  project's ``/logs``), ``"probes"`` (probe reasons, transitions, the incident summary)
  or ``"any"``.  Its ``weight`` is how much one match says about the category: a message
  only this failure produces (``No space left on device``) weighs 3 or more; a symptom
  several causes share (a full GC pause) 1 to 2.  A line counts for the category whose
  pattern on it weighs most, so ``connection to server ... failed: FATAL: password
  authentication failed`` is a configuration error, not a database outage.
* A ``group`` names what a pattern shows (``"deploy"``, ``"loop"``); a rule with
  ``min_groups`` counts only when that many different groups matched: a crash loop *after
  a deploy* needs two of (a deploy, a restart loop, a start-up failure).
* A ``MetricCondition`` matches a metric summary by name: beyond its configured
  threshold, and/or rising, and/or beyond an absolute level.
* ``actions`` are the project actions that help, best first.  An ``ActionHint`` is
  evidence (any log line, probe reason or metric name) that puts an action first (a
  cache that grows without bound: clear it rather than restart), adds one that helps
  only then (a queue consumer that stopped: restart it; a backlog from slow work: a
  restart loses work, ask a person), or, as ``escalate_to_human``, says no action of
  ours helps (the database server's own connection limit).  No action means escalate:
  restarting us does not free a disk, renew a certificate or bring a database back.
* ``symptom`` rules (a queue backlog) lose to a cause that also matched: a backlog
  behind a rate limit is a rate-limit problem.
* ``risk`` is how bad it is to leave the problem as it is (used when the engine
  escalates); ``ACTION_RISK`` is the risk of a recommended action.

Patterns are written from how real services and libraries word a failure (CPython,
glibc, OpenSSL, Go's net and crypto/x509, Node's libuv and ``tls``, the JDK, HikariCP,
SQLAlchemy, libpq, nginx, the Linux OOM killer, Kubernetes, systemd), not copied from
the evaluation scenarios (``eval/scenarios``, ``make eval``).  Extend a rule by adding a
pattern *and* a scenario written like the service's real output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from agents.analysis_schema import CATEGORIES

Where = Literal["logs", "probes", "any"]

# The risk of doing a recommended action (a restart drops in-flight work).
ACTION_RISK: Final = {"restart": "medium", "clear_cache": "low", "pause": "medium", "resume": "low"}
# Actions on a running process (its in-memory cache): no help while it does not answer.
NEEDS_RUNNING: Final = frozenset({"clear_cache"})


@dataclass(frozen=True, slots=True)
class Pattern:
    regex: re.Pattern[str]
    weight: float
    where: Where = "any"
    group: str = ""


@dataclass(frozen=True, slots=True)
class MetricCondition:
    name: re.Pattern[str]  # searched in the metric's name
    weight: float
    beyond_threshold: bool = False  # the last value is beyond the configured warn level
    rising: bool = False
    at_least: float | None = None  # the highest value reached, when no threshold says
    describe: str = ""


@dataclass(frozen=True, slots=True)
class ActionHint:
    regex: re.Pattern[str]  # over the lines and metric names the rule matched
    action: str


@dataclass(frozen=True, slots=True)
class Rule:
    category: str
    diagnosis: str  # a sentence completing "<project>: ..."
    explanation: str  # what usually causes it and what helps
    patterns: tuple[Pattern, ...]
    metrics: tuple[MetricCondition, ...] = ()
    actions: tuple[str, ...] = ()  # project actions that help, best first
    hints: tuple[ActionHint, ...] = ()  # evidence that moves (or enables) an action
    risk: str = "medium"
    base_confidence: float = 0.8
    min_groups: int = 0
    symptom: bool = False


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _p(pattern: str, weight: float, where: Where = "any", group: str = "") -> Pattern:
    return Pattern(_re(pattern), weight, where, group)


_DB = r"(?:database|db|postgres\w*|pg|mysql|mariadb|mongo\w*|sql)"

RULES: Final[tuple[Rule, ...]] = (
    Rule(
        category="disk_full",
        diagnosis="the disk is full: writes fail with no space left on the device.",
        explanation=(
            "Writes fail because a filesystem has no free space (logs, spool, uploads or "
            "temporary files filled it). A restart does not free space and may fail itself "
            "while writing its own files; a person must free or grow the volume."
        ),
        patterns=(
            _p(r"no space left on device|\bENOSPC\b|\[Errno 28\]|errno[=: ]+-?28\b", 4.0),
            _p(
                r"disk quota exceeded|\bEDQUOT\b|could not extend file|"
                r"not enough space on the disk|\bdisk (?:is )?full\b|file ?system (?:is )?full|"
                r"write error: no space",
                3.0,
            ),
            _p(
                r"low on resource: ephemeral-storage|disk-?pressure|DiskPressure|"
                r"evicted.{0,40}(?:disk|storage)",
                2.5,
            ),
            _p(
                r"(?:disk|volume|spool|storage|uploads?|filesystem|fs)\b.{0,40}"
                r"(?:full|not writable|no space|almost full|free(?:_bytes)?[=: ]+0\b)",
                2.0,
            ),
            _p(r"free(?:_bytes|_mb|_space)?[=: ]+0\b", 1.0, "logs"),
        ),
        metrics=(
            MetricCondition(
                _re(r"disk|filesystem|\bfs_|volume|storage"),
                2.5,
                beyond_threshold=True,
                describe="disk use beyond its threshold",
            ),
            MetricCondition(
                _re(r"disk|filesystem|\bfs_|volume|storage"),
                1.5,
                at_least=95.0,
                describe="disk use above 95",
            ),
        ),
        actions=(),
        risk="high",
        base_confidence=0.9,
    ),
    Rule(
        category="out_of_memory",
        diagnosis="the process runs out of memory (a leak or unbounded growth) and is killed "
        "or stalls in garbage collection.",
        explanation=(
            "Memory grows until the runtime or the kernel stops the process (OOM killer, "
            "heap limit, full GC pauses). A restart gives the memory back for a while; when "
            "an in-process cache is what grows, clearing it is the gentler fix. Either way "
            "the growth comes back until its cause is fixed."
        ),
        patterns=(
            _p(
                r"out of memory|OutOfMemoryError|OOM ?Killed|oom[-_ ]kill|Killed process \d+|"
                r"heap out of memory|Reached heap limit|\bMemoryError\b|cannot allocate memory|"
                r"\bENOMEM\b|GC overhead limit exceeded|std::bad_alloc|"
                r"allocation of \d+ bytes failed|memory limit exceeded",
                4.0,
            ),
            _p(r"exit(?:ed)? (?:code|status)[ =:\[]*137\b|signal 9\b|\bSIGKILL\b", 1.5, "logs"),
            _p(
                r"Pause Full|Full GC|Last few GCs|allocation failure|"
                r"Mark-Compact|GC overhead",
                1.5,
                "logs",
            ),
            _p(
                r"(?:heap|memory|rss|mem)\b\W{0,3}(?:\d+(?:\.\d+)? ?%|usage|pressure|high|"
                r"used|beyond|above|exhausted)",
                1.5,
            ),
            _p(r"memory_percent \d[\d.]* beyond", 1.5, "probes"),
            _p(r"max[_-]memory|memory_per_child|reload-on-rss|memory limit", 2.0, "logs"),
        ),
        metrics=(
            MetricCondition(
                _re(r"mem|heap|rss"),
                2.5,
                beyond_threshold=True,
                rising=True,
                describe="memory rising and beyond its threshold",
            ),
            MetricCondition(
                _re(r"mem|heap|rss"), 1.5, at_least=95.0, describe="memory reached 95 %"
            ),
        ),
        actions=("restart", "clear_cache"),
        hints=(
            ActionHint(
                _re(
                    r"\bcache\b.{0,40}(?:size|entries|grow|unbounded|maximum|GiB|MB)|"
                    r"(?:size|entries).{0,20}\bcache\b|cache_(?:entries|size|bytes)"
                ),
                "clear_cache",
            ),
        ),
        risk="high",
        base_confidence=0.85,
    ),
    Rule(
        category="database_unavailable",
        diagnosis="the database is down or unreachable: connections are refused or never "
        "established.",
        explanation=(
            "The service cannot reach its database at all (refused, reset, the server "
            "restarting or in recovery, a network path gone). Restarting the service does "
            "not bring the database back and adds reconnect load; a person must look at the "
            "database, its host and the network between them."
        ),
        patterns=(
            _p(
                r"could not connect to server|Is the server running|"
                r"the database system is (?:shutting down|starting up|in recovery mode|"
                r"not yet accepting)|Communications link failure|CommunicationsException|"
                r"Can't connect to (?:local )?MySQL server|MongoNetworkError|"
                r"MongoServerSelectionError|ServerSelectionTimeoutError|"
                r"server closed the connection unexpectedly|Connection terminated unexpectedly|"
                r"SQLSTATE\[HY000\] \[2002\]|57P03|"
                r"(?:redis|memcache\w*|elasticsearch)\S*\.\w*ConnectionError|"
                r"Error \d+ connecting to \S+:\d+",
                3.5,
            ),
            _p(
                r"(?:ECONNREFUSED|connection refused|connect: connection refused|"
                r"i/o timeout|dial error|No route to host)[^\n]{0,60}:(?:5432|3306|27017|1433|"
                r"1521|6379|11211|9200)\b|:(?:5432|3306|27017|1433|1521|6379|11211|9200)\b"
                r"[^\n]{0,60}(?:refused|timeout|"
                r"timed out|unreachable|No route)",
                3.0,
            ),
            _p(
                r"failed to connect to `host=|connection to server at .{0,80} failed|"
                r"OperationalError|Unable to acquire JDBC Connection|"
                r"DataAccessResourceFailureException",
                2.0,
            ),
            _p(
                r"Failed to validate connection|No operations allowed after connection closed|"
                r"DataSource health check failed",
                1.0,
            ),
            _p(
                _DB + r"\w*\b[^)\n]{0,12}(?:unreachable|unavailable|down\b|dial error|"
                r"connection refused|check failed)",
                2.0,
                "probes",
            ),
            _p(r"checks?: [^)]*\b" + _DB + r"\b", 1.0, "probes"),
        ),
        actions=(),
        risk="high",
        base_confidence=0.85,
    ),
    Rule(
        category="database_pool_exhausted",
        diagnosis="the database connection pool is exhausted: requests wait for a "
        "connection and time out.",
        explanation=(
            "Every connection of the pool (or of the database server) is in use, usually "
            "held by slow queries, long transactions or connections never returned. A "
            "restart of this service releases its leaked connections; when the server's own "
            "limit is reached by other clients, a person must find who holds them."
        ),
        patterns=(
            _p(
                r"QueuePool limit|Timeout acquiring a connection|pool is probably full|"
                r"Connection is not available, request timed out|"
                r"(?:connection )?pool (?:is )?(?:exhausted|full)\b|"
                r"unable to (?:get|obtain|acquire) a? ?connection from the pool|"
                r"ConnectionPoolTimeout|PoolTimeout|pool timed out|"
                r"waiting for (?:a )?(?:free )?connection",
                4.0,
            ),
            _p(
                r"too many clients already|remaining connection slots are reserved|"
                r"too many connections|max_connections|"
                r"connection limit exceeded",
                4.0,
            ),
            _p(
                r"connection leak|non-checked-in connection|"
                r"returned to the pool explicitly",
                2.5,
                "logs",
            ),
            _p(r"Failed to obtain JDBC Connection|CannotGetJdbcConnectionException", 1.5, "logs"),
        ),
        metrics=(
            MetricCondition(
                _re(r"pool|connections?_(?:active|pending|in_use|used|waiting)"),
                1.0,
                rising=True,
                describe="pool use rising",
            ),
        ),
        actions=("restart",),
        hints=(
            # The server's limit, reached by other clients: restarting us frees nothing.
            ActionHint(
                _re(
                    r"too many clients already|remaining connection slots|"
                    r"too many connections"
                ),
                "escalate_to_human",
            ),
        ),
        risk="high",
        base_confidence=0.85,
    ),
    Rule(
        category="rate_limited",
        diagnosis="an upstream API rate-limits the service (HTTP 429 / rate limit exceeded).",
        explanation=(
            "An upstream (payment, mail, SMS, source hosting ...) answers 429 or a "
            "rate-limit error because the service sends more than its quota allows. "
            "Restarting makes it worse (a retry burst); a person must slow the sender, "
            "spread the work or raise the quota."
        ),
        patterns=(
            _p(
                r"Too Many Requests|RateLimitError|RateLimitExceeded|rate[ -]?limit(?:ed|ing)?\b|"
                r"\bthrottl(?:ed|ing)\b|ThrottlingException|TooManyRequests|"
                r"quota exceeded|request limit exceeded|\bSlowDown\b|reduce your request rate|"
                r"RequestLimitExceeded|ProvisionedThroughputExceeded",
                3.5,
            ),
            _p(
                r"(?:status(?:Code)?|code|HTTP|HTTP Error|returned|answered|with status)"
                r"[\s=:\"']*429\b|\b429 Too Many|\b20429\b",
                3.0,
            ),
            _p(r"x-ratelimit-remaining['\"]?[=: ]+['\"]?0\b|Retry-After", 1.5, "logs"),
        ),
        actions=(),
        risk="medium",
        base_confidence=0.85,
    ),
    Rule(
        category="dns_failure",
        diagnosis="a host name does not resolve (DNS failure), so a dependency cannot be reached.",
        explanation=(
            "Name resolution fails for a dependency (a removed or mistyped record, an "
            "expired domain, the cluster's DNS down). Restarting the service does not fix "
            "the record; a person must check the DNS record and the resolvers."
        ),
        patterns=(
            _p(
                r"Name or service not known|Temporary failure in name resolution|"
                r"NameResolutionError|Failed to resolve '|\bENOTFOUND\b|\bEAI_AGAIN\b|"
                r"getaddrinfo (?:failed|\w+)|no such host|could not translate host name|"
                r"UnknownHostException|nodename nor servname|cannot resolve host|"
                r"Could not resolve host|\bNXDOMAIN\b|\bSERVFAIL\b|server misbehaving|"
                r"host not found|DNS (?:resolution|lookup) failed|"
                r"lookup \S+ on \S+:53",
                4.0,
            ),
        ),
        actions=(),
        risk="high",
        base_confidence=0.9,
    ),
    Rule(
        category="tls_certificate",
        diagnosis="a TLS certificate is rejected (expired, not trusted or for another host name).",
        explanation=(
            "A TLS handshake fails on certificate verification: a certificate expired or "
            "is not yet valid, its chain is not trusted, or it names another host. No "
            "restart renews a certificate; a person must renew or fix it (or the trust "
            "store)."
        ),
        patterns=(
            _p(
                r"certificate (?:has )?expired|certificate verify failed|CERTIFICATE_VERIFY_FAILED|"
                r"x509: |SSLHandshakeException|PKIX path building failed|"
                r"unable to find valid certification path|CERT_HAS_EXPIRED|"
                r"ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames|"
                r"certificate is (?:not )?valid for|self[- ]signed certificate|"
                r"unable to get local issuer certificate|UNABLE_TO_VERIFY_LEAF_SIGNATURE|"
                r"TLS certificate rejected|SSLCertVerificationError|hostname mismatch|"
                r"certificate is not yet valid|alert certificate expired|"
                r"tls: failed to verify certificate|tls: bad certificate|"
                r"SSL routines:.{0,60}certificate",
                4.0,
            ),
            _p(r"SSLHandshake|TLS error|handshake fail", 1.5),
        ),
        actions=(),
        risk="high",
        base_confidence=0.9,
    ),
    Rule(
        category="dependency_timeout",
        diagnosis="a dependency answers too slowly: calls to it time out.",
        explanation=(
            "Calls to an upstream service time out (it is overloaded, stalled or its own "
            "dependency is slow), so this service's requests wait and fail. Restarting "
            "this service does not speed the upstream up; a person must look at the "
            "upstream (and this service's timeouts and circuit breakers)."
        ),
        patterns=(
            _p(
                r"ReadTimeout|ConnectTimeout|Read timed out|SocketTimeoutException|"
                r"context deadline exceeded|DeadlineExceeded|\bETIMEDOUT\b|\bESOCKETTIMEDOUT\b|"
                r"upstream timed out|Client\.Timeout exceeded|awaiting headers|"
                r"cURL error 28|Operation timed out after|Gateway Time-?out|"
                r"timed out (?:after|waiting for|while)|request timed out after|"
                r"TimeoutException",
                3.0,
            ),
            _p(r"\btimed out\b|\btimeout\b", 1.0, "logs"),
            _p(
                r"\bHTTP 504\b|\b(?:p9\d|latency)\b.{0,20}\d+(?:\.\d+)?m?s\b|\bslow\b",
                1.0,
                "probes",
            ),
            _p(r"circuit(?: breaker)? (?:open|OPEN)|fall(?:ing)? ?back to", 1.0, "logs"),
        ),
        metrics=(
            MetricCondition(
                _re(r"latency|duration|response_time"),
                1.0,
                beyond_threshold=True,
                rising=True,
                describe="latency rising beyond its threshold",
            ),
        ),
        actions=(),
        risk="medium",
        base_confidence=0.75,
    ),
    Rule(
        category="crash_loop_after_deploy",
        diagnosis="the new release crashes at start-up and is restarted in a loop.",
        explanation=(
            "Since a deploy, the process fails during start-up (a missing module or file, "
            "a bad setting, a panic) and its supervisor restarts it again and again. "
            "Another restart runs the same broken release; a person must roll back or fix "
            "the release."
        ),
        patterns=(
            _p(
                r"CrashLoopBackOff|Back-off restarting failed container|"
                r"restart counter is at \d+|too many unstable restarts|"
                r"start request repeated too quickly|exited with code \[?[1-9]|"
                r"Main process exited, code=exited|Failed with result 'exit-code'|"
                r"has restarted \d+ times|respawning too fast|restarts[=: ]+\d{1,3}\b",
                3.0,
                "logs",
                "loop",
            ),
            _p(
                r"\bdeploy(?:ed|ing|ment)?\b|\brelease[sd]?\b.{0,20}\d+\.\d+|"
                r"\bupgraded?\b.{0,40}\d+\.\d+|image (?:updated|changed)|\brollout\b|"
                r"rolling update|\bsynced to revision\b|\bnew (?:version|release)\b",
                2.0,
                "logs",
                "deploy",
            ),
            _p(
                r"ModuleNotFoundError|\bImportError\b|Cannot find module|ClassNotFoundException|"
                r"NoClassDefFoundError|^panic: |\bpanic: runtime error|undefined symbol|"
                r"exec format error|"
                r"APPLICATION FAILED TO START|Application run failed|SyntaxError|"
                r"Failed to bind properties",
                2.5,
                "logs",
                "startup",
            ),
        ),
        actions=(),
        risk="high",
        base_confidence=0.85,
        min_groups=2,
    ),
    Rule(
        category="queue_backlog",
        diagnosis="work piles up in the queue faster than it is consumed.",
        explanation=(
            "The backlog grows: consumers are stopped, stuck, kicked out of their group, or "
            "slower than the producers. A consumer that stopped consuming comes back with a "
            "restart; when the work itself is slow, a restart loses in-flight work and a "
            "person must add capacity or find what slowed it."
        ),
        patterns=(
            _p(
                r"\bbacklog\b|queue \w* ?(?:length|depth|size)|oldest message age|"
                r"consumer lag|\blag\b[=: ]+\d|messages? (?:waiting|pending|ready)|"
                r"\d[\d,]* (?:jobs|messages|mails|entries|tasks) (?:queued|waiting|pending)",
                2.0,
            ),
            _p(
                r"channel closed|consumer (?:stopped|cancelled|canceled)|"
                r"delivery acknowledgement .{0,30}timed out|poll timeout has expired|"
                r"max\.poll\.interval\.ms|leaving group|not aware of this member|"
                r"no messages? consumed|\b0 messages handled\b",
                2.5,
                "any",
            ),
        ),
        metrics=(
            MetricCondition(
                _re(
                    r"queue|backlog|consumer_lag|\blag\b|messages_ready|"
                    r"jobs_(?:waiting|pending)"
                ),
                2.5,
                beyond_threshold=True,
                rising=True,
                describe="backlog rising beyond its threshold",
            ),
        ),
        actions=(),
        hints=(
            ActionHint(
                _re(
                    r"channel closed|consumer (?:stopped|cancelled|canceled)|"
                    r"poll timeout has expired|not aware of this member|leaving group|"
                    r"no messages? consumed|\b0 messages handled\b|consumed for \d+"
                ),
                "restart",
            ),
        ),
        risk="medium",
        base_confidence=0.75,
        symptom=True,
    ),
    Rule(
        category="configuration_error",
        diagnosis="the service runs with a wrong setting or credential (rejected key or "
        "password, unreadable configuration).",
        explanation=(
            "A setting is wrong: a rotated or revoked credential, a configuration file "
            "that does not parse, a value of the wrong type. A restart reads the same "
            "setting again; a person must correct the configuration or the secret."
        ),
        patterns=(
            _p(
                r"password authentication failed|authentication failed for user|"
                r"Access denied for user|Invalid API Key|invalid[_ ]api[_ ]key|"
                r"AuthenticationError|\b401 Unauthorized\b|invalid_client|invalid credentials|"
                r"bad credentials|InvalidClientTokenId|SignatureDoesNotMatch|"
                r"invalid (?:auth(?:entication)? )?token",
                4.5,
            ),
            _p(
                r"missing required (?:environment|env|config\w*|setting)|"
                r"environment variable .{0,40}(?:not set|missing|required)|"
                r"ScannerError|ParserError|YAMLException|yaml: line \d+|"
                r"JSONDecodeError.{0,30}config|"
                r"invalid configuration|configuration (?:error|invalid)|"
                r"failed to (?:load|parse|read) (?:\w+ )?(?:config\w*|rules|settings)|"
                r"validation errors? for (?:Settings|Config)|unknown (?:config\w* )?(?:key|option|"
                r"directive)|\[emerg\]",
                3.5,
            ),
            _p(
                r"authentication failed|unauthori[sz]ed|forbidden|not loaded|misconfigur|"
                r"invalid config",
                1.5,
                "probes",
            ),
        ),
        actions=(),
        risk="high",
        base_confidence=0.8,
    ),
)

if {r.category for r in RULES} != set(CATEGORIES) - {"unknown"}:  # pragma: no cover
    raise RuntimeError("every category but unknown needs exactly one rule")
