"""Logging in: SOAP login (partner API) and the OAuth token endpoint, and the sessions they issue."""

from __future__ import annotations

import base64
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html import escape
from urllib.parse import parse_qs

from sandbox.config import API_VERSION, SandboxConfig
from sandbox.store import make_id

ORG_ID = make_id("00D", 1)
USER_ID = make_id("005", 1)
_FAULT_MESSAGE = "Invalid username, password, security token; or user locked out."


@dataclass
class SessionInfo:
    username: str
    expired: bool = False


class Sessions:
    """Issued access tokens; the admin can expire one or all of them."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionInfo] = {}
        self._lock = threading.Lock()

    def issue(self, username: str) -> str:
        token = f"{ORG_ID[:15]}!AQ{secrets.token_urlsafe(48)}"
        with self._lock:
            self._sessions[token] = SessionInfo(username)
        return token

    def valid(self, token: str) -> bool:
        info = self._sessions.get(token)
        return info is not None and not info.expired

    def expire(self, token: str | None = None) -> int:
        """Expire one session, or every session when `token` is None; returns how many."""
        with self._lock:
            targets = [self._sessions[token]] if token in self._sessions else []
            if token is None:
                targets = list(self._sessions.values())
            for info in targets:
                info.expired = True
            return len(targets)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def soap_login(
    config: SandboxConfig, sessions: Sessions, body: bytes, base_url: str
) -> tuple[int, str]:
    """(status, envelope) for a partner-API login; INVALID_LOGIN fault as Salesforce sends it."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - expat (3.11) refuses entity-expansion bombs
    except ET.ParseError:
        return 500, _fault("soapenv:Client", "INVALID_REQUEST", "Unable to parse the request")
    values = {_local(el.tag): (el.text or "") for el in root.iter()}
    username, password = values.get("username", ""), values.get("password", "")
    org = values.get("organizationId")
    # The password carries the security token appended; localhost counts as a trusted IP range.
    accepted = password in (config.password + config.security_token, config.password)
    if username != config.username or not accepted or (org is not None and org[:15] != ORG_ID[:15]):
        return 500, _fault("sf:INVALID_LOGIN", "INVALID_LOGIN", _FAULT_MESSAGE)
    session_id = sessions.issue(username)
    server = f"{base_url}/services/Soap/u/{API_VERSION}/{ORG_ID[:15]}"
    envelope = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns="urn:partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><loginResponse><result>"
        f"<metadataServerUrl>{base_url}/services/Soap/m/{API_VERSION}/{ORG_ID[:15]}</metadataServerUrl>"
        "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
        f"<serverUrl>{server}</serverUrl><sessionId>{session_id}</sessionId>"
        f"<userId>{USER_ID}</userId><userInfo><organizationId>{ORG_ID}</organizationId>"
        f"<organizationName>optout-sync sandbox</organizationName><userId>{USER_ID}</userId>"
        f"<userName>{escape(username)}</userName><sessionSecondsValid>7200</sessionSecondsValid>"
        "</userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"
    )
    return 200, envelope


def _fault(faultcode: str, code: str, message: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>{faultcode}</faultcode><faultstring>{code}: {message}</faultstring>"
        '<detail><sf:LoginFault xsi:type="sf:LoginFault">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode><sf:exceptionMessage>{message}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )


def oauth_token(
    config: SandboxConfig, sessions: Sessions, body: bytes, authorization: str | None, base_url: str
) -> tuple[int, dict[str, str]]:
    """(status, JSON) for /services/oauth2/token: password and client_credentials grants."""
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if authorization and authorization.lower().startswith("basic "):
        decoded = base64.b64decode(authorization[6:]).decode("utf-8", "replace")
        client_id, _, client_secret = decoded.partition(":")
    grant = form.get("grant_type")
    if grant not in ("password", "client_credentials"):
        return 400, {
            "error": "unsupported_grant_type",
            "error_description": "grant type not supported",
        }
    if client_id != config.consumer_key:
        return 400, {"error": "invalid_client_id", "error_description": "client identifier invalid"}
    if client_secret != config.consumer_secret:
        return 400, {"error": "invalid_client", "error_description": "invalid client credentials"}
    if grant == "password":
        password = form.get("password", "")
        accepted = password in (config.password + config.security_token, config.password)
        if form.get("username") != config.username or not accepted:
            return 400, {"error": "invalid_grant", "error_description": "authentication failure"}
    token = sessions.issue(config.username)
    issued = str(int(time.time() * 1000))
    return 200, {
        "access_token": token,
        "instance_url": base_url,
        "id": f"{base_url}/id/{ORG_ID}/{USER_ID}",
        "token_type": "Bearer",
        "issued_at": issued,
        "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
