"""The cloud gateway: ECS/SLB/ALB/NLB clients with fresh credentials, retries and rate limits.

Importing this package is cheap: the SDKs load on the first call.
"""
from .errors import CloudError, is_retryable
from .gateway import Cloud

__all__ = ["Cloud", "CloudError", "is_retryable"]
