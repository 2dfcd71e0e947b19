"""Hosted HTML pages: the pages the links in Bastion's mails open.

Server-rendered with Jinja2 and served on the public listener under the
strict page policy of ``bastion.http.middleware`` (scripts, styles and
requests to this origin only, no inline code, no framing). The OAuth
sign-in and consent pages will live beside these.
"""

from bastion.pages.routes import router

__all__ = ["router"]
