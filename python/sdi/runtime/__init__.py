"""The shared service runtime: the Service contract, the HTTP server, the status page."""

from __future__ import annotations

from sdi.runtime.service import Endpoint, Service, ServiceConfig, run, run_services

__all__ = ["Endpoint", "Service", "ServiceConfig", "run", "run_services"]
