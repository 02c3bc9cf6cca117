"""The HTTP side: one ThreadingHTTPServer on one port for MNS (`/queues/...`), the RPC APIs
(`?Action=...`) and the unsigned inspection endpoints (`/_emulator/...`).

HTTP/1.1 keep-alive because both SDKs hold one connection open; every response carries an exact
Content-Length (204 and errors included) and is written with a single send, so Nagle plus the
client's delayed ACK cannot add 40 ms per round trip.
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote

from . import mns
from .mns_queue import MnsErrorResponse, message_not_exist, queue_not_exist
from .mns_xml import xml_error
from .auth import AuthError, check_mns, check_rpc
from .ram import MNS_DENIED, RPC_DENIED, mns_resource, rpc_resource
from .rpc import PRODUCTS
from .rpc_params import RpcError
from .schema_checks import StateError
from .world import World


def _request_id() -> str:
    return str(uuid.uuid4()).upper()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ecs-worker-emulator"
    sys_version = ""
    server: "EmulatorServer"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: tests and benchmarks
        pass

    # ------------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, ctype: str, headers: tuple = ()) -> None:
        reason = self.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}", f"Server: {self.server_version}",
                 f"Date: {self.date_time_string()}", f"Content-Length: {len(body)}"]
        if body:
            lines.append(f"Content-Type: {ctype}")
        lines.extend(f"{k}: {v}" for k, v in headers)
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _json(self, status: int, obj, headers: tuple = ()) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json;charset=utf-8", headers)

    def _drop(self) -> None:
        """Close the socket without a response (fault `drop_rate`)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _faults(self, api: str, action: str = ""):
        """Apply drop/latency; return an error tuple to answer with, None to go on, or False if dropped."""
        d = self.server.world.faults.decide(api, action)
        if d.drop:
            self._drop()
            return False
        if d.latency:
            time.sleep(d.latency)
        return d.error

    def _handle(self) -> None:
        try:
            self._dispatch()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # an emulator bug: answer 500 rather than leave the SDK with a dead socket
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._json(500, {"Code": "InternalError", "Message": "emulator bug; see its stderr",
                             "RequestId": _request_id()})

    def _dispatch(self) -> None:
        body = self._body()
        path, _, query = self.path.partition("?")
        if path.startswith("/_emulator/"):
            return self._emulator(path, body)
        if path == "/queues" or path.startswith("/queues/"):
            return self._mns(path, query, body)
        params = dict(parse_qsl(query, keep_blank_values=True))
        if body and "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        if "Action" in params:
            return self._rpc(params)
        self._json(404, {"Code": "InvalidAction.NotFound", "Message": "Specified api is not found, "
                         "please check your url and method.", "RequestId": _request_id()})

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    # ------------------------------------------------------------------ MNS

    def _mns(self, path: str, raw_query: str, body: bytes) -> None:
        world = self.server.world
        request_id = _request_id()[:24]
        query = mns.parse_query(raw_query)
        action, qname = mns.route(self.command, path, query, body)
        world.count(f"mns:{action}")
        extra: tuple = ()
        try:
            error = self._faults("mns", action)
            if error is False:
                return
            if error:
                raise MnsErrorResponse(*error)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                check_mns(world.access_keys, self.command, self.path, headers)
            except AuthError as e:
                raise MnsErrorResponse(e.status, e.code, e.message) from None
            if not world.ram_allows("mns", action, mns_resource(world.region, world.account_id, action, qname)):
                raise MnsErrorResponse(*MNS_DENIED)
            md5 = headers.get("content-md5")  # the SDK sends base64 of the *hex* MD5 digest
            if md5 and md5 != base64.b64encode(hashlib.md5(body).hexdigest().encode()).decode():
                raise MnsErrorResponse(400, "InvalidDegist", "The Content-MD5 you specified is invalid.")
            if action == "CreateQueue":
                status, out, extra = world.create_queue(qname or "", body, f"http://{self.headers.get('Host', '')}")
            else:
                with world.lock:
                    q = world.queues.get(qname) if qname else None
                    if q is None and action != "Unsupported":
                        raise queue_not_exist(qname or "")
                    long_poll = action in mns.RECEIVES and mns.wait_of(q, query) > 0
                    if long_poll:
                        limit = world.faults.long_poll_limit()
                        if limit is not None and world.long_polls >= limit:
                            raise message_not_exist()  # past the account's long-poll limit: at once
                        world.long_polls += 1
                    try:
                        status, out = mns.execute(q, action, query, body)  # type: ignore[arg-type]
                    finally:
                        if long_poll:
                            world.long_polls -= 1
        except MnsErrorResponse as e:
            status, out = e.status, xml_error(e, request_id, world.mns_host)
        self._send(status, out, "text/xml;charset=utf-8",
                   (("x-mns-request-id", request_id), ("x-mns-version", "2015-06-06")) + extra)

    # ------------------------------------------------------------------ RPC

    def _rpc(self, params: dict) -> None:
        world = self.server.world
        request_id = _request_id()
        action, version = params.get("Action", ""), params.get("Version", "")
        product = PRODUCTS.get(version)
        world.count(f"{product or 'rpc'}:{action}")
        host = f"{product or 'rpc'}.aliyuncs.com"
        try:
            if product:
                error = self._faults(product, action)
                if error is False:
                    return
                if error:
                    raise RpcError(*error)
            if not version:
                raise RpcError(400, "MissingParameter", "The input parameter \"Version\" that is mandatory "
                                                        "for processing this request is not supplied.")
            if product is None:
                raise RpcError(400, "InvalidVersion", "Specified parameter Version is not valid.")
            try:
                check_rpc(world.access_keys, self.command, params)
            except AuthError as e:
                raise RpcError(e.status, e.code, e.message) from None
            with world.lock:
                resource = rpc_resource(world.region, world.account_id, product, params, world.cloud.lb_of_group)
                if not world.ram_allows(product, action, resource):
                    raise RpcError(*RPC_DENIED)
                result = world.cloud.call(product, action, params)
            status, out = 200, {"RequestId": request_id, **result}
        except RpcError as e:
            status, out = e.status, {"RequestId": request_id, "HostId": host, "Code": e.code, "Message": e.message,
                                     "Recommend": f"https://api.aliyun.com/troubleshoot?q={e.code}"}
        self._json(status, out, (("x-acs-request-id", request_id),))

    # ------------------------------------------------------------------ inspection

    def _emulator(self, path: str, body: bytes) -> None:
        world = self.server.world
        try:
            if path == "/_emulator/state" and self.command == "GET":
                return self._json(200, world.snapshot())
            if path == "/_emulator/faults" and self.command == "GET":
                return self._json(200, world.faults.snapshot())
            if path == "/_emulator/faults" and self.command == "POST":
                return self._json(200, world.set_faults(json.loads(body or b"{}")))
            if path == "/_emulator/events" and self.command == "POST":
                return self._json(200, world.inject_event(json.loads(body or b"{}")))
            if path == "/_emulator/reset-calls" and self.command == "POST":
                world.reset_calls()
                return self._json(200, {})
            parts = path.strip("/").split("/")  # _emulator/queues/<name>/messages
            if len(parts) == 4 and parts[1] == "queues" and parts[3] == "messages" and self.command == "POST":
                message_id = world.send(unquote(parts[2]), body.decode("utf-8"))
                return self._json(201, {"MessageId": message_id})
            self._json(404, {"error": f"no such emulator endpoint: {self.command} {path}"})
        except (ValueError, StateError, KeyError, MnsErrorResponse) as e:
            self._json(400, {"error": str(e)})


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], world: World):
        self.world = world
        self._conns: set = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, Handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def close_connections(self) -> None:
        """Wake handler threads blocked reading idle keep-alive connections so they end."""
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
