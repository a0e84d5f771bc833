"""The one place that builds the simple-salesforce client: login, timeouts, metering, bounded re-login.

simple-salesforce's own re-login is unbounded on `SFType` methods and three deep on `Salesforce`
methods, so calls go through a client built from a session id (which never logs in by itself) and
this module logs in again at most once per failed call. Every HTTP request, logins included, passes
through `_MeteredSession`: it sets a timeout, counts the call, refuses it when the daily budget is
spent, and reads `Sforce-Limit-Info` from every response.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceError
from simple_salesforce.login import SalesforceLogin

from adapters.settings import ConfigError, DailyBudget, Settings

if TYPE_CHECKING:
    from adapters.salesforce_push import OptOutWrite, PushResult

log = logging.getLogger(__name__)
API_VERSION = "59.0"
# Salesforce counts the daily allowance over a rolling 24 hours.
BUDGET_WINDOW = timedelta(hours=24)
_LOGIN_PATHS = ("/services/Soap/u/", "/services/oauth2/token")
_API_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")
_QUERY_STRING = re.compile(r"\?[^\s'\")]*")
T = TypeVar("T")


# --- what the adapter reports -------------------------------------------------------------------
class ApiUsage(msgspec.Struct, frozen=True, kw_only=True):
    """The org's daily API requests as Salesforce last reported them."""

    used: int
    max: int
    seen_at: datetime


class SalesforceFailure(Exception):
    """Anything the adapter reports as failed. `push_opt_outs` fills in `completed` and `pending`."""

    retryable = False

    def __init__(
        self, message: str, *, code: str = "", status: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code  # Salesforce's errorCode, or what failed (e.g. ReadTimeout)
        self.status = status  # the HTTP status, when there was a response
        self.detail = detail  # Salesforce's own message, when it may be shown
        # Results already final before the failure, and the writes still to do (push_opt_outs).
        self.completed: tuple[PushResult, ...] = ()
        self.pending: tuple[OptOutWrite, ...] = ()


class RetryLater(SalesforceFailure):
    """A transient failure of a whole call: back off (with jitter) and try again."""

    retryable = True


class SalesforceUnavailable(RetryLater):
    """5xx, a dropped connection or a timeout. A write may or may not have landed (true is idempotent)."""


class SessionRejected(RetryLater):
    """401 INVALID_SESSION_ID again right after a fresh login."""


class ApiLimitReached(SalesforceFailure):
    """REQUEST_LIMIT_EXCEEDED: the org's whole daily allowance is spent; Salesforce refuses calls."""

    def __init__(self, message: str, usage: ApiUsage | None) -> None:
        super().__init__(message, code="REQUEST_LIMIT_EXCEEDED", status=403)
        self.usage = usage


class BudgetSpent(SalesforceFailure):
    """This process's daily budget is spent: the call was not made."""

    def __init__(self, spent: int, budget: int, resets_at: datetime) -> None:
        super().__init__(
            f"the Salesforce API budget (OPTOUT_SALESFORCE_DAILY_BUDGET) is spent: {spent} of "
            f"{budget} calls in 24 hours; the next call is allowed at {resets_at.isoformat()}",
            code="BUDGET_SPENT",
        )
        self.spent = spent
        self.budget = budget
        self.resets_at = resets_at


class LoginRefused(SalesforceFailure):
    """Salesforce refused the credentials or the connected app: fix the configuration."""


class RequestRefused(SalesforceFailure):
    """Salesforce refused a call for good (4xx other than session and limit): retrying will not help."""


class UnexpectedResponse(SalesforceFailure):
    """A response whose shape Salesforce does not send (e.g. results not matching the records)."""


# --- the daily budget and the calls made ----------------------------------------------------------
class CallMeter:
    """Counts the HTTP calls made, keeps the latest API usage, and enforces the daily budget.

    The budget counts this process's own API calls in the last 24 hours (every call sent, whether
    it then succeeds or not); `already_spent` lets a caller carry the count across a restart.
    """

    def __init__(
        self,
        budget: DailyBudget,
        clock: Callable[[], float] = time.time,
        already_spent: Sequence[float] = (),
    ) -> None:
        self.budget = budget
        self._clock = clock
        self._spent: deque[float] = deque(sorted(already_spent))
        self._lock = threading.Lock()
        self.calls_made = 0
        self.logins = 0
        self.usage: ApiUsage | None = None

    def before_api_call(self) -> None:
        """Counts one API call about to be sent, or raises BudgetSpent (and sends nothing)."""
        with self._lock:
            now = self._clock()
            window = BUDGET_WINDOW.total_seconds()
            while self._spent and self._spent[0] <= now - window:
                self._spent.popleft()
            allowed = self.budget.limit(self.usage.max if self.usage else None)
            if allowed is not None and len(self._spent) >= allowed:
                oldest = self._spent[0] if self._spent else now
                raise BudgetSpent(
                    len(self._spent), allowed, datetime.fromtimestamp(oldest + window, UTC)
                )
            self._spent.append(now)
            self.calls_made += 1

    def before_login(self) -> None:
        with self._lock:
            self.logins += 1

    def spent_times(self) -> list[float]:
        """When each call inside the current window was made (to carry across a restart)."""
        with self._lock:
            return list(self._spent)

    def observe(self, sforce_limit_info: str | None) -> None:
        usage = parse_limit_info(sforce_limit_info, datetime.fromtimestamp(self._clock(), UTC))
        if usage is not None:
            with self._lock:
                self.usage = usage


def parse_limit_info(header: str | None, seen_at: datetime) -> ApiUsage | None:
    """`api-usage=18/5000[; per-app-api-usage=...]` → ApiUsage; None when absent or malformed."""
    found = _API_USAGE.search(header or "")
    if found is None:
        return None
    return ApiUsage(used=int(found[1]), max=int(found[2]), seen_at=seen_at)


class _MeteredSession(requests.Session):
    """Every request times out (simple-salesforce passes none), is counted, and is metered."""

    def __init__(self, timeout_s: float, meter: CallMeter) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        self.meter = meter

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        text = url.decode() if isinstance(url, bytes) else url
        if any(path in text for path in _LOGIN_PATHS):
            self.meter.before_login()
        else:
            self.meter.before_api_call()
        kwargs.setdefault("timeout", self.timeout_s)
        response = super().request(method, url, *args, **kwargs)
        self.meter.observe(response.headers.get("Sforce-Limit-Info"))
        return response


# --- logging in -------------------------------------------------------------------------------
class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """How to log in: a user by SOAP (username, password, token) or OAuth client credentials."""

    domain: str
    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    consumer_key: str | None = None
    consumer_secret: str | None = None

    def __repr__(self) -> str:  # never show a secret
        who = f"user {self.username}" if self.username else "client credentials"
        return f"Credentials({who} at {self.domain})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        if settings.salesforce_username and settings.salesforce_password:
            return cls(
                domain=settings.salesforce_domain,
                username=settings.salesforce_username,
                password=str(settings.salesforce_password),
                security_token=(
                    str(settings.salesforce_security_token)
                    if settings.salesforce_security_token
                    else None
                ),
            )
        if settings.salesforce_consumer_key and settings.salesforce_consumer_secret:
            return cls(
                domain=settings.salesforce_domain,
                consumer_key=str(settings.salesforce_consumer_key),
                consumer_secret=str(settings.salesforce_consumer_secret),
            )
        raise ConfigError(
            "SALESFORCE_USERNAME: no Salesforce org is configured "
            "(set SALESFORCE_USERNAME or SALESFORCE_CONSUMER_KEY/_SECRET)"
        )


class OrgClient:
    """A logged-in connection to one org. Not shared between threads (neither is requests.Session)."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        budget: DailyBudget,
        timeout_s: float = 30.0,
        ca_bundle: str | None = None,
        already_spent: Sequence[float] = (),
    ) -> None:
        self.credentials = credentials
        self.meter = CallMeter(budget, already_spent=already_spent)
        self.http = _MeteredSession(timeout_s, self.meter)
        if ca_bundle:
            self.http.verify = ca_bundle
            # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would otherwise override verify (requests#3829).
            self.http.trust_env = False
        self._sf = self._login()

    @property
    def instance(self) -> str:
        return self._sf.sf_instance

    def _login(self) -> Salesforce:
        """A fresh session, wrapped in a client that never logs in again by itself."""
        c = self.credentials
        with _translated("login"):
            try:
                if c.username is not None:
                    session_id, instance = SalesforceLogin(
                        username=c.username,
                        password=c.password,
                        security_token=c.security_token,
                        domain=c.domain,
                        session=self.http,
                        sf_version=API_VERSION,
                    )
                else:
                    session_id, instance = SalesforceLogin(
                        consumer_key=c.consumer_key,
                        consumer_secret=c.consumer_secret,
                        domain=c.domain,
                        session=self.http,
                        sf_version=API_VERSION,
                    )
            except SalesforceAuthenticationFailed as refused:
                code = str(refused.code)
                if code.isdigit() and int(code) >= 500:
                    raise SalesforceUnavailable(f"login: HTTP {code}", status=int(code)) from None
                raise LoginRefused(
                    f"Salesforce refused the login ({c!r}): {code}: {refused.auth_message}",
                    code=code,
                ) from None
        return Salesforce(
            session_id=session_id,
            instance=instance,
            session=self.http,
            version=API_VERSION,
            object_pairs_hook=dict,
        )

    def call(self, what: str, request: Callable[[Salesforce], T], *, private: bool = False) -> T:
        """Runs one API call; on 401 INVALID_SESSION_ID logs in once and tries once more.

        `private`: the call carries personal data (emails in a query), so failures keep
        Salesforce's error code but not its message, which quotes the query.
        """
        try:
            try:
                with _translated(what, private):
                    return request(self._sf)
            except _SessionExpired:
                log.info("Salesforce session expired (%s): logging in again, once", what)
            self._sf = self._login()
            try:
                with _translated(what, private):
                    return request(self._sf)
            except _SessionExpired:
                raise SessionRejected(
                    f"{what}: INVALID_SESSION_ID again right after a fresh login",
                    code="INVALID_SESSION_ID",
                    status=401,
                ) from None
        except ApiLimitReached as spent:
            spent.usage = self.meter.usage  # read from the refusal's own Sforce-Limit-Info
            raise

    def rest(
        self, what: str, method: str, path: str, *, json: Any = None, params: Any = None
    ) -> Any:
        """A call under /services/data/vXX.X/ (e.g. `composite/sobjects`); parsed JSON or None."""
        return self.call(what, lambda sf: sf.restful(path, params=params, method=method, json=json))

    def query_page(self, what: str, soql: str, *, private: bool) -> dict[str, Any]:
        return self.call(what, lambda sf: dict(sf.query(soql)), private=private)

    def query_more(self, what: str, next_records_url: str, *, private: bool) -> dict[str, Any]:
        return self.call(
            what,
            lambda sf: dict(sf.query_more(next_records_url, identifier_is_url=True)),
            private=private,
        )


class _SessionExpired(Exception):
    """Internal: a 401 INVALID_SESSION_ID, answered by one fresh login."""


def _first_error(content: Any) -> tuple[str, str]:
    """(errorCode, message) of Salesforce's `[{"errorCode", "message"}]` body, else of its text."""
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode", "")), str(content[0].get("message", ""))
    return "", str(content)[:200]


@contextmanager
def _translated(what: str, private: bool = False) -> Iterator[None]:
    """simple-salesforce's and requests' exceptions → the adapter's, by what the caller should do."""
    try:
        yield
    except SalesforceFailure:
        raise
    except SalesforceAuthenticationFailed:
        raise
    except SalesforceError as error:
        status = int(error.status)
        code, message = _first_error(error.content)
        if status == 401 and code in ("INVALID_SESSION_ID", ""):
            raise _SessionExpired() from None
        if private:
            message = "(message withheld: it quotes personal data)"
        text = f"{what}: HTTP {status} {code}: {message}".rstrip(": ")
        if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            raise ApiLimitReached(text, None) from None
        if status >= 500:
            raise SalesforceUnavailable(text, code=code, status=status, detail=message) from None
        raise RequestRefused(text, code=code, status=status, detail=message) from None
    except requests.exceptions.SSLError as error:
        detail = _QUERY_STRING.sub("?…", str(error))
        raise RequestRefused(
            f"{what}: TLS verification failed (SALESFORCE_CA_BUNDLE?): {detail}", code="TLS"
        ) from None
    except requests.exceptions.RequestException as error:
        # ConnectionError (dropped, refused), Timeout, ChunkedEncodingError: transient. urllib3
        # may quote the URL, whose query string can hold emails.
        detail = _QUERY_STRING.sub("?…", str(error))
        raise SalesforceUnavailable(
            f"{what}: {type(error).__name__}: {detail}", code=type(error).__name__
        ) from None


def connect_client(settings: Settings, already_spent: Sequence[float] = ()) -> OrgClient:
    """A logged-in client for the configured org; a refused login stops start-up with the reason.
    `already_spent`: when each call counted against the daily budget was made (a restart)."""
    return OrgClient(
        Credentials.from_settings(settings),
        budget=settings.salesforce_daily_budget,
        timeout_s=settings.salesforce_timeout_s,
        ca_bundle=settings.salesforce_ca_bundle,
        already_spent=already_spent,
    )
