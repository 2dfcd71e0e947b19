"""HTTP plumbing below the domains: problem+json errors (``problems``,
``handlers``), the request spine (``middleware``: request id, security
headers, body limits), trusted proxies and rate limiting.

It imports no domain: the domains' routes build on it.
"""
