"""The cloud API client: ECS/SLB/ALB/NLB/CMS calls with fresh credentials, retries and
rate limits. (Cloud-changing actions go through `actions.ActionGateway`, the one place
that honours dry-run.)

Importing this package is cheap: the SDKs load on the first call.
"""
from .client import CloudClient
from .errors import CloudError, is_retryable

__all__ = ["CloudClient", "CloudError", "is_retryable"]
