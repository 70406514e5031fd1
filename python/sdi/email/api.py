"""The email HTTP API (JSON), on sdi's own HTTP server.

Every route needs an API token (``Authorization: Bearer <token>``) whose
subject is a user's address, and sees only that user's mail (another user's
message id answers 404, as an unknown one does).

An attachment is extracted from the stored raw message (which stays as it
arrived) and served with its Content-Type, ``Content-Disposition: attachment``
with the filename (RFC 6266; RFC 5987's ``filename*`` for a name that is not
ASCII), ``X-Content-Type-Options: nosniff`` and a sandboxing
Content-Security-Policy, so that an HTML attachment never runs as a page of
the API's origin.

=========================================  =====================================================
``GET /v1/me``                              the user
``GET /v1/folders``                         folders with total and unread counts
``POST /v1/folders``                        ``{"name": ...}`` creates a folder
``GET /v1/folders/{id}/messages``           a page, newest first: ``?limit=50&before=<id>``;
                                            the answer's ``next_before`` pages on
``GET /v1/messages/{id}``                   metadata, text body, thread, attachments
                                            (``index``, ``filename``, ``content_type``,
                                            ``size`` in bytes, decoded)
``GET /v1/messages/{id}/raw``               the message as received (``message/rfc822``)
``GET /v1/messages/{id}/attachments/{n}``   the n-th attachment (from 0, as the message's
                                            ``attachments`` list them), decoded, as a download
``PUT /v1/messages/{id}``                   ``{"read": true|false, "folder": "<id>"}``
``DELETE /v1/messages/{id}``                deletes (204)
``POST /v1/messages``                       sends ``{"to": [...], "cc": [...], "bcc": [...],
                                            "subject": ..., "body": ..., "in_reply_to": <id>}``
``GET /v1/search?q=...``                    search (:mod:`sdi.email.query`); ``folder``,
                                            ``read``, ``date_from``, ``date_to``, ``limit``,
                                            ``before``
=========================================  =====================================================

>>> import asyncio
>>> from sdi.email.blobs import BlobStore
>>> from sdi.email.search import ScanIndex
>>> from sdi.email.store import MailStore
>>> from sdi.runtime.auth import Authenticator, TokenStore
>>> from sdi.runtime.http import Request
>>> import tempfile
>>> async def demo(path: str) -> list[object]:
...     store, tokens = MailStore(":memory:"), TokenStore(f"{path}/t.sqlite")
...     store.create_user("ann@sdi.local", "Ann")
...     token = tokens.issue("ann@sdi.local")
...     api = EmailApi(store, BlobStore(path), ScanIndex(), Authenticator("email", store=tokens),
...                    frozenset({"sdi.local"}))
...     ok = await api.handle(Request("GET", "/v1/folders", "HTTP/1.1",
...                                   {"authorization": f"Bearer {token}"}))
...     refused = await api.handle(Request("GET", "/v1/folders", "HTTP/1.1", {}))
...     tokens.close()
...     return [ok.status, refused.status]
>>> with tempfile.TemporaryDirectory() as path:
...     asyncio.run(demo(path))
[200, 401]
"""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import email.utils
import json
import re
import secrets
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from sdi.email.blobs import Blobs
from sdi.email.outgoing import domain_of, submit
from sdi.email.search import SearchIndex
from sdi.email.store import MailStore, check_address
from sdi.errors import InvalidArgument, SdiError, StorageError, Timeout
from sdi.runtime.auth import Authenticator
from sdi.runtime.http import MethodNotAllowedError, NotFoundError, Request, Response
from sdi.runtime.text import is_decimal

__all__ = ["BODY_BYTES_MAX", "EmailApi", "content_disposition"]

BODY_BYTES_MAX = 8 * 1024 * 1024
PAGE_DEFAULT = 50
PAGE_MAX = 200
SUBJECT_CHARS_MAX = 998
RECIPIENTS_MAX = 100
_T = TypeVar("_T")


_FILENAME_DROPPED = re.compile(r"[\x00-\x1f\x7f/\\]")
_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")


def content_disposition(filename: str) -> str:
    """``attachment`` with the filename: quoted ASCII, plus RFC 5987's ``filename*``
    (UTF-8, percent-encoded) when the name is not ASCII, as RFC 6266 says.

    >>> print(content_disposition('report "final".pdf'))
    attachment; filename="report \\"final\\".pdf"
    >>> print(content_disposition("Grüße.txt"))
    attachment; filename="Gr_e.txt"; filename*=UTF-8''Gr%C3%BC%C3%9Fe.txt
    """
    name = _FILENAME_DROPPED.sub("_", filename).strip() or "attachment"
    fallback = _NOT_ASCII.sub("_", name)
    quoted = fallback.replace("\\", "\\\\").replace('"', '\\"')
    header = f'attachment; filename="{quoted}"'
    if not name.isascii():
        header += "; filename*=UTF-8''" + quote(name, safe="!#$&+-.^_`|~")
    return header


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _int(query: dict[str, list[str]], name: str) -> int | None:
    text = _single(query, name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, not {text[:40]!r}") from None


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidArgument(f"{name} must be true or false")


def _limit(query: dict[str, list[str]]) -> int:
    limit = _int(query, "limit")
    if limit is None:
        return PAGE_DEFAULT
    if not 1 <= limit <= PAGE_MAX:
        raise InvalidArgument(f"limit must be from 1 to {PAGE_MAX}")
    return limit


def _body(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"the body must be a JSON object: {error}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("the body must be a JSON object")
    return value


def _no_line_breaks(value: str, name: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise InvalidArgument(f"{name} may not contain line breaks (header injection)")
    return value


def _addresses(value: object, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{name} must be a list of addresses")
    return [check_address(_no_line_breaks(v, name)) for v in value]


class EmailApi:
    """The routes; blocking store work runs on worker threads."""

    def __init__(
        self,
        store: MailStore,
        blobs: Blobs,
        index: SearchIndex,
        auth: Authenticator,
        domains: frozenset[str],
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.index = index
        self.auth = auth
        self.domains = domains
        self.on_sent = on_sent

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(fn, *args)

    async def handle(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except InvalidArgument as error:
            return Response.error(400, str(error))
        except NotFoundError as missing:
            return Response.error(404, str(missing))
        except MethodNotAllowedError as refused:
            response = Response.error(405, f"{request.method} is not allowed here")
            response.headers["allow"] = refused.allowed
            return response
        except (StorageError, Timeout) as error:  # the blob store is down or refuses
            return Response.error(503, str(error))
        except FileNotFoundError:
            return Response.error(500, "the message's stored bytes are missing")
        except SdiError as error:
            return Response.error(500, str(error))

    def _user(self, headers: dict[str, str]) -> str | None:
        subject = self.auth.subject(headers)
        if subject is None or self.store.user(subject) is None:
            return None
        return subject

    async def _route(self, request: Request) -> Response:
        user = await self._run(self._user, request.headers)
        if user is None:
            given = self.auth.subject(request.headers) is not None
            message = (
                "this token's subject is not a user of the mail service"
                if given
                else self.auth.refusal(request.headers) or "unauthorized"
            )
            response = Response.error(401, message)
            response.headers["www-authenticate"] = self.auth.challenge()
            return response
        path, method = request.path, request.method
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            raise NotFoundError(f"no route {path!r}")
        route = parts[1:]
        if route == ["me"]:
            return Response.json(await self._run(self.store.user, user))
        if route == ["folders"]:
            if method == "GET":
                return Response.json({"folders": await self._run(self.store.folders, user)})
            if method == "POST":
                name = _body(request).get("name")
                if not isinstance(name, str):
                    raise InvalidArgument("a folder needs a name")
                return Response.json(await self._run(self.store.create_folder, user, name), 201)
            raise MethodNotAllowedError("GET, POST")
        if len(route) == 3 and route[0] == "folders" and route[2] == "messages":
            if method != "GET":
                raise MethodNotAllowedError("GET")
            return Response.json(await self._run(self._folder_page, user, route[1], request.query))
        if route == ["messages"]:
            if method != "POST":
                raise MethodNotAllowedError("POST")
            return Response.json(await self._run(self._send, user, _body(request)), 202)
        if len(route) in (2, 3, 4) and route[0] == "messages":
            if not is_decimal(route[1]):
                raise NotFoundError(f"there is no message {route[1][:40]!r}")
            message_id = int(route[1])
            if len(route) == 4:
                if route[2] != "attachments":
                    raise NotFoundError(f"no route {path!r}")
                if method != "GET":
                    raise MethodNotAllowedError("GET")
                if not is_decimal(route[3]):
                    raise NotFoundError(f"there is no attachment {route[3][:40]!r}")
                return await self._run(self._attachment, user, message_id, int(route[3]))
            if len(route) == 3:
                if route[2] != "raw":
                    raise NotFoundError(f"no route {path!r}")
                if method != "GET":
                    raise MethodNotAllowedError("GET")
                raw = await self._run(self._raw, user, message_id)
                return Response(200, raw, {"content-type": "message/rfc822"})
            if method == "GET":
                return Response.json(await self._run(self._message, user, message_id))
            if method == "PUT":
                return Response.json(
                    await self._run(self._update, user, message_id, _body(request))
                )
            if method == "DELETE":
                await self._run(self._delete, user, message_id)
                return Response(204)
            raise MethodNotAllowedError("GET, PUT, DELETE")
        if route == ["search"]:
            if method != "GET":
                raise MethodNotAllowedError("GET")
            return Response.json(await self._run(self._search, user, request.query))
        raise NotFoundError(f"no route {path!r}")

    # -- the routes' blocking parts

    def _folder_page(self, user: str, folder: str, query: dict[str, list[str]]) -> dict[str, Any]:
        if not self.store.has_folder(user, folder):
            raise NotFoundError(f"there is no folder {folder[:60]!r}")
        limit = _limit(query)
        messages = self.store.list_messages(user, folder, limit, _int(query, "before"))
        next_before = messages[-1]["id"] if len(messages) == limit else None
        return {"messages": messages, "next_before": next_before}

    def _existing(self, user: str, message_id: int) -> dict[str, Any]:
        message = self.store.message(user, message_id)
        if message is None:
            raise NotFoundError(f"there is no message {message_id}")
        return message

    def _raw(self, user: str, message_id: int) -> bytes:
        return self.blobs.get(self._existing(user, message_id)["blob"])

    def _message(self, user: str, message_id: int) -> dict[str, Any]:
        from sdi.email.mime import parse_message

        message = self._existing(user, message_id)
        parsed = parse_message(self.blobs.get(message["blob"]))
        message["body"] = parsed.body
        for index, attachment in enumerate(message["attachments"]):
            attachment["index"] = index
        message["thread"] = self.store.thread(user, message["thread_id"])
        return message

    def _attachment(self, user: str, message_id: int, index: int) -> Response:
        from sdi.email.mime import attachment

        raw = self.blobs.get(self._existing(user, message_id)["blob"])
        found = attachment(raw, index)
        if found is None:
            raise NotFoundError(f"message {message_id} has no attachment {index}")
        described, content_type, data = found
        headers = {
            "content-type": content_type,
            "content-disposition": content_disposition(described.filename or f"attachment-{index}"),
            # never rendered as a page of this origin (an HTML attachment is the sender's)
            "x-content-type-options": "nosniff",
            "content-security-policy": "default-src 'none'; sandbox",
        }
        return Response(200, data, headers)

    def _update(self, user: str, message_id: int, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"read", "folder"}
        if unknown:
            raise InvalidArgument(f"unknown field(s) {sorted(unknown)}; give read and/or folder")
        read = None if body.get("read") is None else _bool(body["read"], "read")
        folder = body.get("folder")
        if folder is not None and not isinstance(folder, str):
            raise InvalidArgument("folder must be a folder id")
        message = self.store.update_message(user, message_id, read=read, folder=folder)
        if message is None:
            raise NotFoundError(f"there is no message {message_id}")
        self.index.set_attrs(user, message_id, folder=message["folder"], read=message["read"])
        return message

    def _delete(self, user: str, message_id: int) -> None:
        if not self.store.delete_message(user, message_id):
            raise NotFoundError(f"there is no message {message_id}")
        self.index.delete(user, message_id)

    def _search(self, user: str, query: dict[str, list[str]]) -> dict[str, Any]:
        text = _single(query, "q")
        if not text:
            raise InvalidArgument("search needs q=<query>")
        read_text = _single(query, "read")
        limit = _limit(query)
        ids = self.index.search(
            user,
            text,
            folder=_single(query, "folder") or None,
            date_from=_int(query, "date_from"),
            date_to=_int(query, "date_to"),
            read=None if read_text is None else _bool(read_text, "read"),
            limit=limit,
            before=_int(query, "before"),
        )
        messages = self.store.messages_of(user, ids)
        return {"messages": messages, "next_before": ids[-1] if len(ids) == limit else None}

    def _send(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"to", "cc", "bcc", "subject", "body", "in_reply_to"}
        if unknown:
            raise InvalidArgument(f"unknown field(s) {sorted(unknown)}")
        to = _addresses(body.get("to"), "to")
        cc = _addresses(body.get("cc"), "cc")
        bcc = _addresses(body.get("bcc"), "bcc")
        rcpts = list(dict.fromkeys(to + cc + bcc))
        if not rcpts:
            raise InvalidArgument("a message needs at least one recipient in to, cc or bcc")
        if len(rcpts) > RECIPIENTS_MAX:
            raise InvalidArgument(f"a message has at most {RECIPIENTS_MAX} recipients")
        subject = body.get("subject", "")
        text = body.get("body", "")
        if not isinstance(subject, str) or not isinstance(text, str):
            raise InvalidArgument("subject and body must be strings")
        _no_line_breaks(subject, "subject")
        if len(subject) > SUBJECT_CHARS_MAX:
            raise InvalidArgument(f"a subject is at most {SUBJECT_CHARS_MAX} characters")
        for rcpt in rcpts:
            if domain_of(rcpt) in self.domains and self.store.user(rcpt) is None:
                raise InvalidArgument(f"there is no user {rcpt}")
        account = self.store.user(user) or {"display_name": ""}
        message = email.message.EmailMessage(policy=email.policy.SMTPUTF8)
        message["From"] = email.utils.formataddr((account["display_name"], user))
        if to:
            message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        message["Subject"] = subject
        message["Date"] = email.utils.formatdate(localtime=False)
        message["Message-ID"] = f"<{secrets.token_hex(16)}@{domain_of(user)}>"
        reply_to = body.get("in_reply_to")
        if reply_to is not None:
            if not isinstance(reply_to, int):
                raise InvalidArgument("in_reply_to must be a message id")
            original = self._existing(user, reply_to)
            if original["message_id"]:
                message["In-Reply-To"] = original["message_id"]
                message["References"] = original["message_id"]
        message.set_content(text)
        data = message.as_bytes()
        stored, outgoing = submit(self.store, self.blobs, user, rcpts, data, self.domains)
        self.index.add(user, stored.id, stored.search, stored.date, stored.folder, stored.read)
        if self.on_sent is not None:
            self.on_sent()
        return {"id": stored.id, "message_id": message["Message-ID"], "outgoing": outgoing}
