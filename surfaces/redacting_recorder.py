"""Show a request with every secret masked: what ``fulfill plan`` prints instead of sending it.

Masked, wherever they would show (URL, headers, form or JSON body, text):

* the ``Authorization`` header's credentials (the scheme stays: ``Bearer ***``) and any header whose
  name looks secret;
* form fields and JSON keys whose name looks secret (``client_secret``, ``refresh_token``,
  ``assertion``, … — :data:`fulfill.redaction.SECRET_KEY`);
* every occurrence of a known secret value: each ``SecretStr`` field of the credentials block (and
  each long line of a multi-line one, such as a PEM key).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import httpx
from pydantic import BaseModel, SecretStr

from fulfill.redaction import MASK, SECRET_KEY, redact, scrub_text

_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
# A line of a multi-line secret this long is masked on its own (a PEM line shown alone).
_SECRET_LINE_MIN = 16


class RedactingRecorder:
    """Describes requests with the given secret values (and secret-looking names) masked.

    Args:
        secrets: Secret values to mask wherever they appear.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {secret for secret in secrets if secret}
        self._secrets = sorted(values, key=len, reverse=True)  # a longer secret before its parts

    @classmethod
    def for_block(cls, credentials: BaseModel) -> RedactingRecorder:
        """A recorder that masks every ``SecretStr`` value of a credentials block."""
        values: set[str] = set()
        for name in type(credentials).model_fields:
            value = getattr(credentials, name, None)
            if isinstance(value, SecretStr) and value.get_secret_value():
                secret = value.get_secret_value()
                values.add(secret)
                values.update(line for line in secret.splitlines() if len(line) >= _SECRET_LINE_MIN)
        return cls(values)

    def scrub(self, text: str) -> str:
        """``text`` with every known secret value masked."""
        return scrub_text(text, self._secrets)

    def url(self, request: httpx.Request) -> str:
        """The request's URL, query included, masked."""
        return self.scrub(str(request.url))

    def headers(self, request: httpx.Request) -> dict[str, str]:
        """The request's headers, masked (``Authorization: Bearer ***``)."""
        shown: dict[str, str] = {}
        for name, value in request.headers.items():
            if name.lower() in _AUTH_HEADERS:
                scheme = value.split(" ", 1)[0] if " " in value else ""
                shown[name] = f"{scheme} {MASK}".strip()
            elif SECRET_KEY.search(name):
                shown[name] = MASK
            else:
                shown[name] = self.scrub(value)
        return shown

    def body(self, request: httpx.Request) -> Any:
        """The request's body: a form as a dict, JSON decoded, else text; ``None`` when empty; masked."""
        content = request.read()
        if not content:
            return None
        text = content.decode("utf-8", "replace")
        content_type = request.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in content_type:
            return {
                name: MASK if SECRET_KEY.search(name) else self.scrub(value)
                for name, value in parse_qsl(text, keep_blank_values=True)
            }
        if "json" in content_type:
            try:
                return self.value(json.loads(text))
            except ValueError:
                pass
        return self.scrub(text)

    def value(self, value: Any) -> Any:
        """A JSON-like value with secret-looking keys and known secret values masked."""
        return self._deep_scrub(redact(value))

    def _deep_scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(str(k)): self._deep_scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._deep_scrub(v) for v in value]
        return value
