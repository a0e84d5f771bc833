"""Logging in as simple-salesforce does against a real org: SOAP, OAuth, direct session."""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce, SalesforceAuthenticationFailed

from sandbox import Sandbox

pytestmark = pytest.mark.sandbox


def test_soap_login_points_the_client_at_the_instance_from_server_url(sandbox: Sandbox) -> None:
    sf = sandbox.client()
    assert sf.sf_instance == f"127.0.0.1:{sandbox.port}"
    assert sf.base_url == f"{sandbox.url}/services/data/v59.0/"
    assert sandbox.org.sessions.valid(sf.session_id)


def test_bad_password_is_a_soap_fault_invalid_login(sandbox: Sandbox) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as raised:
        sandbox.client(password="wrong")
    assert raised.value.code == "INVALID_LOGIN"
    assert "Invalid username, password, security token" in raised.value.auth_message


def test_soap_fault_has_salesforce_shape(sandbox: Sandbox) -> None:
    body = (
        '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:urn="urn:partner.soap.sforce.com"><soapenv:Body><urn:login><urn:username>nobody</urn:username>'
        "<urn:password>x</urn:password></urn:login></soapenv:Body></soapenv:Envelope>"
    )
    response = sandbox.session().post(
        f"{sandbox.url}/services/Soap/u/59.0", data=body, headers={"SOAPAction": "login"}
    )
    assert response.status_code == 500
    assert "<faultcode>sf:INVALID_LOGIN</faultcode>" in response.text
    assert "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>" in response.text


def test_oauth_password_grant(sandbox: Sandbox) -> None:
    config = sandbox.config
    sf = Salesforce(
        username=config.username,
        password=config.password + config.security_token,
        consumer_key=config.consumer_key,
        consumer_secret=config.consumer_secret,
        domain=sandbox.login_domain,
        session=sandbox.session(),
    )
    assert sf.sf_instance == f"127.0.0.1:{sandbox.port}"
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] > 0


def test_oauth_bad_secret_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as raised:
        Salesforce(
            username=sandbox.config.username,
            password=sandbox.config.password,
            consumer_key=sandbox.config.consumer_key,
            consumer_secret="wrong",
            domain=sandbox.login_domain,
            session=sandbox.session(),
        )
    assert raised.value.code == "invalid_client"


def test_oauth_client_credentials_grant(sandbox: Sandbox) -> None:
    sf = Salesforce(
        consumer_key=sandbox.config.consumer_key,
        consumer_secret=sandbox.config.consumer_secret,
        domain=sandbox.login_domain,
        session=sandbox.session(),
    )
    assert sf.limits()["DailyApiRequests"]["Max"] == sandbox.config.daily_api_limit


def test_direct_instance_url_and_session_id(sandbox: Sandbox) -> None:
    token = sandbox.client().session_id
    sf = Salesforce(instance_url=sandbox.url, session_id=token, session=sandbox.session())
    assert sf.sf_instance == f"127.0.0.1:{sandbox.port}"
    assert sf.query("SELECT Id FROM Lead LIMIT 1")["totalSize"] == 1


def test_bound_to_loopback_by_default(sandbox: Sandbox) -> None:
    assert sandbox.config.host == "127.0.0.1"
    assert sandbox.socket.getsockname()[0] == "127.0.0.1"


def test_tls_is_verified_against_the_sandbox_ca(sandbox: Sandbox) -> None:
    import requests

    untrusting = requests.Session()
    untrusting.trust_env = False  # the system bundle only
    with pytest.raises(requests.exceptions.SSLError):
        untrusting.get(f"{sandbox.url}/services/data/")
