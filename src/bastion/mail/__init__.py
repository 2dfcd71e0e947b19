"""Outbound mail, infrastructure shared by the domains that write to people.

``Mail`` is what a domain puts in its unit of work's outbox; ``Postman``
hands each mail to the configured ``Mailer`` (the dev outbox or SMTP) after
the commit, off the response path.
"""

from bastion.mail.mailers import Mail, Mailer, MailError, OutboxMailer, SmtpMailer, build_mailer
from bastion.mail.postman import Postman

__all__ = ["Mail", "MailError", "Mailer", "OutboxMailer", "Postman", "SmtpMailer", "build_mailer"]
