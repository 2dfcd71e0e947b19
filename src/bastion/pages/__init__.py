"""Hosted HTML pages: the pages the links in Bastion's mails open.

Server-rendered with Jinja2 and served on the public listener under the
strict page policy of ``bastion.http.middleware`` (scripts, styles and
requests to this origin only, no inline code, no framing). The OAuth
sign-in, consent, logout and device pages (``bastion.pages.oauth``) live
beside these.
"""

from bastion.pages.oauth import router as oauth_router
from bastion.pages.routes import router

router.include_router(oauth_router)

__all__ = ["router"]
